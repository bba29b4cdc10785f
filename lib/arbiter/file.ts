// File arbiter: {epoch, primary, stale, owner} in <state_dir>/state.json, guarded by a
// host-wide lock so that two fronts never run on one state_dir.
//
//   open()           mkdir -p ─▶ lock ─▶ drop leftover temp files ─▶ read state.json
//   compareAndSet()  re-read ─▶ epoch == expected? ─▶ write tmp, fsync, rename, fsync dir
//                    (util/atomic-write: the state is on disk before the front acts on it)
//   close()          remove lock.pid ─▶ release lock
//
// The lock is a Linux abstract-namespace unix socket: bind is atomic, and the kernel frees the
// name when the holder dies, even by SIGKILL (flock(2) semantics without flock). lock.pid is
// informational only, for the error message. Elsewhere an O_EXCL pid file stands in.

import { createHash, randomBytes } from 'node:crypto'
import { realpathSync } from 'node:fs'
import fs from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { FtproxyError } from '../errors.js'
import { writeFileAtomic } from '../util/atomic-write.js'
import { listen } from '../util/listen.js'
import { initialState } from './arbiter.js'
import type { Arbiter, ArbiterState } from './arbiter.js'

export interface FileArbiterOptions {
  /** The state directory; created (mode 0o750) if missing. */
  dir: string
  /** This front's id, written as `owner`. @default `hostname:pid:random` */
  owner?: string
  /** How the directory is locked. @default 'socket' on Linux, 'pidfile' elsewhere */
  lock?: 'socket' | 'pidfile'
}

const STATE_FILE = 'state.json'
const PID_FILE = 'lock.pid'
const TEMP_RE = /^state\.json\..+\.tmp$/

/**
 * The abstract socket name that locks `dir` (which must exist). Same dir, same name, any
 * process.
 */
export function lockName (dir: string): string {
  const hash = createHash('sha256').update(realpathSync(dir)).digest('hex')
  return '\0ftproxy-lock-' + hash.slice(0, 32)
}

function defaultOwner (): string {
  return `${os.hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`
}

interface Lock {
  release (): Promise<void>
}

export class FileArbiter implements Arbiter {
  readonly dir: string
  readonly file: string
  readonly owner: string
  #lockKind: 'socket' | 'pidfile'
  #lock: Lock | null = null
  #opening: Promise<ArbiterState> | null = null
  // CAS is read-then-write across awaits: serialize it, or two calls in this process could
  // both win.
  #queue: Promise<unknown> = Promise.resolve()

  constructor (opts: FileArbiterOptions) {
    this.dir = path.resolve(opts.dir)
    this.file = path.join(this.dir, STATE_FILE)
    this.owner = opts.owner ?? defaultOwner()
    this.#lockKind = opts.lock ?? (process.platform === 'linux' ? 'socket' : 'pidfile')
  }

  open (): Promise<ArbiterState> {
    // Concurrent open() calls on one instance share the attempt instead of locking each other out.
    this.#opening ??= this.#open().finally(() => { this.#opening = null })
    return this.#opening
  }

  async #open (): Promise<ArbiterState> {
    if (this.#lock) return await readState(this.file)
    await fs.mkdir(this.dir, { recursive: true, mode: 0o750 })
    const lock = this.#lockKind === 'socket'
      ? await lockSocket(this.dir)
      : await lockPidFile(this.dir)
    try {
      await removeTemps(this.dir)
      const state = await readState(this.file)
      this.#lock = lock
      return state
    } catch (err) {
      // A front that cannot read its state does not run: give the lock back.
      await lock.release()
      throw err
    }
  }

  compareAndSet (expectEpoch: number, next: ArbiterState): Promise<boolean> {
    const run = this.#queue.then(() => this.#compareAndSet(expectEpoch, next))
    this.#queue = run.catch(() => {})
    return run
  }

  async #compareAndSet (expectEpoch: number, next: ArbiterState): Promise<boolean> {
    if (!this.#lock) {
      const message = `${this.file}: arbiter is not open`
      throw new FtproxyError('ERR_FTPROXY_STATE', message, { file: this.file })
    }
    // Two writers that both keep epoch N cannot be told apart, so every write moves the epoch on.
    if (!(next.epoch > expectEpoch)) {
      throw new FtproxyError('ERR_FTPROXY_STATE',
        `${this.file}: next epoch ${next.epoch} must be greater than ${expectEpoch}`,
        { file: this.file, expectEpoch, epoch: next.epoch })
    }
    // Never write what open() would refuse to read back.
    const record = toState({ ...next, owner: this.owner }, this.file, 'next state')
    const current = await readState(this.file)
    if (current.epoch !== expectEpoch) return false
    const text = JSON.stringify({ ...record, updated_at: new Date().toISOString() }, null, 2) + '\n'
    try {
      await writeFileAtomic(this.file, text)
    } catch (err) {
      const message = `${this.file}: cannot write: ${(err as Error).message}`
      const cause = (err as NodeJS.ErrnoException).code
      throw new FtproxyError('ERR_FTPROXY_STATE', message, { file: this.file, cause })
    }
    return true
  }

  async close (): Promise<void> {
    await this.#opening?.catch(() => {})
    await this.#queue
    const lock = this.#lock
    this.#lock = null
    await lock?.release()
  }
}

