// @ts-check
// Shared helpers for the benchmark (bench.mjs) and the failure drill (drill.mjs).
//
//   spawnChild ──▶ Child (tracked; every tracked child is killed on exit, error or signal)
//     ├─ startRedis    a redis-server copy on a free port, no persistence, in its own dir
//     ├─ startEcho     bench/echo.mjs on port 0 (the port comes back on its stdout)
//     ├─ startHaproxy  haproxy 2.6 `mode tcp`, config generated in a temp dir
//     ├─ startFront    `node bin/ftproxy run` from a generated YAML, waits for `listening`
//     └─ startAgent    `node bin/ftproxy agent` beside one server, waits for `listening`
//   cpuSeconds / memKiB      /proc/<pid>/stat user+sys, /proc/<pid>/status VmRSS and VmHWM
//   establishedTo            established connections to a port (/proc/net/tcp)
//   machineBusy              CPU busy fraction of the whole machine over a short window
//   median / percentile / summarize / withDeadline / freePort / makeTempDir
//
// Stable exports (drill.mjs imports them): installCleanup, killAll, spawnChild, freePort,
// makeTempDir, waitForPort, startRedis, startEcho, startHaproxy, startFront, startAgent,
// frontConfigYaml, nofileHardLimit, cpuSeconds, memKiB, establishedTo, machineBusy, median,
// percentile, summarize, withDeadline, sleep, ROOT. Every start* resolves to a Server
// ({ port, pid, child, stop }) or rejects within its deadline (the half-started child is
// killed first).

import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/** The repository root (bench/..). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/**
 * @typedef {{ code: number | null, signal: NodeJS.Signals | null }} ExitInfo
 *
 * @typedef {object} Child
 * @property {string} name                short label for errors ("redis:6379")
 * @property {number} pid                 the process (also its process group: spawned detached)
 * @property {import('node:child_process').ChildProcess} proc
 * @property {Promise<ExitInfo>} exited   settles when the process is gone
 * @property {() => boolean} alive
 * @property {() => string} tail          its last output lines (stdout and stderr), for errors
 * @property {(graceMs?: number) => Promise<ExitInfo>} stop
 *   SIGTERM its group, SIGKILL after graceMs
 *
 * @typedef {object} SpawnOptions
 * @property {string} [name]
 * @property {string} [cwd]
 * @property {NodeJS.ProcessEnv} [env]
 * @property {(line: string, stream: 'stdout' | 'stderr') => void} [onLine]  every output line
 * @property {number} [tailLines]         how many lines tail() keeps (default 40)
 *
 * @typedef {object} Server
 * @property {number} port
 * @property {number} pid
 * @property {Child} child
 * @property {(graceMs?: number) => Promise<ExitInfo>} stop
 *
 * @typedef {object} FrontReplica
 * @property {string} name
 * @property {string} [address]
 *   "127.0.0.1:PORT": the server, straight (one of address / agent)
 * @property {string} [agent]
 *   "127.0.0.1:PORT": an agent beside the server, instead of address
 * @property {string[]} [command]
 *   with address: the server's argv, started and supervised by the front
 *
 * @typedef {object} FrontOptions
 * @property {FrontReplica[]} replicas
 * @property {'ack' | 'match' | 'none'} [outputCommit]   default ack
 * @property {'raw' | 'line' | 'resp'} [protocol]   top-level `protocol:` (default: left out: raw)
 * @property {string} [dir]               temp dir for the config and state_dir (default: a new one)
 * @property {number} [maxConnections]    limits.max_connections (default 20000)
 * @property {'error' | 'warn' | 'info' | 'debug'} [logLevel]
 *   default info: `listening` is an info event
 * @property {string} [extraYaml]         appended to the config verbatim (top-level keys)
 * @property {number} [nofile]
 *   `ulimit -n` for the front (default: the hard limit, at most 65536)
 * @property {string[]} [nodeArgs]        e.g. ['--cpu-prof', '--cpu-prof-dir=DIR']
 * @property {number} [timeoutMs]         deadline for `listening` (default 15000)
 * @property {(ev: Record<string, unknown>) => void} [onEvent]
 *   every JSON log line of the front, as it comes (events keeps only the first 2000)
 *
 * @typedef {Server & { events: Record<string, unknown>[], config: string, dir: string }} Front
 *   events: every JSON log line of the front, in order (at most 2000 kept)
 *
 * @typedef {{ median: number, min: number, max: number, n: number }} Summary
 */

