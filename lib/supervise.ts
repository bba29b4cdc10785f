// Supervision of a replica's `command`: spawn it, log its output line by line, restart it with
// backoff when it exits, stop it with SIGTERM then SIGKILL. With a `record` file, the server
// outlives a crash of this process and the next supervisor adopts it instead of starting another.
//
//   start() ──record names our live process?──yes──▶ adopt ──(poll /proc)──▶ gone ──▶ 'exit'
//      │ no                                                                            │
//      └──spawn──▶ child ──exit──▶ 'exit' ──(restart on, not stopping)──▶ backoff ──▶ spawn
//                    │ stdout/stderr ──lines (≤ 4KiB)──▶ replica_process_output
//                    └──'spawn'──▶ record {pid, start_time, boot_id, command, address}
//   stop()  ──SIGTERM──▶ (stopTimeoutMs) ──SIGKILL──▶ gone ──▶ record deleted ──▶ resolves

import { spawn, type ChildProcess } from 'node:child_process'
import { EventEmitter } from 'node:events'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Readable } from 'node:stream'
import type { Logger } from './logger.js'
import { writeFileAtomic } from './util/atomic-write.js'
import { bootId, isAlive, procStat, startTime } from './util/proc.js'

/** Longest logged output line in bytes; the rest of a longer line is dropped. */
export const MAX_OUTPUT_LINE = 4096

/** How often an adopted process (not our child: no 'exit' event) is checked in /proc. */
const ADOPTED_POLL_MS = 200

// lib/supervise.ts (tests, via a loader) and dist/supervise.js both sit one level below the
// package root, so ../bin/ftproxy is this package's launcher in either case.
export const FTPROXY_BIN = fileURLToPath(new URL('../bin/ftproxy', import.meta.url))

export interface RestartOptions {
  /** First delay before a respawn; doubles on each consecutive restart. @default 500 */
  initialDelayMs?: number
  /** @default 30000 */
  maxDelayMs?: number
  /** A child that stayed up this long resets the delay to initialDelayMs. @default 10000 */
  resetAfterMs?: number
}

export interface SupervisorOptions {
  /** The replica name; carried as `replica` on every event. */
  name: string
  /** argv; a leading 'ftproxy' runs this package's own CLI with the current node. */
  command: string[]
  log: Logger
  /** false: never respawn. @default {} (respawn with the default backoff) */
  restart?: RestartOptions | false
  /** How long stop() waits after SIGTERM before SIGKILL. @default 5000 */
  stopTimeoutMs?: number
  env?: NodeJS.ProcessEnv
  cwd?: string
  /**
   * A JSON file naming the running process (its directory is created if missing). start()
   * adopts the process it names when that process is still ours; stop() deletes it.
   */
  record?: string
  /** The server's address as configured; kept in the record: a change means "do not adopt". */
  address?: string
}

export interface SupervisorEvents {
  spawn: [pid: number]
  /** start() took over the live process named in the record. */
  adopt: [pid: number]
  /** (null, null) for an adopted process: it is not our child, its status is not ours to read. */
  exit: [code: number | null, signal: NodeJS.Signals | null]
}

/** The record file's content. */
interface ServerRecord {
  pid: number
  /** /proc/<pid>/stat field 22: clock ticks since boot. */
  start_time: string
  /** Start times compare only within one boot. */
  boot_id?: string
  command: string[]
  address?: string
}

/** Why a record's process is not adopted (the `reason` of replica_process_record_stale). */
type StaleReason = 'invalid' | 'reboot' | 'gone' | 'start_time' | 'not_ours' | 'config_changed'

/** A running process of ours; startTime null where /proc is unavailable. */
interface Proc { pid: number, startTime: string | null }

/** A process found through the record: polled, since it is not our child. */
interface Adoptee { pid: number, startTime: string }

const defaults = {
  initialDelayMs: 500,
  maxDelayMs: 30_000,
  resetAfterMs: 10_000,
  stopTimeoutMs: 5000,
}

