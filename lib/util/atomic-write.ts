// The one atomic file write: a temp file in the same directory (rename is atomic only within
// one filesystem), fsync it, rename it over the target, fsync the directory so the rename
// itself survives a power cut. Synchronous on purpose: callers (the agent's epoch, the
// arbiter's state) must have it on disk before they act on it.

import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'

/**
 * Replaces `file` with `data`, all or nothing. The temp file is `<file>.<pid>.<random>.tmp`
 * (removed again when the write fails; a crash may leave one behind).
 */
export function writeFileAtomicSync (file: string, data: string, mode = 0o640): void {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
  try {
    const fd = fs.openSync(tmp, 'wx', mode)
    try {
      fs.writeFileSync(fd, data)
      fs.fsyncSync(fd)
    } finally {
      fs.closeSync(fd)
    }
    fs.renameSync(tmp, file)
  } catch (err) {
    fs.rmSync(tmp, { force: true })
    throw err
  }
  syncDir(path.dirname(file))
}

function syncDir (dir: string): void {
  if (process.platform === 'win32') return // directories cannot be opened for fsync there
  const fd = fs.openSync(dir, 'r')
  try {
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}