// ---- children and cleanup -------------------------------------------------------------------

/** @type {Set<Child>} */
const children = new Set()

/**
 * An error about a child: its last output line on the first line (for one-line reports),
 * then its whole tail.
 * @param {string} what
 * @param {Child} child
 */
function childError (what, child) {
  const lines = child.tail().split('\n').filter((l) => l.trim() !== '')
  const alarming = [...lines].reverse().find((l) => /error|alert|fatal/i.test(l))
  const gist = alarming ?? lines.at(-1) ?? '(no output)'
  return new Error(`${what}: ${gist.trim()}\n${lines.join('\n')}`)
}
/** @type {Set<string>} */
const tempDirs = new Set()
let cleanupInstalled = false

/** Kill every tracked child (SIGKILL to its process group) and remove temp dirs. Synchronous. */
export function killAll () {
  for (const c of children) {
    try { process.kill(-c.pid, 'SIGKILL') } catch {}
    try { process.kill(c.pid, 'SIGKILL') } catch {}
  }
  children.clear()
  for (const d of tempDirs) {
    try { rmSync(d, { recursive: true, force: true }) } catch {}
  }
  tempDirs.clear()
}

/**
 * Kill every child when this process ends: normal exit, uncaught error, SIGINT, SIGTERM,
 * SIGHUP. Idempotent. (A SIGKILL of this process cannot be caught: children would survive.)
 */
export function installCleanup () {
  if (cleanupInstalled) return
  cleanupInstalled = true
  process.on('exit', killAll)
  /** @type {Array<[NodeJS.Signals, number]>} */
  const exitCodes = [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]]
  for (const [sig, code] of exitCodes) {
    process.once(sig, () => {
      process.stderr.write(`\n${sig}: stopping every child process\n`)
      killAll()
      process.exit(code)
    })
  }
  process.on('uncaughtException', (err) => {
    process.stderr.write(`uncaught: ${err.stack ?? String(err)}\n`)
    killAll()
    process.exit(1)
  })
  process.on('unhandledRejection', (err) => {
    process.stderr.write(`unhandled rejection: ${err instanceof Error ? err.stack : String(err)}\n`)
    killAll()
    process.exit(1)
  })
}

/**
 * Spawn a tracked child in its own process group, stdout/stderr read line by line.
 * @param {string} cmd
 * @param {string[]} args
 * @param {SpawnOptions} [opts]
 * @returns {Child}
 */
export function spawnChild (cmd, args, opts = {}) {
  installCleanup()
  const proc = spawn(cmd, args, {
    cwd: opts.cwd ?? ROOT,
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  })
  if (proc.pid === undefined) throw new Error(`cannot spawn ${cmd}`)
  const pid = proc.pid
  const keep = opts.tailLines ?? 40
  /** @type {string[]} */
  const lines = []
  let exitInfo = /** @type {ExitInfo | null} */ (null)
  /** @param {'stdout' | 'stderr'} stream */
  const reader = (stream) => {
    let rest = ''
    /** @param {Buffer} chunk */
    return (chunk) => {
      const parts = (rest + chunk.toString('utf8')).split('\n')
      rest = parts.pop() ?? ''
      if (rest.length > 65536) rest = rest.slice(-65536)
      for (const line of parts) {
        lines.push(line)
        if (lines.length > keep) lines.shift()
        opts.onLine?.(line, stream)
      }
    }
  }
  proc.stdout?.on('data', reader('stdout'))
  proc.stderr?.on('data', reader('stderr'))
  // Settles once the process exited and its output was read ('close'), or 1 s after the
  // exit when something else (a grandchild) still holds the pipes.
  /** @type {Promise<ExitInfo>} */
  const exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => {
      exitInfo = { code, signal }
      const info = exitInfo
      const timer = setTimeout(() => resolve(info), 1000)
      proc.once('close', () => { clearTimeout(timer); resolve(info) })
    })
    proc.once('error', () => { exitInfo = { code: null, signal: null }; resolve(exitInfo) })
  })
  /** @type {Child} */
  const child = {
    name: opts.name ?? path.basename(cmd),
    pid,
    proc,
    exited,
    alive: () => exitInfo === null,
    tail: () => lines.join('\n'),
    stop: async (graceMs = 3000) => {
      if (exitInfo === null) {
        try { process.kill(-pid, 'SIGTERM') } catch {}
        const timer = setTimeout(() => { try { process.kill(-pid, 'SIGKILL') } catch {} }, graceMs)
        await exited
        clearTimeout(timer)
      }
      // Anything left in its group (a shell's children) goes too.
      try { process.kill(-pid, 'SIGKILL') } catch {}
      children.delete(child)
      return /** @type {ExitInfo} */ (exitInfo)
    },
  }
  children.add(child)
  void exited.then(() => children.delete(child))
  return child
}