/** The argv actually spawned: 'ftproxy' becomes node + this package's bin/ftproxy. */
export function resolveCommand (command: string[]): string[] {
  if (command[0] === 'ftproxy') return [process.execPath, FTPROXY_BIN, ...command.slice(1)]
  return command
}

export class Supervisor extends EventEmitter<SupervisorEvents> {
  readonly name: string
  private readonly command: string[]
  private readonly file: string
  private readonly args: string[]
  private readonly log: Logger
  private readonly restart: Required<RestartOptions> | false
  private readonly stopTimeoutMs: number
  private readonly env?: NodeJS.ProcessEnv
  private readonly cwd?: string
  private readonly recordFile?: string
  private readonly address?: string
  private readonly bootId = bootId()

  private child: ChildProcess | undefined
  private adoptee: Adoptee | undefined
  private pollTimer: NodeJS.Timeout | undefined
  /** The process that runs for us (spawned and started, or adopted); undefined while none. */
  private current: Proc | undefined
  private started = false
  private spawnedAt = 0
  private stopping = false
  private nextDelayMs: number
  private restartTimer: NodeJS.Timeout | undefined
  private stopped: Promise<void> | undefined
  private exitWaiters: Array<() => void> = []
  /** The record to write next (null: delete it); undefined when nothing is pending. */
  private recordWanted: string | null | undefined
  /** Record writes, one at a time, in order: a newer record is never overwritten by an older. */
  private recordQueue: Promise<void> = Promise.resolve()

  constructor (opts: SupervisorOptions) {
    super()
    const command = resolveCommand(opts.command)
    const [file, ...args] = command
    if (file === undefined) throw new TypeError('Supervisor: command is empty')
    this.name = opts.name
    this.command = command
    this.file = file
    this.args = args
    this.log = opts.log.child({ replica: opts.name })
    this.restart = opts.restart === false ? false : { ...defaults, ...opts.restart }
    this.stopTimeoutMs = opts.stopTimeoutMs ?? defaults.stopTimeoutMs
    this.env = opts.env
    this.cwd = opts.cwd
    this.recordFile = opts.record
    this.address = opts.address
    this.nextDelayMs = this.restart === false ? 0 : this.restart.initialDelayMs
  }

  /** The pid of the process running for us (spawned or adopted). */
  get pid (): number | undefined {
    return this.current?.pid
  }

  /**
   * `<pid>@<start_time>` of the process running for us, null while none runs: it changes
   * whenever the server restarts. Just `<pid>` where /proc is unavailable.
   */
  get incarnation (): string | null {
    const p = this.current
    if (p === undefined) return null
    return p.startTime === null ? String(p.pid) : `${p.pid}@${p.startTime}`
  }

  /** The running process was adopted from a previous supervisor (its output is not read). */
  get adopted (): boolean {
    return this.current !== undefined && this.adoptee !== undefined
  }

  /**
   * Adopts the process named in the record if it is still ours, else spawns the command.
   * No-op while a process or a pending restart exists.
   */
  start (): void {
    if (this.child !== undefined || this.adoptee !== undefined) return
    if (this.restartTimer !== undefined) return
    this.stopping = false
    this.stopped = undefined
    this.started = true
    if (this.recordFile !== undefined && this.adoptRecorded()) return
    this.spawnChild()
  }

  /**
   * No more restarts; SIGTERM, SIGKILL after stopTimeoutMs; resolves once the process exited
   * and the record is deleted (a deliberate stop leaves nothing to adopt).
   */
  stop (): Promise<void> {
    this.stopping = true
    if (this.restartTimer !== undefined) {
      clearTimeout(this.restartTimer)
      this.restartTimer = undefined
    }
    if (this.child === undefined && this.adoptee === undefined) return this.forgetRecord()
    this.stopped ??= this.terminate().then(() => this.forgetRecord())
    return this.stopped
  }

