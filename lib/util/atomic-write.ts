// The one atomic file write: a temp file in the same directory (rename is atomic only within
// one filesystem), fsync it, rename it over the target, fsync the directory so the rename
// itself survives a power cut. Two forms of the same steps: the front's arbiter writes
// without blocking its event loop (clients keep being served during the fsyncs); the agent
// writes synchronously, because it must have its epoch on disk before it acts on a frame.

import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'

// `<file>.<pid>.<random>.tmp`, opened exclusively: never another writer's temp file.
function tempName (file: string): string {
  return `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
}

// Directories cannot be opened for fsync on Windows.
const DIR_SYNC = process.platform !== 'win32'

/** Replaces `file` with `data`, all or nothing (the temp file is removed if a step fails). */
export async function writeFileAtomic (file: string, data: string, mode = 0o640): Promise<void> {
  const tmp = tempName(file)
  try {
    const fh = await fsp.open(tmp, 'wx', mode)
    try {
      await fh.writeFile(data)
      await fh.sync()
    } finally {
      await fh.close()
    }
    await fsp.rename(tmp, file)
  } catch (err) {
    await fsp.rm(tmp, { force: true })
    throw err
  }
  if (!DIR_SYNC) return
  const dir = await fsp.open(path.dirname(file), 'r')
  try {
    await dir.sync()
  } finally {
    await dir.close()
  }
}

/** The same, synchronously. */
export function writeFileAtomicSync (file: string, data: string, mode = 0o640): void {
  const tmp = tempName(file)
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
  if (!DIR_SYNC) return
  const dir = fs.openSync(path.dirname(file), 'r')
  try {
    fs.fsyncSync(dir)
  } finally {
    fs.closeSync(dir)
  }
}