// ---- small utilities ------------------------------------------------------------------------

/** @param {number} ms */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Reject after `ms` with `what` in the message; the timer never keeps the process alive.
 * @template T
 * @param {Promise<T>} promise
 * @param {number} ms
 * @param {string} what
 * @returns {Promise<T>}
 */
export function withDeadline (promise, ms, what) {
  /** @type {NodeJS.Timeout | undefined} */
  let timer
  const deadline = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms)
    timer.unref()
  })
  const raced = Promise.race([promise, deadline]).finally(() => clearTimeout(timer))
  return /** @type {Promise<T>} */ (raced)
}

/**
 * A port that was free a moment ago (bind 127.0.0.1:0, read it, close). Racy by nature:
 * start* helpers that need one retry on a bind failure.
 * @returns {Promise<number>}
 */
export function freePort () {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = /** @type {net.AddressInfo} */ (s.address()).port
      s.close(() => resolve(port))
    })
  })
}

/**
 * A new temp dir, removed by killAll() (on exit) unless `keep`.
 * @param {string} prefix
 * @param {boolean} [keep]
 */
export function makeTempDir (prefix, keep = false) {
  const d = mkdtempSync(path.join(os.tmpdir(), `${prefix}-`))
  if (!keep) tempDirs.add(d)
  return d
}

/**
 * Resolve once a TCP connect to host:port succeeds; reject at the deadline.
 * @param {number} port
 * @param {{ host?: string, timeoutMs?: number, child?: Child }} [opts]
 *   child: fail early if it exits
 */
export async function waitForPort (port, opts = {}) {
  const host = opts.host ?? '127.0.0.1'
  const until = Date.now() + (opts.timeoutMs ?? 10000)
  for (let i = 0; i < 10000 && Date.now() < until; i++) {
    if (opts.child && !opts.child.alive()) {
      throw childError(`${opts.child.name} exited before listening`, opts.child)
    }
    const ok = await new Promise((resolve) => {
      const s = net.connect({ host, port })
      s.once('connect', () => { s.destroy(); resolve(true) })
      s.once('error', () => resolve(false))
      s.setTimeout(500, () => { s.destroy(); resolve(false) })
    })
    if (ok) return
    await sleep(25)
  }
  throw new Error(`nothing listening on ${host}:${port} within ${opts.timeoutMs ?? 10000} ms`)
}

/** The hard limit on open files of this process (children inherit it). */
export function nofileHardLimit () {
  try {
    const m = /^Max open files\s+\S+\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
    if (m) return m[1] === 'unlimited' ? 1 << 20 : Number(m[1])
  } catch {}
  return 1024
}

// ---- /proc ----------------------------------------------------------------------------------

let clkTck = 100
try {
  clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
} catch {}

/**
 * User + system CPU time of a process so far, in seconds (/proc/<pid>/stat fields 14 and 15).
 * NaN when the process is gone.
 * @param {number} pid
 */
export function cpuSeconds (pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) may hold spaces: count fields after its closing paren.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) / clkTck
  } catch {
    return NaN
  }
}

/**
 * Resident memory of a process, KiB: now (VmRSS) and its peak (VmHWM). NaN when gone.
 * @param {number} pid
 * @returns {{ rss: number, hwm: number }}
 */
export function memKiB (pid) {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8')
    const field = (/** @type {string} */ k) => {
      const m = new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)
      return Number(m?.[1] ?? NaN)
    }
    return { rss: field('VmRSS'), hwm: field('VmHWM') }
  } catch {
    return { rss: NaN, hwm: NaN }
  }
}

/**
 * How many IPv4 TCP connections to 127.0.0.1:port are established, seen from the connecting
 * side (/proc/net/tcp rows whose remote port is `port`, state 01). Counts every process's.
 * @param {number} port
 */