  /**
   * Let go of the process without stopping it (a front that failed to start must not take
   * data down with it): it runs on, its record stays for the next front to adopt, and no
   * event comes from here any more.
   */
  release (): void {
    this.stopping = true
    clearTimeout(this.restartTimer)
    clearInterval(this.pollTimer)
    this.restartTimer = this.pollTimer = undefined
    this.removeAllListeners()
    const child = this.child
    if (child === undefined) return
    child.stdout?.destroy()
    child.stderr?.destroy()
    child.unref()
  }

  // SIGTERM now, SIGKILL after stopTimeoutMs; resolves once the process is gone.
  private terminate (): Promise<void> {
    return new Promise<void>((resolve) => {
      const killTimer = setTimeout(() => {
        this.log.warn('replica_process_killing', {
          pid: this.child?.pid ?? this.adoptee?.pid,
          timeout_ms: this.stopTimeoutMs,
        })
        this.signal('SIGKILL')
      }, this.stopTimeoutMs)
      // Resolved from onExit or pollAdoptee; onExit also covers a spawn that fails (no 'exit').
      this.exitWaiters.push(() => {
        clearTimeout(killTimer)
        resolve()
      })
      this.signal('SIGTERM')
      // Unref'd so as not to keep a process alive for a server it merely watches, the poll
      // now holds a promise that must resolve.
      this.pollTimer?.ref()
    })
  }

  private signal (sig: NodeJS.Signals): void {
    if (this.child !== undefined) {
      this.child.kill(sig)
      return
    }
    const a = this.adoptee
    // The pid alone, not its group: the group may hold what the server started on purpose.
    // Checked just before: the pid must still name the process we adopted.
    if (a === undefined || !isAlive(a.pid, a.startTime)) return
    try {
      process.kill(a.pid, sig)
    } catch {} // gone meanwhile (ESRCH): the poll sees it
  }

  private spawnChild (): void {
    const child = spawn(this.file, this.args, {
      env: { ...(this.env ?? process.env), FTPROXY_SUPERVISED: '1' },
      cwd: this.cwd,
      // No stdin: nothing ties the server's life to ours, so it survives our crash and the
      // next supervisor adopts it (see record). Output is logged while we live; after our
      // death its writes fail with EPIPE, which a server must survive (Redis ignores SIGPIPE,
      // and so does node; one that dies of it is restarted by the next supervisor).
      stdio: ['ignore', 'pipe', 'pipe'],
      // A process group of its own: a terminal's Ctrl-C (SIGINT to the foreground group)
      // reaches the front only, which then stops its servers in order. Under systemd the
      // cgroup still holds them all (KillMode decides whether a stop of the unit kills them).
      detached: true,
    })
    this.child = child

    child.on('spawn', () => {
      const pid = child.pid as number
      // Read before any 'exit' can be processed: the process exists (at worst a zombie).
      const proc: Proc = { pid, startTime: startTime(pid) }
      this.current = proc
      this.spawnedAt = Date.now()
      this.log.info('replica_process_started',
        { pid, command: this.command, start_time: proc.startTime })
      if (proc.startTime !== null) void this.saveRecord(this.recordOf(proc.pid, proc.startTime))
      this.emit('spawn', pid)
    })
    child.on('error', (err: NodeJS.ErrnoException) => {
      this.log.error('replica_process_error', { error: err.message, code: err.code })
      // A failed spawn never emits 'exit': report it as an exit without a code.
      if (this.current === undefined && this.child === child) this.onExit(child, null, null)
    })
    child.on('exit', (code, signal) => { this.onExit(child, code, signal) })
    // stdio: stdout and stderr are pipes, so both streams exist.
    readLines(child.stdout as Readable, (line, truncated) => {
      const fields = { stream: 'stdout', line, ...(truncated && { truncated }) }
      this.log.info('replica_process_output', fields)
    })
    readLines(child.stderr as Readable, (line, truncated) => {
      const fields = { stream: 'stderr', line, ...(truncated && { truncated }) }
      this.log.warn('replica_process_output', fields)
    })
  }

