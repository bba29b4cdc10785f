// @ts-check
// Re-protection drill: `npm run drill -- --reprotect [--keys N] [--rounds N] [--quick]
// [--conns N] [--window N] [--value-bytes N] [--min-uptime S] [--round-timeout S] [--out NAME]`
//
// One ftproxy front (child process; protocol resp, output_commit ack, the Redis recipe:
// reseed.command config/reseed-redis.sh, open_connections reattach, auto) in front of two
// redis-server copies it starts and supervises itself (--rdb-del-sync-files yes, each in a dir
// of its own). It preloads --keys keys through the front (MSET batches, pipelined), then starts
// the load, which runs until the end: --conns RESP connections, each with at most --window
// commands unanswered, cycling INCR of a counter all connections share (8 of them), SET of a
// unique value, INCR of the connection's own counter, SET of a unique value (the SETs go to 100
// keys per connection in turn).
//
// Each round: wait until GET /status says protected (both replicas primary/backup, no re-seed
// running) and until the primary's server has run --min-uptime seconds (the supervisor's restart
// backoff, 500 ms doubling, is reset only by a server that stayed up 10 s: without the wait the
// drill would measure that backoff, not the re-seed); `kill -9` the primary's redis-server (pid
// from /status); poll /status every 10 ms until it is protected again by a new re-seed (bounded:
// --round-timeout). Per round: kill → protected again (ms, client clock), the phases from the
// front's events (failover, restart, reseed_started, reseeded), the pause at the cut, the
// connections closed.
//
// The cut pause (client side): the cut is [at − pause_ms, at] of the `reseeded` event (`at` is
// wall-clock, taken right after the cut; the drill's clock is mapped with performance.timeOrigin,
// ±1 ms for the rounding of `at`). Per connection, each interval between two consecutive reply
// arrivals that overlaps the cut is a client-visible pause; the round's figure is the longest
// over all connections. Beside it: the front's own pause_ms, the longest gap across the kill
// (the failover, as clients see it) and the longest gap before the kill (the background, what
// this load shows on this machine without any failure).
//
// At the end the load stops and every reply is in; then each copy, asked directly (the final
// primary and the backup): every preloaded key holds its value; every counter equals its
// acknowledged INCRs (none lost, none twice; every shared counter's replies were distinct,
// every own counter's were 1, 2, 3 …); every SET key holds the last value its connection wrote
// there; no connection was dropped. Results: bench/results/reprotect.md and reprotect.json
// (--out NAME: NAME.md and NAME.json).
// The front's log (its JSON lines) is kept in /tmp/reprotect-front.log.
// Exit 1 if anything was lost, duplicated, dropped or wrong, or a round was not protected again.

import { appendFileSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import {
  ROOT, cpuSeconds, freePort, installCleanup, makeTempDir, median, memKiB, sleep, startFront,
  withDeadline,
} from './lib.mjs'
import { RespClient, RespError } from './resp.mjs'

/** @typedef {import('./resp.mjs').RespReply} RespReply */
/** @typedef {Record<string, unknown> & { event?: string }} LogEvent */
/** @typedef {{ ev: LogEvent, at: number }} Arrived   an event and when it came (perf clock) */

const { values: opts } = parseArgs({
  options: {
    reprotect: { type: 'boolean', default: false }, // how drill.mjs sends us here
    keys: { type: 'string' },
    rounds: { type: 'string' },
    quick: { type: 'boolean', default: false },
    conns: { type: 'string' },
    window: { type: 'string' },
    'value-bytes': { type: 'string' },
    'min-uptime': { type: 'string' },
    'round-timeout': { type: 'string' },
    out: { type: 'string', default: 'reprotect' },
  },
  strict: true,
})

/**
 * @param {string | undefined} s
 * @param {number} dflt
 * @param {string} name
 * @param {number} min
 * @param {number} max
 */
function intOpt (s, dflt, name, min, max) {
  const v = s === undefined ? dflt : Number(s)
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new Error(`--${name}: an integer ${min}..${max}`)
  }
  return v
}

const QUICK = opts.quick === true
const KEYS = intOpt(opts.keys, QUICK ? 10000 : 100000, 'keys', 0, 50_000_000)
const ROUNDS = intOpt(opts.rounds, QUICK ? 3 : 20, 'rounds', 1, 1000)
const CONNS = intOpt(opts.conns, QUICK ? 16 : 50, 'conns', 1, 5000)
const WINDOW = intOpt(opts.window, 8, 'window', 1, 10000)
const VALUE_BYTES = intOpt(opts['value-bytes'], 64, 'value-bytes', 16, 1 << 20)
const MIN_UPTIME_MS = 1000 * intOpt(opts['min-uptime'], 11, 'min-uptime', 0, 600)
const ROUND_TIMEOUT_MS = 1000 * intOpt(opts['round-timeout'], 60, 'round-timeout', 1, 3600)
const OUT = String(opts.out)
if (!/^[\w-]+$/.test(OUT)) throw new Error('--out: a file name without extension ([A-Za-z0-9_-])')

const SHARED = 8 // counters every connection increments in turn
const SLOTS = 100 // SET keys per connection, written in turn
const MSET_BATCH = 100 // preloaded keys per MSET
const PRELOAD_CONNS = 4
const PRELOAD_WINDOW = 16 // MSETs in flight per preload connection
const STATUS_POLL_MS = 10
const RESULTS = path.join(ROOT, 'bench', 'results')
const LOG_COPY = '/tmp/reprotect-front.log'
const RESEED_SCRIPT = path.join(ROOT, 'config', 'reseed-redis.sh')
const BAD_EVENTS = ['divergence', 'splice_failed', 'serving_stopped', 'arbiter_lost',
  'arbiter_error', 'reseed_failed']

installCleanup()

/** @param {number} x */
const ms1 = (x) => Math.round(x * 10) / 10