export function establishedTo (port) {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`
  let n = 0
  try {
    for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/)
      if (f.length > 3 && f[2]?.endsWith(hex) && f[3] === '01') n++
    }
  } catch {}
  return n
}

/**
 * Jiffies of the whole machine from /proc/stat: [busy, total].
 * @returns {[number, number]}
 */
function cpuJiffies () {
  const [cpu = ''] = readFileSync('/proc/stat', 'utf8').split('\n')
  const f = cpu.trim().split(/\s+/).slice(1).map(Number)
  const total = f.reduce((a, b) => a + b, 0)
  const idle = (f[3] ?? NaN) + (f[4] ?? 0) // idle + iowait
  return [total - idle, total]
}

/**
 * How busy the machine's CPUs are over `ms` (0..1, all cores together), e.g. to see whether
 * something else is running before a measurement.
 * @param {number} ms
 */
export async function machineBusy (ms) {
  try {
    const [b0, t0] = cpuJiffies()
    await sleep(ms)
    const [b1, t1] = cpuJiffies()
    return t1 > t0 ? (b1 - b0) / (t1 - t0) : NaN
  } catch {
    return NaN
  }
}

// ---- statistics -----------------------------------------------------------------------------

/**
 * The p-th percentile (0..100) of an ascending array, nearest rank. NaN when empty.
 * @param {ArrayLike<number>} sorted
 * @param {number} p
 */
export function percentile (sorted, p) {
  if (sorted.length === 0) return NaN
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))] ?? NaN // in range
}

/**
 * The median (mean of the middle two for an even count). NaN when empty; NaNs are ignored.
 * @param {number[]} xs
 */
export function median (xs) {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b)
  if (s.length === 0) return NaN
  const m = s.length >> 1
  const hi = s[m] ?? NaN // m < s.length, and m >= 1 when the length is even
  return s.length % 2 ? hi : ((s[m - 1] ?? NaN) + hi) / 2
}

/**
 * Median and spread of repetitions (NaNs ignored; n counts the rest).
 * @param {number[]} xs
 * @returns {Summary}
 */
export function summarize (xs) {
  const s = xs.filter((x) => !Number.isNaN(x))
  return {
    median: median(s),
    min: s.length ? Math.min(...s) : NaN,
    max: s.length ? Math.max(...s) : NaN,
    n: s.length,
  }
}

// ---- servers --------------------------------------------------------------------------------

/**
 * Bind failures (a "free" port taken meanwhile) are retried this many times.
 * @template T
 * @param {() => Promise<T>} attempt
 */
async function withPortRetry (attempt) {
  /** @type {unknown} */
  let last
  for (let i = 0; i < 3; i++) {
    try { return await attempt() } catch (err) { last = err }
  }
  throw last
}

/**
 * @param {Child} child
 * @param {number} port
 * @returns {Server}
 */
function server (child, port) {
  return { port, pid: child.pid, child, stop: (graceMs) => child.stop(graceMs) }
}

/**
 * A redis-server copy: no persistence, its own working dir, ready once it answers a connect.
 * @param {{ dir?: string, timeoutMs?: number, args?: string[] }} [opts]
 *   args: extra redis-server flags
 * @returns {Promise<Server>}
 */
export function startRedis (opts = {}) {
  return withPortRetry(async () => {
    const port = await freePort()
    const dir = opts.dir ?? makeTempDir('bench-redis')
    const child = spawnChild('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', dir, '--daemonize', 'no', '--loglevel', 'warning', '--protected-mode', 'no',
      ...(opts.args ?? []),
    ], { name: `redis:${port}` })
    try {
      await waitForPort(port, { timeoutMs: opts.timeoutMs ?? 10000, child })
    } catch (err) {
      await child.stop(500)
      throw err
    }
    return server(child, port)
  })
}

/**
 * bench/echo.mjs on a port of its choosing (it prints {"event":"listening","port":N}).
 * @param {{ timeoutMs?: number }} [opts]
 * @returns {Promise<Server>}
 */
export async function startEcho (opts = {}) {
  /** @type {(port: number) => void} */
  let onPort = () => {}
  const ported = /** @type {Promise<number>} */ (new Promise((resolve) => { onPort = resolve }))
  const script = path.join(ROOT, 'bench', 'echo.mjs')
  const child = spawnChild(process.execPath, [script, '--port', '0'], {
    name: 'echo',
    onLine: (line) => {
      if (!line.startsWith('{')) return
      try {
        const ev = JSON.parse(line)
        if (ev.event === 'listening') onPort(ev.port)
      } catch {}
    },
  })
  try {
    const port = await withDeadline(Promise.race([ported, child.exited.then(() => {
      throw childError('echo server exited before listening', child)
    })]), opts.timeoutMs ?? 10000, 'echo server start')
    child.name = `echo:${port}`
    return server(child, port)
  } catch (err) {
    await child.stop(500)
    throw err
  }
}

/**
 * HAProxy 2.6 in `mode tcp` in front of the given backends (round robin when several), its
 * config generated in `dir`. Run in the foreground (-db), killed with the rest.
 * @param {{ backends: number[], dir?: string, maxconn?: number, timeoutMs?: number }} opts
 * @returns {Promise<Server & { config: string }>}
 */
export function startHaproxy (opts) {
  return withPortRetry(async () => {
    const port = await freePort()
    const dir = opts.dir ?? makeTempDir('bench-haproxy')
    const config = path.join(dir, `haproxy-${port}.cfg`)
    writeFileSync(config, [
      'global',
      `  maxconn ${opts.maxconn ?? 20000}`,
      // The fd hard limit may be below the 2 x maxconn HAProxy wants (20000 in this sandbox):
      // warn and run with it rather than refuse to start.
      '  no strict-limits',
      '  log stderr format raw local0 err',
      'defaults',
      '  mode tcp',
      '  timeout connect 5s',
      '  timeout client 1m',
      '  timeout server 1m',
      'frontend fe',
      `  bind 127.0.0.1:${port}`,
      '  default_backend be',
      'backend be',
      '  balance roundrobin',
      ...opts.backends.map((p, i) => `  server s${i} 127.0.0.1:${p}`),
      '',
    ].join('\n'))
    const child = spawnChild('/usr/sbin/haproxy', ['-f', config, '-db'], {
      name: `haproxy:${port}`,
    })
    try {
      await waitForPort(port, { timeoutMs: opts.timeoutMs ?? 10000, child })
    } catch (err) {
      await child.stop(500)
      throw err
    }
    return { ...server(child, port), config }
  })
}

/**
 * The front's YAML config.
 * @param {{
 *   port: number, stateDir: string, replicas: FrontReplica[], outputCommit: string,
 *   maxConnections: number, logLevel: string, extraYaml?: string, protocol?: string,
 * }} o
 */
export function frontConfigYaml (o) {
  return [
    `listen: 127.0.0.1:${o.port}`,
    `state_dir: ${JSON.stringify(o.stateDir)}`,
    `output_commit: ${o.outputCommit}`,
    ...(o.protocol !== undefined ? [`protocol: ${o.protocol}`] : []),
    'replicas:',
    ...o.replicas.flatMap((r) => [
      `  - name: ${r.name}`,
      r.agent !== undefined ? `    agent: ${r.agent}` : `    address: ${r.address}`,
      // JSON is YAML flow: every argument quoted as it is.
      ...(r.command !== undefined ? [`    command: ${JSON.stringify(r.command)}`] : []),
    ]),
    `limits: { max_connections: ${o.maxConnections} }`,
    `log: { level: ${o.logLevel}, format: json }`,
    o.extraYaml ?? '',
    '',
  ].join('\n')
}

/**
 * An ftproxy front as a child process (`bash -c 'ulimit -n N && exec node bin/ftproxy run'`,
 * so the pid is node's), from a generated config; resolves once it logged `listening`.
 * Listens on port 0; the bound port comes from the event. Needs `npm run build` first.
 * @param {FrontOptions} opts
 * @returns {Promise<Front>}
 */
export async function startFront (opts) {
  const dir = opts.dir ?? makeTempDir('bench-front')
  const config = path.join(dir, `ftproxy-${Date.now()}-${Math.floor(Math.random() * 1e6)}.yaml`)
  const stateDir = path.join(dir, `state-${path.basename(config, '.yaml')}`)
  writeFileSync(config, frontConfigYaml({
    port: 0,
    stateDir,
    replicas: opts.replicas,
    outputCommit: opts.outputCommit ?? 'ack',
    protocol: opts.protocol,
    maxConnections: opts.maxConnections ?? 20000,
    logLevel: opts.logLevel ?? 'info',
    extraYaml: opts.extraYaml,
  }))
  const nofile = opts.nofile ?? Math.min(65536, nofileHardLimit())
  const q = (/** @type {string} */ s) => `'${s.replace(/'/g, "'\\''")}'`
  const node = q(process.execPath)
  const nodeArgs = (opts.nodeArgs ?? []).map(q).join(' ')
  const bin = q(path.join(ROOT, 'bin', 'ftproxy'))
  const cmd = `ulimit -n ${nofile} && exec ${node} ${nodeArgs} ${bin} run --config ${q(config)}`
  /** @type {Record<string, unknown>[]} */
  const events = []
  /** @type {(port: number) => void} */
  let onListening = () => {}
  /** @type {(err: Error) => void} */
  let onFailed = () => {}
  const listening = /** @type {Promise<number>} */ (new Promise((resolve, reject) => {
    onListening = resolve
    onFailed = reject
  }))
  const child = spawnChild('bash', ['-c', cmd], {
    name: `ftproxy:${opts.outputCommit ?? 'ack'}${opts.protocol ? `/${opts.protocol}` : ''}`,
    onLine: eventLines(events, onListening, (ev) => {
      opts.onEvent?.(ev)
      if (ev.event !== 'startup_failed') return
      onFailed(new Error(`ftproxy startup_failed: ${String(ev.code)} ${String(ev.error)}`))
    }),
  })
  try {
    const port = await withDeadline(Promise.race([listening, child.exited.then((x) => {
      const how = `code ${x.code}, signal ${x.signal}`
      throw childError(`ftproxy exited (${how}) before listening`, child)
    })]), opts.timeoutMs ?? 15000, 'ftproxy listening')
    return { ...server(child, port), events, config, dir }
  } catch (err) {
    await child.stop(500)
    throw err
  }
}

