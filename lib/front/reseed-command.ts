// The operator's `reseed.command`, run once: it copies a source replica's state into the
// target. Two phases on its stdin and stdout:
//
//   spawn ──▶ prepare (service runs) ──stdout `ready`──▶ front holds input, waits for the
//   source ──stdin `cut`──▶ the command finishes the copy ──exit 0
//
// Its other output lines are logged as `reseed_output`. It runs in a process group of its
// own, so that a timeout or an abort kills whatever it started too (redis-cli, ssh...).

import { spawn, type ChildProcess } from 'node:child_process'
import type { Readable } from 'node:stream'
import { formatHostPort, type HostPort } from '../address.js'
import { FtproxyError } from '../errors.js'
import type { Logger } from '../logger.js'
import { readLines, resolveCommand } from '../supervise.js'

/** One end of the copy, as the command is told of it. */
export interface Peer {
  name: string
  address?: HostPort
  agent?: HostPort
}

/** The environment that names the source and the target to the command. */
export function reseedEnv (source: Peer, target: Peer, timeout: number): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { FTPROXY_RESEED_TIMEOUT_MS: String(timeout) }
  for (const [key, p] of [['SOURCE', source], ['TARGET', target]] as const) {
    env[`FTPROXY_RESEED_${key}`] = p.name
    if (p.address) env[`FTPROXY_RESEED_${key}_ADDRESS`] = formatHostPort(p.address)
    if (p.agent) env[`FTPROXY_RESEED_${key}_AGENT`] = formatHostPort(p.agent)
  }
  return env
}

/** How long a command told to stop has to undo its work before SIGKILL. */
const KILL_AFTER_MS = 3000

const failed = (message: string, reason: string): FtproxyError =>
  new FtproxyError('ERR_FTPROXY_RESEED_FAILED', message, { reason })

export class ReseedCommand {
  /** Resolves true once it printed `ready`, false if it exited first (it then did it all). */
  readonly ready: Promise<boolean>
  /** Resolves once it exited 0; rejects on any other end. */
  readonly done: Promise<void>
  private readonly child: ChildProcess
  private killedFor: string | null = null
  private exited = false
  private onReady: (yes: boolean) => void = () => {}
  private onFailed: (err: FtproxyError) => void = () => {}
  /** `cut`'s write: its error (EPIPE: nobody was left to read it), null, or not yet sent. */
  private cutSent: Promise<Error | null> | null = null

  constructor (command: string[], env: NodeJS.ProcessEnv, log: Logger) {
    const [file, ...args] = resolveCommand(command)
    this.child = spawn(file as string, args, {
      env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'], detached: true,
    })
    const child = this.child
    // A command that exits before reading `cut` closes the pipe: not our error to raise.
    child.stdin?.on('error', () => {})
    this.ready = new Promise((resolve) => { this.onReady = resolve })
    readLines(child.stdout as Readable, (line) => {
      if (line.trim() === 'ready') return this.onReady(true)
      log.info('reseed_output', { stream: 'stdout', line })
    })
    readLines(child.stderr as Readable, (line) => {
      log.warn('reseed_output', { stream: 'stderr', line })
    })
    this.done = new Promise<void>((resolve, reject) => {
      this.onFailed = reject
      child.on('error', (err) => {
        this.exited = true
        this.onReady(false)
        reject(failed(`reseed.command could not start: ${err.message}`, 'spawn'))
      })
      child.on('exit', (code, signal) => {
        this.exited = true
        this.onReady(false)
        // What it started and left running goes with it (its group outlives it).
        this.signal('SIGKILL')
        if (code === 0 && this.killedFor === null) {
          void this.succeeded().then(resolve, reject)
          return
        }
        const why = this.killedFor ?? (signal !== null ? `killed by ${signal}` : `exit ${code}`)
        reject(failed(`reseed.command failed: ${why}`, this.killedFor ?? 'exit'))
      })
    })
    this.done.catch(() => {}) // its callers await it; an early failure is not unhandled
  }

  /** The front made the cut: the command finishes the copy now. */
  cut (): void {
    // One that said `ready` and exited did not wait for the cut: its copy is not as of it.
    if (this.exited) throw failed('reseed.command exited before it was told cut', 'early_exit')
    const stdin = this.child.stdin
    this.cutSent = new Promise((resolve) => {
      if (stdin === null) return resolve(null)
      stdin.write('cut\n', (err) => resolve(err ?? null))
      stdin.end()
    })
  }

  // An exit 0 counts if `cut` was not sent (one-phase) or it reached a live reader.
  private async succeeded (): Promise<void> {
    const err = await this.cutSent
    if (err) throw failed('reseed.command exited before it was told cut', 'early_exit')
  }

  /**
   * Stop it and everything it started (timeout, abort); `why` becomes the failure. It gets
   * the end of its stdin and SIGTERM first, to undo what it can (a Redis target made a
   * replica must stop following its source); SIGKILL after KILL_AFTER_MS.
   */
  kill (why: string): void {
    if (this.exited) return
    this.killedFor ??= why
    // The front stops waiting now (a cut releases its hold); the process has KILL_AFTER_MS
    // to undo what it can.
    this.onReady(false)
    this.onFailed(failed(`reseed.command failed: ${why}`, why))
    this.child.stdin?.end()
    this.signal('SIGTERM')
    setTimeout(() => { if (!this.exited) this.signal('SIGKILL') }, KILL_AFTER_MS).unref()
  }

  private signal (sig: NodeJS.Signals): void {
    const pid = this.child.pid
    try {
      if (pid !== undefined) process.kill(-pid, sig)
    } catch {
      this.child.kill(sig)
    }
  }
}