/** @param {unknown} err */
const errText = (err) => (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? ''

/**
 * Poll fn() (bounded in time) until it returns something truthy; resolves to that.
 * @template T
 * @param {() => Promise<T> | T} fn
 * @param {string} what
 * @param {number} ms
 * @param {number} [every]
 * @returns {Promise<NonNullable<T>>}
 */
async function poll (fn, what, ms, every = 50) {
  const deadline = performance.now() + ms
  for (;;) {
    const v = await fn()
    if (v) return /** @type {NonNullable<T>} */ (v)
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`)
    await sleep(every)
  }
}

// ---- the machine ------------------------------------------------------------------------------

/**
 * CPU seconds of /proc/<pid>/stat fields 14..17 (utime, stime, cutime, cstime): a process and
 * the children it reaped. 0 when gone.
 * @param {number} pid
 */
function treeCpuS (pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').slice(11, 15).map(Number)
    return f.reduce((a, b) => a + b, 0) / 100 // USER_HZ
  } catch {
    return 0
  }
}

/**
 * CPU seconds so far: the machine's (user, nice, system over all cores) and ours (this
 * process, the front with what it reaped: killed servers, re-seed commands, and the servers
 * running now).
 * @param {Ctx} ctx
 */
function cpuNow (ctx) {
  const [cpu = ''] = readFileSync('/proc/stat', 'utf8').split('\n')
  const [, user = 0, nice = 0, system = 0] = cpu.trim().split(/\s+/).map(Number)
  const self = process.cpuUsage()
  let ours = (self.user + self.system) / 1e6 + treeCpuS(ctx.front.pid)
  for (const p of ctx.pids) ours += cpuSeconds(p) || 0
  return { machine: (user + nice + system) / 100, ours, at: performance.now() }
}

/**
 * The share of the machine's CPU (all cores) that other processes took since `from`, in %.
 * @param {Ctx} ctx
 * @param {ReturnType<typeof cpuNow>} from
 */
function foreignCpu (ctx, from) {
  const to = cpuNow(ctx)
  const wall = (to.at - from.at) / 1000 * os.availableParallelism()
  if (!(wall > 0)) return null
  const foreign = to.machine - from.machine - (to.ours - from.ours)
  return Math.max(0, Math.round(100 * foreign / wall))
}

// ---- the keys ---------------------------------------------------------------------------------

const preKey = (/** @type {number} */ i) => `key:${i}`
const preValue = (/** @type {number} */ i) => `v${i}:`.padEnd(VALUE_BYTES, 'x')
const sharedKey = (/** @type {number} */ j) => `rp:shared:${j}`
const ownKey = (/** @type {number} */ c) => `rp:own:${c}`
const slotKey = (/** @type {number} */ c, /** @type {number} */ s) => `rp:set:${c}:${s}`
const setValue = (/** @type {number} */ c, /** @type {number} */ n) => `${c}:${n}`

/**
 * Command k of connection c (k from 0): 4m INCR shared, 4m+2 INCR own, odd: SET number
 * (k-1)/2 of the connection (slot n % SLOTS).
 * @param {number} c
 * @param {number} k
 * @returns {{ kind: 'shared', j: number } | { kind: 'own' } | { kind: 'set', n: number }}
 */
function commandOf (c, k) {
  if (k % 2 === 1) return { kind: 'set', n: (k - 1) / 2 }
  if (k % 4 === 2) return { kind: 'own' }
  return { kind: 'shared', j: (c + k / 4) % SHARED }
}

/** @param {string[]} args */
const resp = (args) => {
  return `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')
}

// ---- the front --------------------------------------------------------------------------------

/**
 * @typedef {object} Ctx
 * @property {import('./lib.mjs').Front} front
 * @property {string} dir
 * @property {string} logPath
 * @property {number} admin                   admin port
 * @property {Record<string, number>} ports   replica name → redis port
 * @property {Arrived[]} events
 * @property {Map<string, number>} startedAt  replica → when its server last started (perf)
 * @property {Set<number>} pids               every redis-server pid the front started
 */

/**
 * The front and its two supervised redis copies; resolves once /status answers.
 * @returns {Promise<Ctx>}
 */
async function setup () {
  const dir = makeTempDir('ftproxy-reprotect')
  const logPath = path.join(dir, 'front.log')
  /** @type {Record<string, number>} */
  const ports = { a: await freePort(), b: 0 }
  do ports.b = await freePort(); while (ports.b === ports.a)
  const replicas = ['a', 'b'].map((name) => {
    const rdir = path.join(dir, name)
    mkdirSync(rdir)
    const port = String(ports[name])
    return {
      name,
      address: `127.0.0.1:${port}`,
      command: ['redis-server', '--port', port, '--bind', '127.0.0.1', '--save', '',
        '--appendonly', 'no', '--loglevel', 'warning', '--rdb-del-sync-files', 'yes',
        '--dir', rdir],
    }
  })
  /** @type {Arrived[]} */
  const events = []
  const startedAt = new Map()
  const pids = new Set()
  const onEvent = (/** @type {LogEvent} */ ev) => {
    const at = performance.now()
    events.push({ ev, at })
    appendFileSync(logPath, JSON.stringify(ev) + '\n')
    if (ev.event === 'replica_process_started') {
      startedAt.set(String(ev.replica), at)
      pids.add(Number(ev.pid))
    }
  }
  process.on('exit', () => { for (const p of pids) signal(p, 'SIGKILL') })
  const front = await startFront({
    replicas,
    protocol: 'resp',
    outputCommit: 'ack',
    dir,
    onEvent,
    timeoutMs: 30000,
    extraYaml: [
      'admin: { listen: 127.0.0.1:0 }',
      `reseed: { command: [${JSON.stringify(RESEED_SCRIPT)}], timeout: 60s, ` +
        'open_connections: reattach, auto: true }',
    ].join('\n'),
  })
  const adminEv = await poll(() => events.find((e) => e.ev.event === 'admin_listening'),
    'admin_listening', 10000)
  const address = String(adminEv.ev.address)
  const admin = Number(address.slice(address.lastIndexOf(':') + 1))
  return { front, dir, logPath, admin, ports, events, startedAt, pids }
}

/**
 * @param {number} pid
 * @param {NodeJS.Signals} sig
 */
function signal (pid, sig) {
  try { process.kill(pid, sig) } catch {}
}

/**
 * @typedef {{ name: string, role: string, health: string, pid?: number }} ReplicaStatus
 * @typedef {object} Status
 * @property {string} primary
 * @property {boolean} protected
 * @property {boolean} serving
 * @property {ReplicaStatus[]} replicas
 * @property {number} log_bytes
 * @property {{ running: string | null, total: number, failed: number }} reseed
 */

/**
 * GET /status (bounded).
 * @param {Ctx} ctx
 * @returns {Promise<Status>}
 */
async function status (ctx) {
  const res = await fetch(`http://127.0.0.1:${ctx.admin}/status`, {
    signal: AbortSignal.timeout(5000),
  })
  if (!res.ok) throw new Error(`GET /status: HTTP ${res.status}`)
  return /** @type {Status} */ (await res.json())
}

/**
 * GET /status, or null when it does not answer (polls go on).
 * @param {Ctx} ctx
 */
const statusOrNull = (ctx) => status(ctx).catch(() => null)

/**
 * Protected in the full sense: serving, one primary and one backup, no re-seed under way.
 * @param {Status | null} st
 * @returns {st is Status}
 */
function fullyProtected (st) {
  if (st === null) return false
  const roles = st.replicas.map((r) => r.role).sort().join(',')
  return st.protected && st.serving && st.reseed.running === null && roles === 'backup,primary'
}

/**
 * SIGTERM the front (it stops the redis copies it supervises); then no redis of ours is left.
 * @param {Ctx} ctx
 * @param {string[]} problems
 */
async function teardown (ctx, problems) {
  signal(ctx.front.pid, 'SIGTERM')
  const exit = await withDeadline(ctx.front.child.exited, 15000, 'front exit').catch(() => null)
  if (exit === null) problems.push('the front did not exit within 15 s of SIGTERM')
  else if (exit.code !== 0) problems.push(`the front exited with code ${exit.code}`)
  const alive = (/** @type {number} */ p) => {
    try { process.kill(p, 0); return true } catch { return false }
  }
  await poll(() => ![...ctx.pids].some(alive), 'redis gone', 5000).catch(() => {
    problems.push(`redis left after the front exited: ${[...ctx.pids].filter(alive).join(', ')}`)
  })
  for (const p of ctx.pids) signal(p, 'SIGKILL')
  await ctx.front.stop(500)
}

// ---- preload ----------------------------------------------------------------------------------

/**
 * KEYS keys through the front: MSET batches, PRELOAD_WINDOW in flight per connection.
 * @param {number} port
 */
async function preload (port) {
  const batches = Math.ceil(KEYS / MSET_BATCH)
  let next = 0
  let done = 0
  const clients = await Promise.all(Array.from({ length: PRELOAD_CONNS },
    () => RespClient.connect(port)))
  /** @type {string[]} */
  const bad = []
  const send = (/** @type {RespClient} */ cl) => {
    while (next < batches && cl.sent - cl.received < PRELOAD_WINDOW) {
      const args = ['MSET']
      const end = Math.min(KEYS, (next + 1) * MSET_BATCH)
      for (let i = next * MSET_BATCH; i < end; i++) args.push(preKey(i), preValue(i))
      next++
      cl.sendRaw(resp(args), 1)
    }
  }
  for (const cl of clients) {
    cl.onReplies = (replies) => {
      done += replies.length
      for (const r of replies) if (r !== 'OK' && bad.length < 5) bad.push(String(r))
      send(cl)
    }
    send(cl)
  }
  await poll(() => done >= batches || clients.some((c) => c.closed), 'preload', 600000)
  for (const cl of clients) cl.destroy()
  if (done < batches || bad.length) {
    throw new Error(`preload: ${done} of ${batches} MSETs answered; ${bad.join('; ')}`)
  }
}

// ---- the load ---------------------------------------------------------------------------------

/** Reply arrival times of one connection (perf clock), growing as needed. */
class TimeLog {
  constructor () {
    this.buf = new Float64Array(4096)
    this.n = 0
  }

  /** @param {number} t */
  push (t) {
    if (this.n === this.buf.length) {
      const bigger = new Float64Array(this.buf.length * 2)
      bigger.set(this.buf)
      this.buf = bigger
    }
    this.buf[this.n++] = t
  }

  /** Forget all but the last arrival (the start of the next interval). */
  reset () {
    if (this.n > 0) this.buf[0] = this.buf[this.n - 1] ?? 0
    this.n = Math.min(this.n, 1)
  }
}

/** Which values a shared counter's replies took (a value twice = an INCR counted twice). */
class Seen {
  constructor () { this.bits = new Uint8Array(1 << 16) }

  /**
   * @param {number} v
   * @returns {boolean}  false: seen before
   */
  add (v) {
    const i = v >> 3
    if (i >= this.bits.length) {
      const bigger = new Uint8Array(Math.max(i + 1, this.bits.length * 2))
      bigger.set(this.bits)
      this.bits = bigger
    }
    const m = 1 << (v & 7)
    const had = ((this.bits[i] ?? 0) & m) !== 0
    this.bits[i] = (this.bits[i] ?? 0) | m
    return !had
  }
}

/**
 * @typedef {object} Conn
 * @property {number} id
 * @property {RespClient} client
 * @property {TimeLog} times
 * @property {number} ownSent
 * @property {number} ownAcked
 * @property {Int32Array} slotSent    per slot: n of the last SET written (-1: none)
 * @property {Int32Array} slotAcked   per slot: n of the last SET answered OK
 * @property {number} wrong
 * @property {string[]} samples
 */

class Load {
  /** @param {Conn[]} conns */
  constructor (conns) {
    this.conns = conns
    this.sharedSent = new Int32Array(SHARED)
    this.sharedAcked = new Int32Array(SHARED)
    this.seen = Array.from({ length: SHARED }, () => new Seen())
    this.dupReplies = 0
    this.stopping = false
    this.started = performance.now()
    this.stoppedAt = 0
    for (const c of conns) {
      c.client.onReplies = (replies, first, at) => {
        c.times.push(at)
        for (let i = 0; i < replies.length; i++) this.take(c, first + i, replies[i] ?? null)
        this.pump(c)
      }
    }
  }

  /**
   * CONNS connections to the front, sending at once.
   * @param {number} port
   */
  static async start (port) {
    const clients = await withDeadline(Promise.all(Array.from({ length: CONNS },
      () => RespClient.connect(port))), 10000, 'load connects')
    const load = new Load(clients.map((client, id) => ({
      id,
      client,
      times: new TimeLog(),
      ownSent: 0,
      ownAcked: 0,
      slotSent: new Int32Array(SLOTS).fill(-1),
      slotAcked: new Int32Array(SLOTS).fill(-1),
      wrong: 0,
      samples: [],
    })))
    for (const c of load.conns) load.pump(c)
    return load
  }

  /** @param {Conn} c */
  pump (c) {
    const cl = c.client
    if (this.stopping || cl.closed) return
    const to = cl.received + WINDOW
    let s = ''
    for (let k = cl.sent; k < to; k++) {
      const cmd = commandOf(c.id, k)
      if (cmd.kind === 'shared') {
        this.sharedSent[cmd.j] = (this.sharedSent[cmd.j] ?? 0) + 1
        s += resp(['INCR', sharedKey(cmd.j)])
      } else if (cmd.kind === 'own') {
        c.ownSent++
        s += resp(['INCR', ownKey(c.id)])
      } else {
        c.slotSent[cmd.n % SLOTS] = cmd.n
        s += resp(['SET', slotKey(c.id, cmd.n % SLOTS), setValue(c.id, cmd.n)])
      }
    }
    if (s) cl.sendRaw(s, to - cl.sent)
  }

  /**
   * Reply k of connection c: what it acknowledges, and whether it is what it must be.
   * @param {Conn} c
   * @param {number} k
   * @param {RespReply} got
   */
  take (c, k, got) {
    const cmd = commandOf(c.id, k)
    let ok = typeof got === 'number'
    if (cmd.kind === 'shared') {
      if (typeof got === 'number') {
        this.sharedAcked[cmd.j] = (this.sharedAcked[cmd.j] ?? 0) + 1
        if (!(this.seen[cmd.j]?.add(got) ?? true)) {
          this.dupReplies++
          this.wrongReply(c, `${sharedKey(cmd.j)} answered ${got} twice`)
        }
      }
    } else if (cmd.kind === 'own') {
      ok = got === c.ownAcked + 1
      if (typeof got === 'number') c.ownAcked++
    } else {
      ok = got === 'OK'
      if (ok) c.slotAcked[cmd.n % SLOTS] = cmd.n
    }
    if (!ok) {
      const shown = got instanceof RespError ? '-' + got.message : JSON.stringify(got)
      this.wrongReply(c, `reply #${k} (${cmd.kind}): ${shown}`)
    }
  }

  /**
   * @param {Conn} c
   * @param {string} what
   */
  wrongReply (c, what) {
    c.wrong++
    if (c.samples.length < 5) c.samples.push(what)
  }

  /** Stop sending; resolves once every command was answered (or its connection is gone). */
  async stop () {
    this.stopping = true
    const settled = () => this.conns.every((c) => c.client.received >= c.client.sent ||
      c.client.closed)
    await poll(settled, 'every reply of the load', 60000, 10)
    this.stoppedAt = performance.now()
  }

  get replies () {
    return this.conns.reduce((n, c) => n + c.client.received, 0)
  }
}

/**
 * The longest interval between two consecutive replies of any connection for which
 * pick(start, end) holds; the interval still open at `now` counts too.
 * @param {Load} load
 * @param {(a: number, b: number) => boolean} pick
 * @param {number} now
 */
function longestGap (load, pick, now) {
  let worst = 0
  for (const c of load.conns) {
    const { buf, n } = c.times
    for (let i = 0; i < n; i++) {
      const a = buf[i] ?? 0
      const b = i + 1 < n ? (buf[i + 1] ?? 0) : now
      if (b - a > worst && pick(a, b)) worst = b - a
    }
  }
  return ms1(worst)
}

// ---- one round --------------------------------------------------------------------------------

/**
 * @typedef {object} RoundResult
 * @property {number} round
 * @property {string | null} killed    the primary whose redis got kill -9
 * @property {number | null} pid
 * @property {number | null} keys      DBSIZE of the primary just before the kill
 * @property {number | null} protectedMs     kill → /status protected again (client clock)
 * @property {number | null} failoverMs      kill → `failover` event arrived
 * @property {number | null} restartDelayMs  the supervisor's delay before the restart
 * @property {number | null} restartedMs     kill → `replica_process_started` arrived
 * @property {number | null} reseedStartMs   kill → `reseed_started` arrived
 * @property {number | null} reseedMs        `reseeded` duration_ms (the whole re-seed)
 * @property {number | null} pauseMs         `reseeded` pause_ms (input held, the front's count)
 * @property {number | null} cutGapMs        client-visible pause across the cut (see header)
 * @property {number | null} killGapMs       longest reply gap across the kill
 * @property {number | null} backgroundGapMs longest reply gap before the kill
 * @property {number | null} closed
 * @property {number | null} reattached
 * @property {number} reseedFailures  `reseed_failed` events in the round
 * @property {string[]} reseedErrors   their `error`, after how long (from the kill)
 * @property {number | null} frontRssMiB   the front's RSS just before the kill
 * @property {number | null} logBytes      /status log_bytes just before the kill
 * @property {number | null} foreignCpuPct  CPU other processes took in the round (% of all)
 * @property {string[]} problems
 * @property {boolean} ok
 */

/**
 * @param {number} round
 * @returns {RoundResult}
 */
function newRound (round) {
  return {
    round,
    killed: null,
    pid: null,
    keys: null,
    protectedMs: null,
    failoverMs: null,
    restartDelayMs: null,
    restartedMs: null,
    reseedStartMs: null,
    reseedMs: null,
    pauseMs: null,
    cutGapMs: null,
    killGapMs: null,
    backgroundGapMs: null,
    closed: null,
    reattached: null,
    reseedFailures: 0,
    reseedErrors: [],
    frontRssMiB: null,
    logBytes: null,
    foreignCpuPct: null,
    problems: [],
    ok: false,
  }
}

/**
 * @param {number} port
 * @returns {Promise<number>}
 */
async function dbsize (port) {
  const r = await RespClient.connect(port)
  try {
    const [n] = await r.call([['DBSIZE']], 10000)
    return Number(n)
  } finally {
    r.destroy()
  }
}

/**
 * Protected, and the primary's server up MIN_UPTIME_MS: the status to kill under.
 * @param {Ctx} ctx
 * @param {number} [tries]   left, should protection come and go meanwhile
 * @returns {Promise<Status>}
 */
async function beforeKill (ctx, tries = 5) {
  const st = await poll(async () => {
    const s = await statusOrNull(ctx)
    return fullyProtected(s) ? s : null
  }, 'protected before the kill', ROUND_TIMEOUT_MS)
  const up = ctx.startedAt.get(st.primary) ?? 0
  const wait = up + MIN_UPTIME_MS - performance.now()
  if (wait > 0) await sleep(wait)
  const now = await status(ctx)
  if (fullyProtected(now) && now.primary === st.primary) return now
  if (tries <= 1) throw new Error('protection did not hold until the kill')
  return beforeKill(ctx, tries - 1)
}

/**
 * @param {number} round
 * @param {Ctx} ctx
 * @param {Load} load
 * @returns {Promise<RoundResult>}
 */
async function runRound (round, ctx, load) {
  const res = newRound(round)
  process.stdout.write(`round ${round}: `)
  for (const c of load.conns) c.times.reset()
  const roundStart = performance.now()
  const cpu0 = cpuNow(ctx)
  try {
    const st = await beforeKill(ctx)
    const victim = st.primary
    const pid = st.replicas.find((r) => r.name === victim)?.pid
    if (pid === undefined || !(pid > 0)) throw new Error(`no pid for ${victim} in /status`)
    res.killed = victim
    res.pid = pid
    res.keys = await dbsize(ctx.ports[victim] ?? 0)
    res.frontRssMiB = ms1(memKiB(ctx.front.pid).rss / 1024)
    res.logBytes = st.log_bytes
    const evFrom = ctx.events.length
    process.kill(pid, 'SIGKILL')
    const killedAt = performance.now()
    await poll(async () => {
      const s = await statusOrNull(ctx)
      return fullyProtected(s) && s.reseed.total > st.reseed.total && s.primary !== victim
    }, 'protected again', ROUND_TIMEOUT_MS, STATUS_POLL_MS)
    res.protectedMs = ms1(performance.now() - killedAt)
    const found = (/** @type {string} */ name) => poll(() => ctx.events.slice(evFrom)
      .find((e) => e.ev.event === name && e.ev.replica === victim), name, 10000, 10)
    const reseeded = await found('reseeded')
    phases(ctx.events.slice(evFrom), victim, killedAt, res)
    gaps(load, reseeded.ev, roundStart, killedAt, res)
    res.foreignCpuPct = foreignCpu(ctx, cpu0)
  } catch (err) {
    res.problems.push(errText(err))
  }
  res.ok = res.problems.length === 0
  process.stdout.write(res.ok
    ? `${res.killed} killed, protected again in ${res.protectedMs} ms, cut pause ` +
      `${res.cutGapMs} ms (front: ${res.pauseMs} ms), closed ${res.closed}` +
      res.reseedErrors.map((e) => `\n  reseed_failed after ${e}`).join('') + '\n'
    : `FAILED: ${res.problems.join('; ')}\n`)
  return res
}

/**
 * The round's phases from the front's events after the kill, and the events that must not be.
 * @param {Arrived[]} evs
 * @param {string} victim
 * @param {number} killedAt
 * @param {RoundResult} res
 */
function phases (evs, victim, killedAt, res) {
  const of = (/** @type {string} */ name) => evs.find((e) => e.ev.event === name &&
    (name === 'failover' ? e.ev.from === victim : e.ev.replica === victim))
  const since = (/** @type {Arrived | undefined} */ e) => e ? ms1(e.at - killedAt) : null
  const num = (/** @type {unknown} */ v) => typeof v === 'number' ? v : null
  res.failoverMs = since(of('failover'))
  res.restartDelayMs = num(of('replica_process_restarting')?.ev.delay_ms)
  res.restartedMs = since(of('replica_process_started'))
  res.reseedStartMs = since(of('reseed_started'))
  const done = of('reseeded')?.ev
  res.reseedMs = num(done?.duration_ms)
  res.pauseMs = num(done?.pause_ms)
  res.closed = num(done?.closed)
  res.reattached = num(done?.reattached)
  const failed = evs.filter((e) => e.ev.event === 'reseed_failed')
  res.reseedFailures = failed.length
  res.reseedErrors = failed.map((e) => {
    // What the command said last before it failed, if anything.
    const said = evs.filter((x) => x.ev.event === 'reseed_output' && x.at <= e.at).at(-1)
    return `${since(e)} ms: ${String(e.ev.error)}` + (said ? ` (${String(said.ev.line)})` : '')
  })
  if (!of('failover')) res.problems.push(`no failover from ${victim}`)
  for (const bad of BAD_EVENTS) {
    const e = evs.find((x) => x.ev.event === bad)
    // A failed attempt that a later one made good costs time, not data: counted, not failed.
    if (e && bad !== 'reseed_failed') res.problems.push(`${bad}: ${JSON.stringify(e.ev)}`)
  }
}

/**
 * The client-side gaps of the round (see the header).
 * @param {Load} load
 * @param {LogEvent} reseeded
 * @param {number} roundStart
 * @param {number} killedAt
 * @param {RoundResult} res
 */
function gaps (load, reseeded, roundStart, killedAt, res) {
  const now = performance.now()
  const end = Date.parse(String(reseeded.at)) - performance.timeOrigin + 1
  const pause = typeof reseeded.pause_ms === 'number' ? reseeded.pause_ms : 0
  const start = end - pause - 2
  res.cutGapMs = longestGap(load, (a, b) => a <= end && b >= start, now)
  res.killGapMs = longestGap(load, (a, b) => a <= killedAt && b >= killedAt, now)
  res.backgroundGapMs = longestGap(load, (a, b) => a >= roundStart && b <= killedAt, now)
}

// ---- the checks at the end --------------------------------------------------------------------

/**
 * @typedef {object} Tally
 * @property {string} replica
 * @property {string} role
 * @property {number} checked
 * @property {number} lost
 * @property {number} duplicated
 * @property {number} dbsize
 * @property {number} wantDbsize
 * @property {string[]} samples
 */

/**
 * One copy, asked directly: every acknowledged write there, once.
 * @param {number} port
 * @param {Load} load
 * @param {string} replica
 * @param {string} role
 * @returns {Promise<Tally>}
 */
async function checkCopy (port, load, replica, role) {
  const r = await RespClient.connect(port)
  try {
    /** @type {Tally} */
    const t = {
      replica,
      role,
      checked: 0,
      lost: 0,
      duplicated: 0,
      dbsize: 0,
      wantDbsize: 0,
      samples: []
    }
    await checkPreload(r, t)
    await checkCounters(r, load, t)
    await checkSlots(r, load, t)
    t.dbsize = Number((await r.call([['DBSIZE']]))[0])
    const slots = load.conns.reduce((n, c) => n + c.slotSent.filter((x) => x >= 0).length, 0)
    t.wantDbsize = KEYS + SHARED + load.conns.length + slots
    return t
  } finally {
    r.destroy()
  }
}

/**
 * @param {Tally} t
 * @param {string} what
 */
const sample = (t, what) => { if (t.samples.length < 10) t.samples.push(what) }

/**
 * Every preloaded key holds its value (MGET of 1000, 8 in flight).
 * @param {RespClient} r
 * @param {Tally} t
 */
async function checkPreload (r, t) {
  const per = 1000
  for (let base = 0; base < KEYS; base += per * 8) {
    /** @type {Promise<RespReply[]>[]} */
    const calls = []
    for (let from = base; from < Math.min(KEYS, base + per * 8); from += per) {
      const keys = []
      for (let i = from; i < Math.min(KEYS, from + per); i++) keys.push(preKey(i))
      calls.push(r.call([['MGET', ...keys]], 30000))
    }
    const got = await Promise.all(calls)
    got.forEach(([vals], x) => {
      if (!Array.isArray(vals)) throw new Error(`MGET: ${String(vals)}`)
      vals.forEach((v, y) => {
        const i = base + x * per + y
        t.checked++
        if (v !== preValue(i)) { t.lost++; sample(t, `${preKey(i)} = ${JSON.stringify(v)}`) }
      })
    })
  }
}

/**
 * Counters: each equals its acknowledged INCRs and is no more than were sent.
 * @param {RespClient} r
 * @param {Load} load
 * @param {Tally} t
 */
async function checkCounters (r, load, t) {
  /** @type {Array<[string, number, number]>} */
  const want = [
    ...Array.from({ length: SHARED }, (_, j) => /** @type {[string, number, number]} */ (
      [sharedKey(j), load.sharedAcked[j] ?? 0, load.sharedSent[j] ?? 0])),
    ...load.conns.map((c) => /** @type {[string, number, number]} */ (
      [ownKey(c.id), c.ownAcked, c.ownSent])),
  ]
  const got = await r.call(want.map(([k]) => ['GET', k]), 30000)
  want.forEach(([key, acked, sent], i) => {
    const v = got[i] === null ? 0 : Number(got[i])
    t.checked += acked
    if (!Number.isInteger(v)) {
      t.lost += acked
      sample(t, `${key} holds ${String(got[i])}`)
      return
    }
    if (v < acked) t.lost += acked - v
    if (v > sent) t.duplicated += v - sent
    if (v < acked || v > sent) sample(t, `${key} = ${v}, acknowledged ${acked}, sent ${sent}`)
  })
}

/**
 * SET keys: each holds a value its connection wrote there, no older than the last one
 * acknowledged.
 * @param {RespClient} r
 * @param {Load} load
 * @param {Tally} t
 */
async function checkSlots (r, load, t) {
  for (const c of load.conns) {
    const slots = Array.from({ length: SLOTS }, (_, s) => s)
    const [vals] = await r.call([['MGET', ...slots.map((s) => slotKey(c.id, s))]], 30000)
    if (!Array.isArray(vals)) throw new Error(`MGET: ${String(vals)}`)
    for (const s of slots) {
      const acked = c.slotAcked[s] ?? -1
      const sent = c.slotSent[s] ?? -1
      if (acked < 0) continue
      t.checked++
      const v = vals[s]
      const m = typeof v === 'string' ? /^(\d+):(\d+)$/.exec(v) : null
      const n = m && Number(m[1]) === c.id ? Number(m[2]) : -1
      if (n < acked || n > sent || n % SLOTS !== s) {
        t.lost++
        sample(t, `${slotKey(c.id, s)} = ${JSON.stringify(v)}, want ${setValue(c.id, acked)}`)
      }
    }
  }
}

/**
 * The load's connections: none dropped; the wrong replies.
 * @param {Load} load
 */
function checkConns (load) {
  let dropped = 0
  let wrong = 0
  /** @type {string[]} */
  const samples = []
  for (const c of load.conns) {
    const cl = c.client
    if (cl.closed || cl.ended || cl.error || cl.received !== cl.sent) {
      dropped++
      samples.push(`conn ${c.id}: ${cl.received} of ${cl.sent} replies, closed ${cl.closed}, ` +
        `ended ${cl.ended}, error ${cl.error?.message ?? 'none'}`)
    }
    wrong += c.wrong
    if (c.wrong) samples.push(`conn ${c.id}: ${c.wrong} wrong: ${c.samples.join('; ')}`)
  }
  return { dropped, wrong, samples: samples.slice(0, 20) }
}

// ---- results ----------------------------------------------------------------------------------

/**
 * @param {Array<number | null>} xs
 */
function stats (xs) {
  const v = /** @type {number[]} */ (xs.filter((x) => x !== null))
  return v.length ? { median: ms1(median(v)), max: ms1(Math.max(...v)), n: v.length } : null
}

/**
 * @param {RoundResult[]} rounds
 * @param {{ dropped: number, wrong: number, samples: string[] }} conns
 * @param {Tally[]} copies
 * @param {Load} load
 */
function summaryOf (rounds, conns, copies, load) {
  const sum = (/** @type {(t: Tally) => number} */ f) => copies.reduce((n, t) => n + f(t), 0)
  return {
    rounds: rounds.length,
    protectedAgain: rounds.filter((r) => r.protectedMs !== null).length,
    failedRounds: rounds.filter((r) => !r.ok).map((r) => r.round),
    protectedMs: stats(rounds.map((r) => r.protectedMs)),
    cutGapMs: stats(rounds.map((r) => r.cutGapMs)),
    pauseMs: stats(rounds.map((r) => r.pauseMs)),
    reseedMs: stats(rounds.map((r) => r.reseedMs)),
    killGapMs: stats(rounds.map((r) => r.killGapMs)),
    foreignCpuPct: stats(rounds.map((r) => r.foreignCpuPct)),
    backgroundGapMs: stats(rounds.map((r) => r.backgroundGapMs)),
    closed: rounds.reduce((n, r) => n + (r.closed ?? 0), 0),
    reseedFailures: rounds.reduce((n, r) => n + r.reseedFailures, 0),
    replies: load.replies,
    loadS: ms1(((load.stoppedAt || performance.now()) - load.started) / 1000),
    checked: sum((t) => t.checked),
    lost: sum((t) => t.lost),
    duplicated: sum((t) => t.duplicated) + load.dupReplies,
    dropped: conns.dropped,
    wrongReplies: conns.wrong,
    dbsizeMismatch: copies.filter((t) => t.dbsize !== t.wantDbsize)
      .map((t) => `${t.replica}: DBSIZE ${t.dbsize}, want ${t.wantDbsize}`),
  }
}

/** @typedef {ReturnType<typeof summaryOf>} Summary */

/**
 * A figure against its goal.
 * @param {{ max: number } | null} s
 * @param {number} goal
 */
function verdict (s, goal) {
  if (s === null) return 'no figure'
  const scope = KEYS >= 1_000_000 ? '' : ` (the goal is stated for 1M keys; this run: ${KEYS})`
  return `max ${s.max} ms: ${s.max < goal ? 'met' : 'NOT met'}${scope}`
}

/**
 * The summary lines (stdout and the .md).
 * @param {Summary} s
 * @param {RoundResult[]} rounds
 * @param {number} runtimeS
 */
function summaryLines (s, rounds, runtimeS) {
  const fig = (/** @type {{ median: number, max: number } | null} */ x) =>
    x ? `max ${x.max} / median ${x.median} ms` : 'none'
  const zero = s.lost + s.duplicated + s.dropped + s.wrongReplies === 0
  return [
    `Rounds: ${s.rounds}; protected again: ${s.protectedAgain}; failed rounds: ` +
      `${s.failedRounds.length ? s.failedRounds.join(', ') : 'none'}; runtime ${runtimeS} s.`,
    `Time to re-protection: ${fig(s.protectedMs)}; re-seed (duration_ms): ${fig(s.reseedMs)}.`,
    `Cut pause, client side: ${fig(s.cutGapMs)}; front's pause_ms: ${fig(s.pauseMs)}.`,
    `Gap across the kill (failover): ${fig(s.killGapMs)}; background gap before the kill: ` +
      `${fig(s.backgroundGapMs)}.`,
    `Connections closed at the cuts: ${s.closed}; failed re-seed attempts: ${s.reseedFailures}.`,
    ...rounds.flatMap((r) => r.reseedErrors.map((e) => {
      return `Round ${r.round}, reseed_failed after ${e}.`
    })),
    `Other processes on the machine took ${s.foreignCpuPct?.median ?? '?'}% of its CPU in the ` +
      `median round, ${s.foreignCpuPct?.max ?? '?'}% at most (0 on an idle machine).`,
    `Load: ${s.replies} replies in ${s.loadS} s (${Math.round(s.replies / s.loadS)}/s), ` +
      'kills and re-seeds included.',
    `Acknowledged writes checked (both copies): ${s.checked}; lost ${s.lost}; duplicated ` +
      `${s.duplicated}; dropped connections ${s.dropped}; wrong replies ${s.wrongReplies}` +
      (s.dbsizeMismatch.length ? `; ${s.dbsizeMismatch.join('; ')}` : '') + '.',
    '',
    'Goals (issue 11):',
    `- protected again within 5 s of a kill: ${verdict(s.protectedMs, 5000)}`,
    `- cut pause under 200 ms: client side ${verdict(s.cutGapMs, 200)}; front's pause_ms ` +
      `${verdict(s.pauseMs, 200)}`,
    `- 0 lost, 0 duplicated, 0 dropped (reattach): ${zero ? 'met' : 'NOT met'}`,
  ]
}

const HEADER = [
  '| round | killed | keys | kill→protected ms | failover ms | restart ms (delay) ' +
    '| re-seed start ms | re-seed ms | cut pause ms (client) | pause_ms (front) ' +
    '| kill gap ms | background gap ms | closed | reattached | failed attempts | ok |',
  '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: ' +
    '| ---: | ---: | --- |',
]

/** @param {RoundResult} r */
function row (r) {
  const cells = [
    r.round, r.killed, r.keys, r.protectedMs, r.failoverMs,
    `${r.restartedMs} (${r.restartDelayMs})`, r.reseedStartMs, r.reseedMs, r.cutGapMs,
    r.pauseMs, r.killGapMs, r.backgroundGapMs, r.closed, r.reattached, r.reseedFailures,
    r.ok ? 'yes' : 'NO',
  ]
  return `| ${cells.map(String).join(' | ')} |`
}

/**
 * The markdown report.
 * @param {RoundResult[]} rounds
 * @param {string[]} summary
 * @param {number} runtimeS
 */
function markdown (rounds, summary, runtimeS) {
  return [
    '# ftproxy re-protection drill',
    '',
    `${new Date().toISOString().slice(0, 10)}, loopback, node ${process.version}, ` +
      'redis-server supervised by the front, protocol resp, output_commit ack, reseed ' +
      `config/reseed-redis.sh (reattach). ${KEYS} keys preloaded (${VALUE_BYTES}-byte values), ` +
      `then ${CONNS} connections (window ${WINDOW}) of INCR on ${SHARED} shared counters, ` +
      'INCR on their own counter and SET of unique values, all through the rounds. Each ' +
      `round: protected, the primary's server up ${MIN_UPTIME_MS / 1000} s, kill -9 of it. ` +
      `Runtime ${runtimeS} s.`,
    '',
    'Times are from the kill (ms, the drill\'s clock; events as they arrived from the ' +
      'front\'s log). Restart: the killed server\'s new process (the supervisor\'s delay). ' +
      'Cut pause (client): the longest interval between two consecutive replies of any ' +
      'connection that overlaps the cut, [`reseeded.at` − `pause_ms`, `reseeded.at`]. ' +
      'Kill gap: the same across the kill; background gap: the longest before the kill.',
    '',
    ...HEADER,
    ...rounds.map(row),
    '',
    ...summary,
    '',
    `Reproduce: \`npm run drill -- ${process.argv.slice(2).join(' ')}\``,
    '',
  ].join('\n')
}

// ---- main -------------------------------------------------------------------------------------

/**
 * The rounds, then the checks; resolves to the exit code.
 * @param {Ctx} ctx
 * @param {string[]} problems
 */
async function drill (ctx, problems) {
  const t0 = performance.now()
  process.stdout.write(`preloading ${KEYS} keys … `)
  await preload(ctx.front.port)
  console.log(`${ms1((performance.now() - t0) / 1000)} s`)
  const load = await Load.start(ctx.front.port)
  /** @type {RoundResult[]} */
  const rounds = []
  for (let r = 1; r <= ROUNDS; r++) {
    const res = await runRound(r, ctx, load)
    rounds.push(res)
    problems.push(...res.problems.map((x) => `round ${r}: ${x}`))
    if (res.protectedMs === null) break // not protected again: no round can follow
  }
  await load.stop().catch((err) => problems.push(errText(err)))
  const conns = checkConns(load)
  problems.push(...conns.samples)
  const st = await status(ctx)
  /** @type {Tally[]} */
  const copies = []
  for (const r of st.replicas) {
    const t = await checkCopy(ctx.ports[r.name] ?? 0, load, r.name, r.role)
    copies.push(t)
    problems.push(...t.samples.map((x) => `${r.name}: ${x}`))
  }
  return { rounds, conns, copies, load, st }
}

async function main () {
  const t0 = performance.now()
  console.log(`ftproxy re-protection drill: ${KEYS} keys, ${ROUNDS} rounds, ${CONNS} ` +
    `connections (window ${WINDOW}), servers up ${MIN_UPTIME_MS / 1000} s before each kill`)
  const ctx = await setup()
  /** @type {string[]} */
  const problems = []
  let out = null
  try {
    out = await drill(ctx, problems)
  } catch (err) {
    problems.push(`error: ${err instanceof Error ? err.stack : String(err)}`)
  } finally {
    await teardown(ctx, problems)
    try { copyFileSync(ctx.logPath, LOG_COPY) } catch {}
  }
  const runtimeS = ms1((performance.now() - t0) / 1000)
  if (out === null) return report(problems, null, runtimeS)
  const summary = summaryOf(out.rounds, out.conns, out.copies, out.load)
  const lines = summaryLines(summary, out.rounds, runtimeS)
  const md = markdown(out.rounds, lines, runtimeS)
  console.log('\n' + md)
  mkdirSync(RESULTS, { recursive: true })
  writeFileSync(path.join(RESULTS, `${OUT}.md`), md)
  writeFileSync(path.join(RESULTS, `${OUT}.json`), JSON.stringify({
    date: new Date().toISOString(),
    node: process.version,
    params: {
      keys: KEYS,
      rounds: ROUNDS,
      conns: CONNS,
      window: WINDOW,
      valueBytes: VALUE_BYTES,
      sharedCounters: SHARED,
      setSlotsPerConn: SLOTS,
      minUptimeS: MIN_UPTIME_MS / 1000,
      roundTimeoutS: ROUND_TIMEOUT_MS / 1000,
      quick: QUICK
    },
    summary: { ...summary, runtimeS },
    copies: out.copies,
    rounds: out.rounds,
    problems,
  }, null, 2) + '\n')
  const bad = summary.lost + summary.duplicated + summary.dropped + summary.wrongReplies > 0 ||
    summary.failedRounds.length > 0 || summary.rounds < ROUNDS || problems.length > 0
  return report(bad ? problems : [], summary, runtimeS)
}

/**
 * The problems, if any; the exit code.
 * @param {string[]} problems
 * @param {Summary | null} summary
 * @param {number} runtimeS
 */
function report (problems, summary, runtimeS) {
  if (summary === null) problems.push(`no results (runtime ${runtimeS} s)`)
  if (problems.length === 0 && summary !== null) return 0
  console.log(`\nFAILED (front log: ${LOG_COPY})\n  ${problems.slice(0, 30).join('\n  ')}`)
  return 1
}

main().then((code) => { process.exitCode = code }, (err) => {
  console.error(err instanceof Error ? err.stack : String(err))
  process.exitCode = 2
})