/**
 * A child's stdout line handler for ftproxy's JSON log: keeps the events (at most 2000) and
 * reports the port of its `listening` event.
 * @param {Record<string, unknown>[]} events
 * @param {(port: number) => void} onListening
 * @param {(ev: Record<string, unknown>) => void} [onEvent]
 * @returns {(line: string) => void}
 */
function eventLines (events, onListening, onEvent) {
  return (line) => {
    if (!line.startsWith('{')) return
    /** @type {Record<string, unknown>} */
    let ev
    try { ev = JSON.parse(line) } catch { return }
    if (events.length < 2000) events.push(ev)
    if (ev.event === 'listening' && typeof ev.address === 'string') {
      onListening(Number(ev.address.slice(ev.address.lastIndexOf(':') + 1)))
    }
    onEvent?.(ev)
  }
}

/**
 * An ftproxy agent as a child process (`node bin/ftproxy agent`, so the pid is node's) beside
 * the server on `server` (loopback, no TLS), its state dir in `dir`; listens on port 0 and
 * resolves once it logged `listening` (the bound port comes from the event). Needs
 * `npm run build` first.
 * @param {{ server: number, dir?: string, timeoutMs?: number }} opts
 * @returns {Promise<Server & { events: Record<string, unknown>[] }>}
 *   events: every JSON log line of the agent, in order (at most 2000 kept)
 */
