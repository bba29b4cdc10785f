// Integration helpers: real server processes (demo-server via bin/ftproxy, redis-server), a
// front running in this process with its events captured, and clients that record every
// byte. Everything listens on loopback port 0 (or a port just handed out by the kernel) and
// is stopped in t.teardown.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import path from 'node:path'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { parseAgentConfig, parseConfig, type Config } from '../../lib/config/index.js'
import { Agent } from '../../lib/agent/agent.js'
import { Front } from '../../lib/front/front.js'
import { createLogger } from '../../lib/logger.js'
import { EventLog, type Event, type EventPred } from './events.js'
import { until, untilValue } from './until.js'
import { freePort } from './ports.js'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
export const BIN = path.join(ROOT, 'bin/ftproxy')

export interface Server {
  name: string
  port: number
  proc: ChildProcess
  pid: number
  kill (signal: NodeJS.Signals): void
}

/** A demo server as a real process, on a port of its own choosing. */
export async function demoServer (t: Test, opts: { divergeAfter?: number } = {}): Promise<Server> {
  const args = [BIN, 'demo-server', '--port', '0']
  if (opts.divergeAfter !== undefined) args.push('--diverge-after', String(opts.divergeAfter))
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { proc.kill('SIGKILL') })
  return serverOf('demo', await listeningPort(proc, 'demo-server'), proc)
}

/**
 * The port in the `{"event":"listening","address":"host:port"}` line a child prints on
 * stdout; rejects (with its stdout) if it exits first.
 */
async function listeningPort (proc: ChildProcess, name: string, ms = 30000): Promise<number> {
  const log = new EventLog()
  let out = ''
  let exit: number | null | undefined
  proc.stdout?.on('data', (d: Buffer) => { out += d.toString(); log.feed(d) })
  proc.once('exit', (code) => { exit = code })
  const done = await untilValue(
    () => log.find('listening') ?? exit !== undefined, `${name} to listen`, ms)
  if (done === true) throw new Error(`${name} exited with ${exit}: ${out}`)
  return Number(String(done.address).split(':').pop())
}

function serverOf (name: string, port: number, proc: ChildProcess): Server {
  return {
    name,
    port,
    proc,
    pid: proc.pid as number,
    kill (signal) { proc.kill(signal) },
  }
}

/** Whether redis-server is installed (the Redis tests skip, saying so, when it is not). */
export function haveRedis (): boolean {
  return spawnSync('redis-server', ['--version']).status === 0
}

/** redis-server on a free loopback port, no persistence. */
export async function redisServer (t: Test, extra: string[] = []): Promise<Server> {
  const port = await freePort()
  const args = [
    '--port', String(port), '--bind', '127.0.0.1',
    '--save', '', '--appendonly', 'no', '--protected-mode', 'no', ...extra,
  ]
  const proc = spawn('redis-server', args, { stdio: 'ignore' })
  t.teardown(() => { proc.kill('SIGKILL') })
  await until(() => accepts(port), `redis-server listening on ${port}`)
  return serverOf('redis', port, proc)
}

