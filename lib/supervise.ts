// Supervision of a replica's `command`: spawn it, log its output line by line, restart it with
// backoff when it exits, stop it with SIGTERM then SIGKILL.
//
//   start() ──spawn──▶ child ──exit──▶ 'exit' ──(restart on, not stopping)──▶ backoff ──▶ spawn
//                        │ stdout/stderr ──lines (≤ 4KiB)──▶ replica_process_output
//   stop()  ──SIGTERM──▶ (stopTimeoutMs) ──SIGKILL──▶ resolves on exit

import { spawn, type ChildProcess } from 'node:child_process'
import { EventEmitter } from 'node:events'
import { fileURLToPath } from 'node:url'
import type { Readable } from 'node:stream'
import type { Logger } from './logger.js'

/** Longest logged output line in bytes; the rest of a longer line is dropped. */
export const MAX_OUTPUT_LINE = 4096

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
}

export interface SupervisorEvents {
  spawn: [pid: number]
  exit: [code: number | null, signal: NodeJS.Signals | null]
}

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

  private child: ChildProcess | undefined
  private running = false
  private spawnedAt = 0
  private stopping = false
  private nextDelayMs: number
  private restartTimer: NodeJS.Timeout | undefined
  private stopped: Promise<void> | undefined
  private exitWaiters: Array<() => void> = []

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
    this.nextDelayMs = this.restart === false ? 0 : this.restart.initialDelayMs
  }

  /** The child's pid while it runs. */
  get pid (): number | undefined {
    return this.running ? this.child?.pid : undefined
  }

  /** Spawns the command (no-op while a child or a pending restart exists). */
  start (): void {
    if (this.child !== undefined || this.restartTimer !== undefined) return
    this.stopping = false
    this.stopped = undefined
    this.spawnChild()
  }

  /** No more restarts; SIGTERM, SIGKILL after stopTimeoutMs; resolves once the child exited. */
  stop (): Promise<void> {
    this.stopping = true
    if (this.restartTimer !== undefined) {
      clearTimeout(this.restartTimer)
      this.restartTimer = undefined
    }
    const child = this.child
    if (child === undefined) return Promise.resolve()
    this.stopped ??= new Promise<void>((resolve) => {
      const killTimer = setTimeout(() => {
        this.log.warn('replica_process_killing', { pid: child.pid, timeout_ms: this.stopTimeoutMs })
        child.kill('SIGKILL')
      }, this.stopTimeoutMs)
      // Resolved from onExit, which also covers a spawn that fails (no 'exit' event then).
      this.exitWaiters.push(() => {
        clearTimeout(killTimer)
        resolve()
      })
      child.kill('SIGTERM')
    })
    return this.stopped
  }

  private spawnChild (): void {
    const child = spawn(this.file, this.args, {
      env: { ...(this.env ?? process.env), FTPROXY_SUPERVISED: '1' },
      cwd: this.cwd,
      // stdin is a pipe we never write: it closes when this process dies, however it dies,
      // which tells a child that watches it (ftproxy demo-server) to exit. Output is logged.
      stdio: ['pipe', 'pipe', 'pipe'],
      // A process group of its own: a terminal's Ctrl-C (SIGINT to the foreground group)
      // reaches the front only, which then stops its servers in order. Under systemd the
      // cgroup still holds them all.
      detached: true,
    })
    this.child = child

    child.on('spawn', () => {
      this.running = true
      this.spawnedAt = Date.now()
      this.log.info('replica_process_started', { pid: child.pid, command: this.command })
      this.emit('spawn', child.pid as number)
    })
    child.on('error', (err: NodeJS.ErrnoException) => {
      this.log.error('replica_process_error', { error: err.message, code: err.code })
      // A failed spawn never emits 'exit': report it as an exit without a code.
      if (!this.running && this.child === child) this.onExit(child, null, null)
    })
    child.on('exit', (code, signal) => { this.onExit(child, code, signal) })
    // stdio is all pipes: both streams exist.
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
    const upMs = this.running ? Date.now() - this.spawnedAt : 0
    this.child = undefined
    this.running = false
    this.log.info('replica_process_exited', { pid: child.pid, code, signal })
    this.emit('exit', code, signal)
    const waiters = this.exitWaiters
    this.exitWaiters = []
    for (const w of waiters) w()
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
}

// Calls onLine for each line of a stream (without \n or \r\n). Lines over MAX_OUTPUT_LINE bytes
// are cut there and the rest dropped, so a child that never writes a newline costs us 4KiB.
function readLines (stream: Readable, onLine: (line: string, truncated: boolean) => void): void {
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