export async function startAgent (opts) {
  const dir = opts.dir ?? makeTempDir('bench-agent')
  const unique = `${opts.server}-${Date.now()}-${Math.floor(Math.random() * 1e6)}`
  const stateDir = path.join(dir, `agent-state-${unique}`)
  /** @type {Record<string, unknown>[]} */
  const events = []
  /** @type {(port: number) => void} */
  let onListening = () => {}
  const listening = /** @type {Promise<number>} */ (new Promise((resolve) => {
    onListening = resolve
  }))
  const child = spawnChild(process.execPath, [
    path.join(ROOT, 'bin', 'ftproxy'), 'agent',
    '--listen', '127.0.0.1:0', '--server', `127.0.0.1:${opts.server}`, '--state-dir', stateDir,
  ], {
    name: `agent:${opts.server}`,
    onLine: eventLines(events, onListening),
  })
  try {
    const port = await withDeadline(Promise.race([listening, child.exited.then((x) => {
      const how = `code ${x.code}, signal ${x.signal}`
      throw childError(`ftproxy agent exited (${how}) before listening`, child)
    })]), opts.timeoutMs ?? 15000, 'ftproxy agent listening')
    child.name = `agent:${port}->${opts.server}`
    return { ...server(child, port), events }
  } catch (err) {
    await child.stop(500)
    throw err
  }
}