  private onExit (child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return
    const upMs = this.current !== undefined ? Date.now() - this.spawnedAt : 0
    this.child = undefined
    this.current = undefined
    this.log.info('replica_process_exited', { pid: child.pid, code, signal })
    this.emit('exit', code, signal)
    this.exited()
    this.scheduleRestart(upMs)
  }

  private exited (): void {
    const waiters = this.exitWaiters
    this.exitWaiters = []
    for (const w of waiters) w()
  }

  private scheduleRestart (upMs: number): void {
    if (this.restart === false || this.stopping) return
    if (upMs >= this.restart.resetAfterMs) this.nextDelayMs = this.restart.initialDelayMs
    const delay = this.nextDelayMs
    this.nextDelayMs = Math.min(delay * 2, this.restart.maxDelayMs)
    this.log.info('replica_process_restarting', { delay_ms: delay })
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined
      if (!this.stopping) this.spawnChild()
    }, delay)
  }

  // --- adoption ---

  // Takes over the recorded process when it is still ours; true when nothing is to be spawned
  // now (adopted, or an old process being retired first).
  private adoptRecorded (): boolean {
    const rec = this.readRecord()
    if (rec === null) return false
    const reason = this.staleReason(rec)
    // Ours, but started with another command: it may hold the only copy of the data, so it
    // is never stopped for that. At the same address it is adopted as it runs (the new
    // command applies when it next restarts); at another, it is left running (an operator
    // stops it) and the new one is spawned.
    const sameAddress = rec.address === this.address
    if (reason === 'config_changed') {
      const note = sameAddress
        ? 'adopted as it runs; the new command applies when it restarts'
        : 'left running (it may hold data: stop it by hand); a new one is started'
      this.log.warn('replica_process_config_changed', { pid: rec.pid, note })
    } else if (reason !== null) {
      this.log.warn('replica_process_record_stale', { pid: rec.pid, reason })
    }
    if (reason !== null && (reason !== 'config_changed' || !sameAddress)) return false
    this.watch({ pid: rec.pid, startTime: rec.start_time })
    this.current = { pid: rec.pid, startTime: rec.start_time }
    this.log.info('replica_process_adopted', { pid: rec.pid, start_time: rec.start_time })
    // Its stdout and stderr were pipes to the supervisor that died: nobody can read them any
    // more, so an adopted server's output is not logged (a respawned one's is again).
    process.nextTick(() => this.emit('adopt', rec.pid))
    return true
  }

  // Why rec does not name a live process of ours with the current command, null if it does.
  private staleReason (rec: ServerRecord): StaleReason | null {
    if (rec.boot_id !== undefined && this.bootId !== null && rec.boot_id !== this.bootId) {
      return 'reboot'
    }
    const stat = procStat(rec.pid)
    if (stat === null || stat.state === 'Z') return 'gone'
    if (stat.startTime !== rec.start_time) return 'start_time'
    // Spawned detached, it leads its own session for life (setsid again fails for a leader):
    // another program given the same pid in the same clock tick would not. (The command line
    // is no proof: Redis, for one, rewrites it.)
    if (stat.session !== rec.pid) return 'not_ours'
    const same = rec.command.length === this.command.length &&
      rec.command.every((a, i) => a === this.command[i]) && rec.address === this.address
    return same ? null : 'config_changed'
  }

  private watch (a: Adoptee): void {
    this.adoptee = a
    this.spawnedAt = Date.now()
    this.pollTimer = setInterval(() => { this.pollAdoptee() }, ADOPTED_POLL_MS)
    this.pollTimer.unref()
  }

  private pollAdoptee (): void {
    const a = this.adoptee
    if (a === undefined || isAlive(a.pid, a.startTime)) return
    clearInterval(this.pollTimer)
    this.pollTimer = undefined
    this.adoptee = undefined
    this.current = undefined
    this.log.info('replica_process_exited', { pid: a.pid, code: null, signal: null, adopted: true })
    this.emit('exit', null, null)
    this.exited()
    if (this.stopping) return
    this.scheduleRestart(Date.now() - this.spawnedAt)
  }

  // --- the record file ---

  private recordOf (pid: number, start: string): string {
    const rec: ServerRecord = {
      pid,
      start_time: start,
      ...(this.bootId !== null && { boot_id: this.bootId }),
      command: this.command,
      ...(this.address !== undefined && { address: this.address }),
    }
    return JSON.stringify(rec) + '\n'
  }

  // The record, or null: none (ENOENT), unreadable (logged) or invalid (logged as stale).
  private readRecord (): ServerRecord | null {
    const file = this.recordFile as string
    let text: string
    try {
      text = fs.readFileSync(file, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.recordError(file, err)
      return null
    }
    const rec = parseRecord(text)
    if (rec === null) this.log.warn('replica_process_record_stale', { reason: 'invalid' })
    return rec
  }

  private forgetRecord (): Promise<void> {
    // Not started (again) since the last stop: only wait for that stop's deletion.
    if (this.recordFile === undefined || !this.started) return this.recordQueue
    this.started = false
    return this.saveRecord(null)
  }

  // Queues a write (or, for null, a deletion); each turn of the queue applies the newest.
  private saveRecord (data: string | null): Promise<void> {
    this.recordWanted = data
    this.recordQueue = this.recordQueue.then(() => this.flushRecord())
    return this.recordQueue
  }

  private async flushRecord (): Promise<void> {
    const file = this.recordFile
    const data = this.recordWanted
    if (file === undefined || data === undefined) return
    this.recordWanted = undefined
    try {
      if (data === null) {
        await fsp.rm(file, { force: true })
      } else {
        await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o750 })
        await writeFileAtomic(file, data)
      }
    } catch (err) {
      this.recordError(file, err)
    }
  }

  private recordError (file: string, err: unknown): void {
    const e = err as NodeJS.ErrnoException
    this.log.error('replica_process_record_error', { path: file, error: e.message, code: e.code })
  }
}