/** Whether something accepts connections on loopback `port`. */
function accepts (port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

/** A front in this process, with every log event captured. */
export class TestFront {
  readonly log = new EventLog()
  front!: Front
  cfg!: Config

  async start (t: Test, yaml: string): Promise<this> {
    this.cfg = parseConfig(yaml, 'test.yaml')
    const stream = this.log.stream()
    this.front = new Front(this.cfg, { log: createLogger({ level: 'debug', stream }) })
    t.teardown(() => this.front.close())
    await this.front.start()
    return this
  }

  get port (): number { return this.front.address.port }

  get events (): Event[] { return this.log.events }

  find (event: string, pred?: EventPred): Event | undefined { return this.log.find(event, pred) }

  all (event: string): Event[] { return this.log.all(event) }

  waitEvent (event: string, pred?: EventPred, ms?: number): Promise<Event> {
    return this.log.next(event, pred, ms)
  }

  role (name: string): string | undefined {
    return this.front.status().replicas.find((r) => r.name === name)?.role
  }
}

const HEALTH = 'interval: 200ms, timeout: 200ms, fall: 2, rise: 1'

/**
 * YAML for a front in front of the given direct replicas (extra: more top-level YAML;
 * health: the health_check settings, inside the braces).
 */
export function frontYaml (
  t: Test, replicas: Array<{ name: string, port: number, command?: string[] }>, extra = '',
  health = HEALTH
): string {
  const dir = t.testdir({})
  const rs = replicas.map((r) => `  - name: ${r.name}\n    address: 127.0.0.1:${r.port}\n` +
    (r.command ? `    command: ${JSON.stringify(r.command)}\n` : '')).join('')
  return `listen: 127.0.0.1:0\nstate_dir: ${JSON.stringify(dir)}\n` +
    'admin: { listen: 127.0.0.1:0 }\n' +
    `health_check: { ${health} }\n` +
    `timeouts: { connect: 1s, stall: 1s, linger: 1s }\nreplicas:\n${rs}${extra}\n`
}

/** A client that records every byte it receives, and when the front ended or reset it. */
export class Client {
  readonly socket: net.Socket
  /** Bytes received, joined lazily: chunks arriving since the last read wait in `chunks`. */
  private received = Buffer.alloc(0)
  private chunks: Buffer[] = []
  bytes = 0
  ended = false
  closed = false
  error: Error | null = null

  constructor (port: number) {
    this.socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    this.socket.on('data', (d: Buffer) => { this.chunks.push(d); this.bytes += d.length })
    this.socket.on('end', () => { this.ended = true })
    this.socket.on('close', () => { this.closed = true })
    this.socket.on('error', (err) => { this.error = err })
  }

  static async open (port: number): Promise<Client> {
    const c = new Client(port)
    await new Promise<void>((resolve, reject) => {
      c.socket.once('connect', resolve)
      c.socket.once('error', reject)
    })
    return c
  }

  get text (): string {
    if (this.chunks.length > 0) {
      this.received = Buffer.concat([this.received, ...this.chunks])
      this.chunks = []
    }
    return this.received.toString('latin1')
  }

  /** Complete lines received so far. */
  get lines (): string[] {
    const t = this.text
    const end = t.lastIndexOf('\n')
    return end < 0 ? [] : t.slice(0, end).split('\n')
  }

  send (s: string | Buffer): boolean { return this.socket.write(s) }

  async waitLines (n: number, ms = 15000): Promise<string[]> {
    await until(() => this.lines.length >= n || this.closed, `${n} lines`, ms)
    return this.lines.slice(0, n)
  }

  close (): void { this.socket.destroy() }
}

/** Two demo servers (a: primary, b: backup) and a front before them. */
export async function demoPair (
  t: Test, extra = '', opts: { divergeAfterB?: number } = {}
): Promise<{ a: Server, b: Server, f: TestFront }> {
  const a = await demoServer(t)
  const b = await demoServer(t, { divergeAfter: opts.divergeAfterB })
  const yaml = frontYaml(t, [{ name: 'a', port: a.port }, { name: 'b', port: b.port }], extra)
  const f = await new TestFront().start(t, yaml)
  return { a, b, f }
}

/** Two test-started redis-server copies (a: primary) and a front before them. */
export async function redisPair (t: Test, extra: string, health?: string):
Promise<{ a: Server, b: Server, f: TestFront }> {
  const a = await redisServer(t)
  const b = await redisServer(t)
  const replicas = [{ name: 'a', port: a.port }, { name: 'b', port: b.port }]
  const f = await new TestFront().start(t, frontYaml(t, replicas, extra, health))
  return { a, b, f }
}

export interface AgentProc extends Server {
  stateDir: string
}

/** `ftproxy agent` as a real process beside a server; extra YAML (tls …) goes in its config. */
export async function agentProc (
  t: Test, serverPort: number, opts: { extraYaml?: string, stateDir?: string } = {}
): Promise<AgentProc> {
  const dir = agentDir(t)
  const stateDir = opts.stateDir ?? path.join(dir, 'agent-state')
  const file = path.join(dir, 'agent.yaml')
  writeFileSync(file, agentYaml(serverPort, stateDir, opts.extraYaml))
  const env = { ...process.env }
  delete env.NODE_OPTIONS // the test runner's loaders are not for this child
  const proc = spawn(process.execPath, [BIN, 'agent', '--config', file],
    { stdio: ['ignore', 'pipe', 'inherit'], env })
  t.teardown(() => { proc.kill('SIGKILL') })
  return { ...serverOf('agent', await listeningPort(proc, 'agent'), proc), stateDir }
}

// A directory of its own (t.testdir() is one per test and is wiped when called again).
function agentDir (t: Test): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ftproxy-agent-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

function agentYaml (serverPort: number, stateDir: string, extra = '', listen = 0): string {
  return `listen: 127.0.0.1:${listen}\nserver: 127.0.0.1:${serverPort}\n` +
    `state_dir: ${JSON.stringify(stateDir)}\n` +
    `health_check: { interval: 200ms, timeout: 200ms, fall: 2, rise: 1 }\n${extra}\n`
}

/** An agent in this process (its events captured), beside the server on `serverPort`. */
export async function agentInProcess (
  t: Test, serverPort: number, extraYaml = '', listenPort = 0
): Promise<{ agent: Agent, port: number, events: Event[] }> {
  const stateDir = path.join(agentDir(t), 'state')
  const yaml = agentYaml(serverPort, stateDir, extraYaml, listenPort)
  const cfg = parseAgentConfig(yaml, 'agent.yaml')
  const log = new EventLog()
  const agent = new Agent(cfg, { log: createLogger({ level: 'debug', stream: log.stream() }) })
  t.teardown(() => agent.close())
  await agent.start()
  return { agent, port: agent.address.port, events: log.events }
}

/**
 * Pipelined load: each client INCRs its own key (`keys[i]`, default `k<i>`) `count` times,
 * `burst` commands per write, at most four bursts unanswered, topped up as replies come.
 * `onProgress` sees the total of replies so far (to inject a failure mid-stream).
 */
export async function driveIncr (clients: Client[], opts: {
  count: number, burst?: number, keys?: string[], onProgress?: (total: number) => void, ms?: number
}): Promise<void> {
  const { count, burst = 4, keys = [], onProgress, ms = 60000 } = opts
  const drives = clients.map((c, i) => ({ c, key: keys[i] ?? `k${i}`, sent: 0 }))
  await until(() => {
    let total = 0
    for (const d of drives) {
      const have = d.c.lines.length
      total += have
      while (d.sent < count && d.sent - have < burst * 4) {
        const n = Math.min(burst, count - d.sent)
        d.c.send(`INCR ${d.key}\n`.repeat(n))
        d.sent += n
      }
    }
    onProgress?.(total)
    return total >= clients.length * count || clients.some((c) => c.closed)
  }, 'all replies', ms)
}

/** Every client got exactly 1..count (no gap, no duplicate) and kept its connection. */
export function expectCounts (t: Test, clients: Client[], count: number): void {
  const want = Array.from({ length: count }, (_, i) => String(i + 1))
  clients.forEach((c, i) => {
    t.same(c.lines, want, `client ${i}: 1..${count} in order, no gap, no duplicate`)
    t.equal(c.closed, false, `client ${i} kept its connection`)
    t.equal(c.error, null, `client ${i} saw no error`)
  })
}