// --- state file ---

async function readState (file: string): Promise<ArbiterState> {
  let text: string
  try {
    text = await fs.readFile(file, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return initialState()
    const message = `${file}: cannot read: ${(err as Error).message}`
    throw new FtproxyError('ERR_FTPROXY_STATE', message, { file, cause: code })
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    // Never reset a broken file: it may hold the only record of who is primary.
    const message = `${file}: not valid JSON: ${(err as Error).message}`
    throw new FtproxyError('ERR_FTPROXY_STATE', message, { file })
  }
  return toState(value, file, 'state file')
}

function toState (value: unknown, file: string, what: string): ArbiterState {
  const bad = (reason: string): never => {
    const message = `${file}: malformed ${what}: ${reason}`
    throw new FtproxyError('ERR_FTPROXY_STATE', message, { file, reason })
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return bad('not an object')
  }
  const v = value as Record<string, unknown>
  if (typeof v.epoch !== 'number' || !Number.isSafeInteger(v.epoch) || v.epoch < 0) {
    bad('epoch must be an integer >= 0')
  }
  if (v.primary !== null && typeof v.primary !== 'string') bad('primary must be a string or null')
  if (!Array.isArray(v.stale) || !v.stale.every((s) => typeof s === 'string')) {
    bad('stale must be a list of strings')
  }
  if (typeof v.owner !== 'string') bad('owner must be a string')
  // Absent in state files written before incarnations were recorded: none known.
  const inc = v.incarnations ?? {}
  if (typeof inc !== 'object' || inc === null || Array.isArray(inc) ||
    !Object.values(inc).every((s) => typeof s === 'string')) {
    bad('incarnations must map replica names to strings')
  }
  return {
    incarnations: { ...(inc as Record<string, string>) },
    epoch: v.epoch as number,
    primary: v.primary as string | null,
    stale: [...(v.stale as string[])],
    owner: v.owner as string
  }
}

// A front killed mid-write leaves its temp file; we hold the lock, so no one else is writing.
async function removeTemps (dir: string): Promise<void> {
  for (const name of await fs.readdir(dir)) {
    if (TEMP_RE.test(name)) await fs.rm(path.join(dir, name), { force: true })
  }
}

// --- locks ---

async function readPid (dir: string): Promise<number | null> {
  try {
    const pid = Number.parseInt(await fs.readFile(path.join(dir, PID_FILE), 'utf8'), 10)
    return Number.isSafeInteger(pid) && pid > 0 ? pid : null
  } catch {
    return null
  }
}

async function lockedError (dir: string): Promise<FtproxyError> {
  const pid = await readPid(dir)
  return new FtproxyError('ERR_FTPROXY_LOCKED',
    `${dir} is in use by another ftproxy front (pid ${pid ?? 'unknown'})`, { dir, pid })
}

async function lockSocket (dir: string): Promise<Lock> {
  // Any local process may connect to an abstract name: drop such sockets at once.
  const server = net.createServer((socket) => socket.destroy())
  try {
    await listen(server, { path: lockName(dir) })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') throw await lockedError(dir)
    throw err
  }
  // The lock must not keep the process alive, and an accept error must not crash the front:
  // the name stays bound either way.
  server.unref()
  server.on('error', () => {})
  const release = async (): Promise<void> => {
    // Remove lock.pid while still holding the lock, so we never delete a successor's file.
    await fs.rm(path.join(dir, PID_FILE), { force: true })
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
  try {
    await fs.writeFile(path.join(dir, PID_FILE), `${process.pid}\n`, { mode: 0o640 })
  } catch (err) {
    await release()
    throw err
  }
  return { release }
}

// Fallback without abstract sockets: O_EXCL pid file, taken over when its pid is dead.
// Two fronts racing over a dead holder's file can both take over; it is only a fallback.
async function lockPidFile (dir: string): Promise<Lock> {
  const file = path.join(dir, PID_FILE)
  for (let attempt = 0; ; attempt++) {
    try {
      await fs.writeFile(file, `${process.pid}\n`, { flag: 'wx', mode: 0o640 })
      return { release: () => fs.rm(file, { force: true }) }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const pid = await readPid(dir)
      if (attempt > 0 || (pid !== null && isAlive(pid))) throw await lockedError(dir)
      await fs.rm(file, { force: true })
    }
  }
}

function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' // alive, owned by someone else
  }
}