function parseRecord (text: string): ServerRecord | null {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch {
    return null
  }
  if (typeof v !== 'object' || v === null) return null
  const r = v as Partial<Record<keyof ServerRecord, unknown>>
  const ok = typeof r.pid === 'number' && Number.isSafeInteger(r.pid) && r.pid > 0 &&
    typeof r.start_time === 'string' && /^\d+$/.test(r.start_time) &&
    Array.isArray(r.command) && r.command.every((a) => typeof a === 'string') &&
    (r.boot_id === undefined || typeof r.boot_id === 'string') &&
    (r.address === undefined || typeof r.address === 'string')
  return ok ? (v as ServerRecord) : null
}

/**
 * Calls onLine for each line of a stream (without \n or \r\n). Lines over MAX_OUTPUT_LINE
 * bytes are cut there and the rest dropped, so a child that never writes a newline costs 4KiB.
 */
export function readLines (
  stream: Readable, onLine: (line: string, truncated: boolean) => void
): void {
  let parts: Buffer[] = []
  let length = 0
  let truncated = false

  function emit (): void {
    let line = Buffer.concat(parts, length)
    if (!truncated && line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, -1)
    onLine(line.toString('utf8'), truncated)
    parts = []
    length = 0
    truncated = false
  }

  function add (piece: Buffer): void {
    if (truncated) return
    const room = MAX_OUTPUT_LINE - length
    if (piece.length > room) {
      piece = piece.subarray(0, room)
      truncated = true
    }
    if (piece.length > 0) {
      parts.push(piece)
      length += piece.length
    }
  }

  stream.on('data', function streamOnData (chunk: Buffer) {
    let start = 0
    let i: number
    while ((i = chunk.indexOf(0x0a, start)) !== -1) {
      add(chunk.subarray(start, i))
      emit()
      start = i + 1
    }
    add(chunk.subarray(start))
  })
  stream.on('end', function streamOnEnd () {
    if (length > 0 || truncated) emit()
  })
  // The pipe's errors end in the child's 'exit' or 'error'; nothing to add here.
  stream.on('error', () => {})
}
