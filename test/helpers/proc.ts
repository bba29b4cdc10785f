// The real CLI as a child process: `node bin/ftproxy ...`, its stdout read back as JSON-line
// events, its stderr kept for assertions and diagnostics, its exit awaited with a deadline.
// Every process started here is SIGKILLed in t.teardown (and so are the demo servers it
// reported starting), whatever happened to the test.

import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import type { Test } from 'tap'
import { BIN, ROOT } from './cluster.js'
import { EventLog, type Event, type EventPred } from './events.js'
import { until, untilValue } from './until.js'

export interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
}

// The child must not believe it runs under systemd or under a front.
function childEnv (): NodeJS.ProcessEnv {
  const env = { ...process.env }
  delete env.NOTIFY_SOCKET
  delete env.FTPROXY_SUPERVISED
  return env
}

/** `ftproxy <args>` running; stdout parsed into events as it arrives. */
export class Cli {
  readonly proc: ChildProcess
  readonly log = new EventLog()
  stdout = ''
  stderr = ''
  exit: Exit | null = null
  readonly exited: Promise<Exit>

  /** `nofile`: run it under that open-files limit (`ulimit -n`). */
  constructor (t: Test, args: string[], opts: { cwd?: string, nofile?: number } = {}) {
    const argv = [process.execPath, BIN, ...args]
    const [cmd, ...rest] = opts.nofile === undefined
      ? argv
      : ['sh', '-c', `ulimit -n ${opts.nofile} && exec "$@"`, 'sh', ...argv]
    this.proc = spawn(cmd as string, rest,
      { cwd: opts.cwd ?? ROOT, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
    this.proc.stdout?.setEncoding('utf8')
    this.proc.stderr?.setEncoding('utf8')
    this.proc.stdout?.on('data', (s: string) => { this.stdout += s; this.log.feed(s) })
    this.proc.stderr?.on('data', (s: string) => { this.stderr += s })
    // 'close', not 'exit': by then every byte of stdout and stderr has been read.
    this.exited = new Promise((resolve) => {
      this.proc.once('close', (code, signal) => {
        this.exit = { code, signal }
        resolve(this.exit)
      })
    })
    t.teardown(() => {
      if (this.exit === null) this.proc.kill('SIGKILL')
      // The front's servers outlive it (the next front would adopt them): stop them here.
      for (const pid of this.pids()) killIfDemoServer(pid)
    })
  }

  get pid (): number { return this.proc.pid as number }

  get events (): Event[] { return this.log.events }

  find (event: string, pred?: EventPred): Event | undefined { return this.log.find(event, pred) }

  all (event: string): Event[] { return this.log.all(event) }

  /** The first `event` matching pred; fails at once (with the output) if the process exits. */
  async waitEvent (event: string, pred?: EventPred, ms = 15000): Promise<Event> {
    try {
      await until(() => this.find(event, pred) ?? this.exit, `event ${event}`, ms)
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${this.transcript()}`)
    }
    const e = this.find(event, pred)
    if (e === undefined) {
      throw new Error(
        `exited (${JSON.stringify(this.exit)}) before event ${event}\n${this.transcript()}`)
    }
    return e
  }

  async waitExit (ms = 15000): Promise<Exit> {
    try {
      return await untilValue(() => this.exit, 'exit', ms)
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${this.transcript()}`)
    }
  }

  /** pids of every supervised process it reported starting, by replica name. */
  pidsOf (replica: string): number[] {
    return this.all('replica_process_started')
      .filter((e) => e.replica === replica).map((e) => e.pid as number)
  }

  pids (): number[] {
    return this.all('replica_process_started').map((e) => e.pid as number)
  }

  transcript (): string {
    return `--- stdout\n${this.stdout}--- stderr\n${this.stderr}---`
  }
}

/** Runs `ftproxy <args>` to completion (bounded by ms). */
export async function runCli (
  t: Test, args: string[], ms = 15000
): Promise<Exit & { stdout: string, stderr: string, events: Event[] }> {
  const c = new Cli(t, args)
  const exit = await c.waitExit(ms)
  return { ...exit, stdout: c.stdout, stderr: c.stderr, events: c.events }
}

/**
 * Whether pid names a live process. A zombie counts as gone: an orphan is reaped by whatever
 * init the machine runs, and not every container init reaps promptly.
 */
export function alive (pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false
    throw err
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // pid (comm) STATE ...: comm may hold spaces and parentheses, the state follows the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

export async function waitGone (pids: number[], what: string, ms = 10000): Promise<void> {
  await until(() => pids.every((p) => !alive(p)), `${what} (pids ${pids.join(', ')}) to exit`, ms)
}

// SIGKILL pid only if it is still one of our demo servers (pids are reused).
function killIfDemoServer (pid: number): void {
  try {
    if (!alive(pid)) return
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
    if (cmdline.includes(BIN) && cmdline.includes('demo-server')) process.kill(pid, 'SIGKILL')
  } catch {}
}
