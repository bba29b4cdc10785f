// @ts-check
// `npm run bench`: ftproxy against redis-server direct and HAProxy, side by side, on loopback.
//
//   for each repetition (target order rotated each time):
//     for each target (direct, haproxy, ftproxy none / ack / match, ftproxy ack with
//                      protocol resp, ftproxy ack via agents):
//       redis phase   fresh redis-server copies (+ proxy) ─▶ redis-benchmark -P 1, -P 16
//       echo phase    fresh echo servers (+ proxy)       ─▶ Node throughput, Node latency
//                     (not resp: echo bytes are not RESP)
//       idle phase    (haproxy, ftproxy ack only)         ─▶ N idle connections, RSS delta
//       incr phase    (direct, haproxy, ack, resp)        ─▶ redis-benchmark -t incr on one
//                     shared key, -P 1 and -P 16, each on fresh copies behind a fresh proxy;
//                     a front's divergences and the copies' counters afterwards
//   every figure: median of the repetitions, with min–max
//   ─▶ stdout table, bench/results/results.{json,md}, bench/results/chart.svg
//
//   node bench/bench.mjs [--quick] [--reps N]
//                        [--targets direct,haproxy,none,ack,resp,match,agent]
//                        [--only redis,echo,idle,incr]   (phases; default all)
//                        [--cpu-prof]   (fronts write .cpuprofile files, a dir per front and
//                                        load under the printed dir; bench/cpuprofile.mjs
//                                        prints a profile's top functions)
//
// A target that fails (does not start, times out, errors) is reported as failed; the run
// goes on. Every child process is killed on exit, error and SIGINT (see lib.mjs).

import { createHash } from 'node:crypto'
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { execFileSync } from 'node:child_process'
import {
  ROOT, cpuSeconds, establishedTo, installCleanup, killAll, machineBusy, makeTempDir, memKiB,
  nofileHardLimit, percentile, sleep, spawnChild, startAgent, startEcho, startFront, startHaproxy,
  startRedis, summarize, withDeadline,
} from './lib.mjs'
import { RespClient } from './resp.mjs'

/**
 * @typedef {'direct' | 'haproxy' | 'none' | 'ack' | 'resp' | 'match' | 'agent'} TargetName
 *   ack: output_commit ack (protocol raw); resp: the same with protocol resp;
 *   agent: output_commit ack, each replica reached through its own `ftproxy agent` process
 * @typedef {'redis' | 'echo' | 'idle' | 'incr'} PhaseName
 * @typedef {import('./lib.mjs').Server} Server
 * @typedef {import('./lib.mjs').Summary} Summary
 *
 * @typedef {object} Params
 * @property {number} reps
 * @property {number} p1Requests        redis-benchmark -n with -P 1
 * @property {number} p16Requests       redis-benchmark -n with -P 16
 * @property {number} clients           redis-benchmark -c, and latency connections
 * @property {number} tputConns         throughput connections
 * @property {number} tputBytes         bytes each throughput connection sends (and reads back)
 * @property {number} tputChunk         write size
 * @property {number} latConns
 * @property {number} latCount          recorded round trips per latency connection
 * @property {number} latWarmup         unrecorded round trips first, per connection
 * @property {number} latSize           message bytes
 * @property {number} idleConns         idle connections for the memory figure
 * @property {number} idleBatch
 *
 * @typedef {Record<string, number>} Figures   metric key ─▶ value of one repetition
 *
 * @typedef {object} RepResult
 * @property {TargetName} target
 * @property {number} rep
 * @property {Figures} figures
 * @property {string[]} errors
 * @property {Record<string, unknown>[]} events
 * @property {Record<string, unknown>} extra
 *
 * @typedef {object} Metric
 * @property {string} key
 * @property {string} label
 * @property {(x: number) => string} fmt
 * @property {'higher' | 'lower'} better
 * @property {TargetName[]} targets    where it is measured
 * @property {PhaseName[]} phases      the phases that measure it (its row shows when one runs)
 * @property {((reps: RepResult[]) => string) | undefined} cell
 *   a cell from a target's repetitions, instead of median and ratios (counts)
 */

/** @type {TargetName[]} */
const ALL_TARGETS = ['direct', 'haproxy', 'none', 'ack', 'resp', 'match', 'agent']
const PROXIES = /** @type {TargetName[]} */ (['haproxy', 'none', 'ack', 'resp', 'match', 'agent'])
const FRONTS = /** @type {TargetName[]} */ (['none', 'ack', 'resp', 'match', 'agent'])
/** @type {PhaseName[]} */
const ALL_PHASES = ['redis', 'echo', 'idle', 'incr']
/** @type {Record<PhaseName, TargetName[]>} */
const PHASE_TARGETS = {
  redis: ALL_TARGETS,
  // The echo servers' bytes are not RESP: a resp front would refuse them.
  echo: ALL_TARGETS.filter((t) => t !== 'resp'),
  idle: ['haproxy', 'ack'],
  incr: ['direct', 'haproxy', 'ack', 'resp'],
}
/** @type {Record<TargetName, string>} */
const TITLE = {
  direct: 'direct',
  haproxy: 'haproxy',
  none: 'ftproxy none',
  ack: 'ftproxy ack',
  resp: 'ftproxy resp',
  match: 'ftproxy match',
  agent: 'ack via agents',
}

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    reps: { type: 'string' },
    targets: { type: 'string' },
    only: { type: 'string' },
    'cpu-prof': { type: 'boolean', default: false },
  },
})

const quick = flags.quick === true
const fdHard = nofileHardLimit()
// The front holds ~3 fds per client connection (client + one per replica), HAProxy 2.
const idleFit = Math.floor((fdHard - 512) / 3)
/** @type {Params} */
const P = quick
  ? {
      reps: 1,
      p1Requests: 50000,
      p16Requests: 200000,
      clients: 50,
      tputConns: 8,
      tputBytes: 4 << 20,
      tputChunk: 64 << 10,
      latConns: 50,
      latCount: 500,
      latWarmup: 20,
      latSize: 64,
      idleConns: Math.min(2000, idleFit),
      idleBatch: 250,
    }
  : {
      reps: 3,
      p1Requests: 100000,
      p16Requests: 400000,
      clients: 50,
      tputConns: 8,
      tputBytes: 16 << 20,
      tputChunk: 64 << 10,
      latConns: 50,
      latCount: 2000,
      latWarmup: 50,
      latSize: 64,
      idleConns: Math.min(10000, idleFit),
      idleBatch: 500,
    }
if (flags.reps !== undefined) {
  P.reps = Number(flags.reps)
  if (!Number.isInteger(P.reps) || P.reps < 1 || P.reps > 20) {
    throw new Error('--reps: an integer 1..20')
  }
}
const phases = flags.only === undefined
  ? ALL_PHASES
  : ALL_PHASES.filter((p) => (flags.only ?? '').split(',').includes(p))
if (phases.length === 0) throw new Error(`--only: some of ${ALL_PHASES.join(',')}`)
/** The phases `t` runs in this invocation. @param {TargetName} t */
const phasesOf = (t) => phases.filter((p) => PHASE_TARGETS[p].includes(t))
// Without --targets, every target that runs one of the phases.
const targets = (flags.targets === undefined
  ? ALL_TARGETS
  : ALL_TARGETS.filter((t) => (flags.targets ?? '').split(',').includes(t))
).filter((t) => phasesOf(t).length > 0)
if (targets.length === 0) {
  throw new Error(`--targets: some of ${ALL_TARGETS.join(',')}, one that runs a phase of --only`)
}

const profDir = flags['cpu-prof'] ? makeTempDir('bench-cpuprof', true) : null
/**
 * Where a front writes its CPU profile: a dir per target and load (repetitions add files).
 * @param {TargetName} target
 * @param {string} label
 */
const profileDir = (target, label) => path.join(profDir ?? '.', `${target}-${label}`)
const RESULTS = path.join(ROOT, 'bench', 'results')

// ---- metrics --------------------------------------------------------------------------------

/** @param {number} x */
function kilo (x) {
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)}M`
  return x >= 1e3 ? `${(x / 1e3).toFixed(1)}k` : x.toFixed(0)
}
const fixed = (/** @type {number} */ d) => (/** @type {number} */ x) => x.toFixed(d)

/**
 * @param {string} key
 * @param {string} label
 * @param {(x: number) => string} fmt
 * @param {'higher' | 'lower'} better
 * @param {TargetName[]} where
 * @param {PhaseName | PhaseName[]} phase
 * @param {(reps: RepResult[]) => string} [cell]
 * @returns {Metric}
 */
const metric = (key, label, fmt, better, where, phase, cell) => {
  const inPhases = [phase].flat()
  const targets = where.filter((t) => inPhases.some((p) => PHASE_TARGETS[p].includes(t)))
  return { key, label, fmt, better, targets, phases: inPhases, cell }
}

const idleLabel = `memory per idle conn, KiB (${P.idleConns} conns)`
const INCR_FRONTS = /** @type {TargetName[]} */ (['ack', 'resp'])
/** @type {Metric[]} */
const METRICS = [
  metric('set_p1', 'SET req/s, P1', kilo, 'higher', ALL_TARGETS, 'redis'),
  metric('get_p1', 'GET req/s, P1', kilo, 'higher', ALL_TARGETS, 'redis'),
  metric('set_p16', 'SET req/s, P16', kilo, 'higher', ALL_TARGETS, 'redis'),
  metric('get_p16', 'GET req/s, P16', kilo, 'higher', ALL_TARGETS, 'redis'),
  metric('incr_p1', 'INCR one key, req/s, P1', kilo, 'higher', ALL_TARGETS, 'incr'),
  metric('incr_p16', 'INCR one key, req/s, P16', kilo, 'higher', ALL_TARGETS, 'incr'),
  metric('incr_p99_p1_ms', 'INCR one key, p99 ms, P1', fixed(2), 'lower', ALL_TARGETS, 'incr'),
  metric('incr_p99_p16_ms', 'INCR one key, p99 ms, P16', fixed(2), 'lower', ALL_TARGETS, 'incr'),
  metric('incr_div_p1', 'INCR one key, divergences, P1', fixed(0), 'lower', INCR_FRONTS, 'incr',
    (reps) => divergenceCell(reps, 'p1')),
  metric('incr_div_p16', 'INCR one key, divergences, P16', fixed(0), 'lower', INCR_FRONTS, 'incr',
    (reps) => divergenceCell(reps, 'p16')),
  metric('tput_mbps', 'echo throughput, MB/s', fixed(0), 'higher', ALL_TARGETS, 'echo'),
  metric('lat_p50_us', 'echo latency p50, µs', fixed(0), 'lower', ALL_TARGETS, 'echo'),
  metric('lat_p99_us', 'echo latency p99, µs', fixed(0), 'lower', ALL_TARGETS, 'echo'),
  metric('lat_p999_us', 'echo latency p99.9, µs', fixed(0), 'lower', ALL_TARGETS, 'echo'),
  metric('cpu_p1_s', 'proxy CPU s, redis P1', fixed(2), 'lower', PROXIES, 'redis'),
  metric('cpu_p16_s', 'proxy CPU s, redis P16', fixed(2), 'lower', PROXIES, 'redis'),
  metric('cpu_incr_p1_s', 'proxy CPU s, INCR P1', fixed(2), 'lower', PROXIES, 'incr'),
  metric('cpu_incr_p16_s', 'proxy CPU s, INCR P16', fixed(2), 'lower', PROXIES, 'incr'),
  metric('cpu_tput_s', 'proxy CPU s, throughput', fixed(2), 'lower', PROXIES, 'echo'),
  metric('cpu_lat_s', 'proxy CPU s, latency', fixed(2), 'lower', PROXIES, 'echo'),
  metric('srv_cpu_p1_s', 'servers CPU s, redis P1 (all copies)', fixed(2), 'lower', ALL_TARGETS,
    'redis'),
  metric('agents_cpu_p1_s', 'agents CPU s, redis P1 (both)', fixed(2), 'lower', ['agent'],
    'redis'),
  metric('rss_peak_mib', 'proxy peak RSS, MiB', fixed(1), 'lower', PROXIES, ['redis', 'echo']),
  metric('idle_kib_per_conn', idleLabel, fixed(1), 'lower', ['haproxy', 'ack'], 'idle'),
]

/**
 * A divergence cell: divergences over the repetitions, whether the backup ended stale and, for
 * one repetition, where the backup's counter stopped.
 * @param {RepResult[]} reps    one target's
 * @param {string} k            'p1' or 'p16'
 */
function divergenceCell (reps, k) {
  const ran = reps.filter((r) => r.figures[`incr_div_${k}`] !== undefined)
  if (ran.length === 0) return '**failed**'
  const div = ran.reduce((a, r) => a + (r.figures[`incr_div_${k}`] ?? 0), 0)
  const stale = ran.filter((r) => r.figures[`incr_stale_${k}`] === 1)
  const runs = ran.length > 1 ? ` in ${ran.length} runs` : ''
  if (stale.length === 0) return `${div}${runs}, backup in sync`
  const [only] = stale
  const c = /** @type {IncrCounters | undefined} */ (only?.extra[`incr_counters_${k}`])
  const at = ran.length === 1 && c ? ` at ${c.backup} of ${c.requests}` : ''
  const of = ran.length > 1 ? ` ${stale.length}/${ran.length}` : ''
  return `${div}${runs}, backup stale${of}${at}`
}

// ---- loads ----------------------------------------------------------------------------------

/**
 * @typedef {{ rps: number, p99ms: number }} BenchRow   one redis-benchmark test's result
 */

/**
 * redis-benchmark -t TESTS --csv against a port: requests/s and p99 (ms) per test, by the name
 * it prints (SET, GET, INCR). Without -r every key is one literal key (`key:__rand_int__`,
 * `counter:__rand_int__`), which all the clients share.
 * @param {number} port
 * @param {number} pipeline
 * @param {number} requests
 * @param {string[]} tests    -t names, lower case: set, get, incr
 * @returns {Promise<Record<string, BenchRow>>}   every test in `tests` (upper case) is there
 */
async function redisBenchmark (port, pipeline, requests, tests) {
  /** @type {string[]} */
  const out = []
  const what = `redis-benchmark -t ${tests.join(',')} -P ${pipeline}`
  const child = spawnChild('redis-benchmark', [
    '-h', '127.0.0.1', '-p', String(port), '-c', String(P.clients), '-n', String(requests),
    '-P', String(pipeline), '-t', tests.join(','), '--csv',
  ], {
    name: what,
    onLine: (line) => { if (line.startsWith('"')) out.push(line) },
  })
  // Worst case assumed: every test at 2,000 req/s, plus startup.
  const deadline = 30000 + Math.ceil((tests.length * requests) / 2000) * 1000
  try {
    const exit = await withDeadline(child.exited, deadline, what)
    /** @type {Record<string, BenchRow>} */
    const rows = {}
    for (const line of out) {
      // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
      // "p99_latency_ms","max_latency_ms"
      const cells = line.split(',').map((c) => c.replace(/^"|"$/g, ''))
      const [test, rps, , , , , p99] = cells
      if (test !== undefined) rows[test] = { rps: Number(rps), p99ms: Number(p99) }
    }
    const missing = tests.filter((t) => !rows[t.toUpperCase()])
    if (missing.length > 0) {
      const tail = child.tail().split('\n').filter((l) => l.trim() !== '')
      const no = `${what}: no ${missing.join('/')} result (exit ${exit.code})`
      throw new Error(`${no}: ${tail.at(-1) ?? ''}\n${tail.join('\n')}`)
    }
    return rows
  } finally {
    await child.stop(500)
  }
}

/**
 * Open `n` connections to port; resolves once all are connected.
 * @param {number} port
 * @param {number} n
 * @param {net.Socket[]} into   every socket opened (also on failure), to be destroyed by the caller
 */
async function connectAll (port, n, into) {
  await Promise.all(Array.from({ length: n }, () => new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, noDelay: true })
    into.push(s)
    s.once('connect', resolve)
    s.once('error', reject)
  })))
}

/**
 * One throughput connection: writes P.tputBytes of `pattern` repeated (with backpressure) and
 * resolves once every byte came back, checked against what was sent.
 * @param {net.Socket} s
 * @param {Buffer} pattern   P.tputChunk bytes
 * @returns {Promise<void>}
 */
function echoPattern (s, pattern) {
  return new Promise((resolve, reject) => {
    let got = 0
    s.on('data', (/** @type {Buffer} */ data) => {
      // The stream must be the pattern repeated: compare segment by segment (memcmp).
      let i = 0
      while (i < data.length) {
        const at = (got + i) % pattern.length
        const n = Math.min(data.length - i, pattern.length - at)
        if (data.compare(pattern, at, at + n, i, i + n) !== 0) {
          reject(new Error(`throughput: wrong bytes at offset ${got + i}`))
          return
        }
        i += n
      }
      got += data.length
      if (got > P.tputBytes) {
        reject(new Error(`throughput: ${got} bytes back for ${P.tputBytes} sent`))
        return
      }
      if (got === P.tputBytes) resolve()
    })
    s.once('error', reject)
    s.once('close', () => {
      if (got >= P.tputBytes) return
      reject(new Error(`throughput: closed after ${got} of ${P.tputBytes} bytes`))
    })
    let sent = 0
    const pump = () => {
      while (sent < P.tputBytes) {
        sent += P.tputChunk
        if (!s.write(pattern)) {
          s.once('drain', pump)
          return
        }
      }
    }
    pump()
  })
}

/**
 * Raw byte throughput: every connection writes `bytes` in `chunk`-sized writes (with
 * backpressure) and reads every byte back, checked against what was sent. MB/s is 10^6 bytes
 * of payload echoed per second, one direction, from the first write to the last byte back.
 * @param {number} port
 * @returns {Promise<{ mbps: number, seconds: number }>}
 */
async function throughput (port) {
  const pattern = Buffer.alloc(P.tputChunk)
  for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 31 + 7) & 255
  /** @type {net.Socket[]} */
  const sockets = []
  const deadline = 30000 + Math.ceil(P.tputConns * P.tputBytes / 2e6) * 1000 // ≥ 2 MB/s
  try {
    await withDeadline(connectAll(port, P.tputConns, sockets), 10000, 'throughput connect')
    const t0 = process.hrtime.bigint()
    const all = Promise.all(sockets.map((s) => echoPattern(s, pattern)))
    await withDeadline(all, deadline, 'throughput')
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9
    return { mbps: (P.tputConns * P.tputBytes) / 1e6 / seconds, seconds }
  } finally {
    for (const s of sockets) s.destroy()
  }
}

/**
 * One latency connection: P.latWarmup + P.latCount sequential round trips of `msg`, each of
 * the last P.latCount timed (µs) into `into`.
 * @param {net.Socket} s
 * @param {Buffer} msg
 * @param {Float64Array} into   this connection's P.latCount slots
 * @returns {Promise<void>}
 */
function roundTrips (s, msg, into) {
  const per = P.latWarmup + P.latCount
  return new Promise((resolve, reject) => {
    let done = 0
    let got = 0
    let t = process.hrtime.bigint()
    s.on('data', (/** @type {Buffer} */ data) => {
      got += data.length
      if (got < msg.length) return
      if (got > msg.length) {
        reject(new Error(`latency: ${got} bytes back for ${msg.length}`))
        return
      }
      const now = process.hrtime.bigint()
      if (done >= P.latWarmup) into[done - P.latWarmup] = Number(now - t) / 1000
      got = 0
      if (++done === per) {
        resolve()
        return
      }
      t = process.hrtime.bigint()
      s.write(msg)
    })
    s.once('error', reject)
    s.once('close', () => {
      if (done < per) reject(new Error(`latency: closed after ${done} round trips`))
    })
    s.write(msg)
  })
}

/**
 * Latency: every connection does sequential round trips of a `latSize`-byte message and
 * waits for all of it to come back; after `latWarmup` unrecorded ones, each of `latCount`
 * is timed with process.hrtime.bigint. Percentiles over every recorded round trip, µs.
 * @param {number} port
 * @returns {Promise<{ p50: number, p99: number, p999: number, max: number, samples: number }>}
 */
async function latency (port) {
  const msg = Buffer.alloc(P.latSize, 'x')
  const per = P.latWarmup + P.latCount
  const all = new Float64Array(P.latConns * P.latCount)
  /** @type {net.Socket[]} */
  const sockets = []
  const deadline = 30000 + Math.ceil((P.latConns * per) / 1000) * 1000 // ≥ 1,000 round trips/s
  try {
    await withDeadline(connectAll(port, P.latConns, sockets), 10000, 'latency connect')
    // Connection k records its round trips into all[k * P.latCount …].
    const trips = sockets.map((s, k) => roundTrips(s, msg, all.subarray(k * P.latCount)))
    await withDeadline(Promise.all(trips), deadline, 'latency')
    all.sort()
    return {
      p50: percentile(all, 50),
      p99: percentile(all, 99),
      p999: percentile(all, 99.9),
      max: all[all.length - 1] ?? NaN,
      samples: all.length,
    }
  } finally {
    for (const s of sockets) s.destroy()
  }
}

/**
 * Memory per idle connection: RSS of the proxy before, then with P.idleConns idle client
 * connections (opened in batches, each one's upstream connections established: counted in
 * /proc/net/tcp), KiB per connection.
 * @param {number} pid
 * @param {number} port
 * @param {number[]} upstreams   ports every client connection must reach
 * @returns {Promise<{ kibPerConn: number, rssBeforeKiB: number, rssAfterKiB: number }>}
 */
async function idleMemory (pid, port, upstreams) {
  const baseline = upstreams.map((port) => ({ port, base: establishedTo(port) }))
  const added = () => baseline.map((u) => establishedTo(u.port) - u.base)
  await sleep(300)
  const before = memKiB(pid).rss
  /** @type {net.Socket[]} */
  const sockets = []
  try {
    const run = async () => {
      for (let i = 0; i < P.idleConns; i += P.idleBatch) {
        const n = Math.min(P.idleBatch, P.idleConns - i)
        await connectAll(port, n, sockets)
        for (const s of sockets.slice(-n)) s.on('error', () => {})
      }
      // Every upstream connection in place (bounded: the phase deadline).
      for (let i = 0; i < 600; i++) {
        if (added().every((n) => n >= P.idleConns)) break
        if (i === 599) {
          throw new Error(`idle: upstream connections ${added().join('/')} of ${P.idleConns}`)
        }
        await sleep(100)
      }
      const closed = sockets.filter((s) => s.destroyed).length
      if (closed > 0) throw new Error(`idle: ${closed} connections closed by the proxy`)
      await sleep(1000)
    }
    await withDeadline(run(), 120000, 'idle connections')
    const after = memKiB(pid).rss
    return { kibPerConn: (after - before) / P.idleConns, rssBeforeKiB: before, rssAfterKiB: after }
  } finally {
    for (const s of sockets) s.destroy()
  }
}

// ---- one target, one repetition -------------------------------------------------------------

/**
 * A started target: where the load goes, whose CPU and memory count, how to stop it.
 * @typedef {object} Running
 * @property {number} port
 * @property {number | null} pid          the proxy (null for direct)
 * @property {number[]} agentPids
 * @property {() => Promise<unknown>} stop
 * @property {Record<string, unknown>[]} events        the front's log
 * @property {Record<string, unknown>[]} agentEvents   the agents' logs
 */

/**
 * The proxy (or nothing, for direct) in front of `ports`.
 * @param {TargetName} target
 * @param {number[]} ports
 * @param {string} dir
 * @param {string} label    the load it is started for (names a front's profile dir)
 * @returns {Promise<Running>}
 */
async function startTarget (target, ports, dir, label) {
  if (target === 'direct' || target === 'haproxy') {
    const [first] = ports
    if (first === undefined) throw new Error(`${target}: no server to stand in front of`)
    const none = { agentPids: [], events: [], agentEvents: [] }
    if (target === 'direct') return { port: first, pid: null, stop: async () => {}, ...none }
    const h = await startHaproxy({ backends: [first], dir })
    return { port: h.port, pid: h.pid, stop: () => h.stop(), ...none }
  }
  return startFrontTarget(target, ports, dir, label)
}

/**
 * An ftproxy front in front of `ports`; for the agent target, one `ftproxy agent` per server
 * and the front reaches each replica through its agent; for resp, `protocol: resp`.
 * @param {'none' | 'ack' | 'resp' | 'match' | 'agent'} target
 * @param {number[]} ports
 * @param {string} dir
 * @param {string} label    with --cpu-prof, the profile goes to a dir of that name
 * @returns {Promise<Running>}
 */
async function startFrontTarget (target, ports, dir, label) {
  /** @type {Awaited<ReturnType<typeof startAgent>>[]} */
  const agents = []
  const stopAgents = () => Promise.all(agents.map((a) => a.stop(3000)))
  try {
    if (target === 'agent') {
      for (const p of ports) agents.push(await startAgent({ server: p, dir }))
    }
    const f = await startFront({
      replicas: ports.map((p, i) => {
        const agent = agents[i] // one per server for the agent target, none otherwise
        return agent !== undefined
          ? { name: 'ab'.charAt(i), agent: `127.0.0.1:${agent.port}` }
          : { name: 'ab'.charAt(i), address: `127.0.0.1:${p}` }
      }),
      outputCommit: target === 'agent' || target === 'resp' ? 'ack' : target,
      protocol: target === 'resp' ? 'resp' : undefined,
      // A port of its own (its admin_listening event says which): nothing else collides.
      extraYaml: 'admin: { listen: 127.0.0.1:0 }',
      dir,
      maxConnections: 20000,
      nodeArgs: profDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir(target, label)}`] : [],
    })
    return {
      port: f.port,
      pid: f.pid,
      agentPids: agents.map((a) => a.pid),
      // SIGTERM: graceful stop (and the CPU profile gets written); the front before its agents.
      stop: async () => { try { await f.stop(5000) } finally { await stopAgents() } },
      events: f.events,
      agentEvents: agents.flatMap((a) => a.events),
    }
  } catch (err) {
    await stopAgents()
    throw err
  }
}

/**
 * @param {TargetName} target
 * @param {Server[]} backends
 * @param {RepResult} r
 * @param {string} dir
 * @param {string} label       the phase: the proxy's VmHWM after it goes to extra.hwm_mib[label]
 * @param {(t: Running) => Promise<void>} body
 * @param {boolean} [trackPeak]
 *   fold the proxy's VmHWM into rss_peak_mib (not for the idle and incr phases)
 */
async function withTarget (target, backends, r, dir, label, body, trackPeak = true) {
  /** @type {Running | null} */
  let t = null
  try {
    t = await startTarget(target, backends.map((b) => b.port), dir, label)
    await body(t)
    if (t.pid !== null) {
      const hwm = memKiB(t.pid).hwm / 1024
      r.extra[`hwm_mib_${label}`] = hwm
      if (trackPeak) r.figures.rss_peak_mib = Math.max(r.figures.rss_peak_mib ?? 0, hwm)
    }
  } finally {
    if (t) {
      await t.stop()
      for (const ev of t.events) {
        if (ev.level === 'warn' || ev.level === 'error') r.events.push(ev)
      }
      for (const ev of t.agentEvents) {
        if (ev.level === 'warn' || ev.level === 'error') r.events.push({ ...ev, from: 'agent' })
      }
    }
    await Promise.all(backends.map((b) => b.stop(1000)))
  }
}

/**
 * @param {string} label
 * @param {RepResult} r
 * @param {() => Promise<void>} fn
 */
async function phase (label, r, fn) {
  const t0 = Date.now()
  try {
    await fn()
  } catch (err) {
    const msg = `${label}: ${err instanceof Error ? err.message : String(err)}`
    r.errors.push(msg.length > 600 ? msg.slice(0, 600) + '…' : msg)
    process.stderr.write(`  ! ${TITLE[r.target]} ${msg.split('\n')[0]}\n`)
  }
  r.extra[`${label}_seconds`] = Math.round((Date.now() - t0) / 100) / 10
}

/**
 * @typedef {{ pids: number[], total?: number }} CpuGroup   processes whose CPU is summed
 */

/**
 * CPU seconds a process spent in `fn` (NaN when there is no process), and for each group of
 * `others` (the servers, the agents) the sum over its processes into `group.total` (NaN for
 * an empty group).
 * @param {number | null} pid
 * @param {() => Promise<void>} fn
 * @param {CpuGroup[]} others
 */
async function cpuOf (pid, fn, ...others) {
  const sum = (/** @type {CpuGroup} */ g) => {
    return g.pids.length ? g.pids.reduce((a, p) => a + cpuSeconds(p), 0) : NaN
  }
  const before = pid === null ? NaN : cpuSeconds(pid)
  const gBefore = others.map((g) => ({ g, start: sum(g) }))
  await fn()
  for (const { g, start } of gBefore) g.total = sum(g) - start
  return pid === null ? NaN : cpuSeconds(pid) - before
}

/**
 * `n` servers, or none (the started ones stopped) when one fails.
 * @param {number} n
 * @param {() => Promise<Server>} start
 */
async function startCopies (n, start) {
  /** @type {Server[]} */
  const started = []
  try {
    for (let i = 0; i < n; i++) started.push(await start())
    return started
  } catch (err) {
    await Promise.all(started.map((s) => s.stop(500)))
    throw err
  }
}

/**
 * One repetition of one target, as its phases see it.
 * @typedef {object} Rep
 * @property {TargetName} target
 * @property {RepResult} r
 * @property {string} dir        the target's temp dir (configs, state)
 * @property {number} copies     servers behind it: two replicas for a front, else one
 * @property {Record<string, number>} agentsCpu
 *   agents' CPU s per load (the agent target only; P1 is also a figure): extra.agents_cpu_s
 */

/**
 * @param {TargetName} target
 * @param {number} rep
 * @returns {Promise<RepResult>}
 */
async function runTarget (target, rep) {
  /** @type {RepResult} */
  const r = { target, rep, figures: {}, errors: [], events: [], extra: {} }
  const copies = FRONTS.includes(target) ? 2 : 1
  const dir = makeTempDir(`bench-${target}`)
  /** @type {Rep} */
  const ctx = { target, r, dir, copies, agentsCpu: {} }

  /** @type {Record<PhaseName, (ctx: Rep) => Promise<void>>} */
  const run = { redis: redisPhase, echo: echoPhase, idle: idlePhase, incr: incrPhase }
  // Idle memory: HAProxy and ftproxy ack only; INCR: not the other fronts (PHASE_TARGETS).
  for (const p of phasesOf(target)) await phase(p, r, () => run[p](ctx))
  if (target === 'agent') {
    r.extra.agents_cpu_s = { p1: r.figures.agents_cpu_p1_s ?? NaN, ...ctx.agentsCpu }
  }
  return r
}

/**
 * Fresh redis-server copies behind the target: redis-benchmark -P 1, then -P 16.
 * @param {Rep} ctx
 */
async function redisPhase ({ target, r, dir, copies, agentsCpu }) {
  const f = r.figures
  const start = () => startRedis({ dir: makeTempDir(`bench-redis-${target}`) })
  const redis = await startCopies(copies, start)
  await withTarget(target, redis, r, dir, 'redis', async (t) => {
    const none = { rps: NaN, p99ms: NaN }
    let p1 = { SET: none, GET: none }
    /** @type {CpuGroup} */
    const servers = { pids: redis.map((x) => x.pid) }
    /** @type {CpuGroup} */
    const agents = { pids: t.agentPids }
    f.cpu_p1_s = await cpuOf(t.pid, async () => {
      p1 = { ...p1, ...await redisBenchmark(t.port, 1, P.p1Requests, ['set', 'get']) }
    }, servers, agents)
    f.srv_cpu_p1_s = servers.total ?? NaN
    if (target === 'agent') f.agents_cpu_p1_s = agents.total ?? NaN
    Object.assign(f, { set_p1: p1.SET.rps, get_p1: p1.GET.rps })
    let p16 = { SET: none, GET: none }
    f.cpu_p16_s = await cpuOf(t.pid, async () => {
      p16 = { ...p16, ...await redisBenchmark(t.port, 16, P.p16Requests, ['set', 'get']) }
    }, agents)
    Object.assign(f, { set_p16: p16.SET.rps, get_p16: p16.GET.rps })
    if (target === 'agent') agentsCpu.p16 = agents.total ?? NaN
    r.extra.redis_benchmark_p99_ms = {
      set_p1: p1.SET.p99ms,
      get_p1: p1.GET.p99ms,
      set_p16: p16.SET.p99ms,
      get_p16: p16.GET.p99ms,
    }
  })
}

/**
 * Fresh echo servers behind the target: throughput, then latency.
 * @param {Rep} ctx
 */
async function echoPhase ({ target, r, dir, copies, agentsCpu }) {
  const f = r.figures
  const echo = await startCopies(copies, () => startEcho())
  await withTarget(target, echo, r, dir, 'echo', async (t) => {
    /** @type {CpuGroup} */
    const agents = { pids: t.agentPids }
    f.cpu_tput_s = await cpuOf(t.pid, async () => {
      const x = await throughput(t.port)
      f.tput_mbps = x.mbps
    }, agents)
    if (target === 'agent') agentsCpu.tput = agents.total ?? NaN
    f.cpu_lat_s = await cpuOf(t.pid, async () => {
      const x = await latency(t.port)
      Object.assign(f, { lat_p50_us: x.p50, lat_p99_us: x.p99, lat_p999_us: x.p999 })
      r.extra.lat_max_us = x.max
      r.extra.lat_samples = x.samples
    }, agents)
    if (target === 'agent') agentsCpu.lat = agents.total ?? NaN
  })
}

/**
 * Fresh echo servers behind the target (a proxy): memory per idle connection.
 * @param {Rep} ctx
 */
async function idlePhase ({ target, r, dir, copies }) {
  const echo = await startCopies(copies, () => startEcho())
  await withTarget(target, echo, r, dir, 'idle', async (t) => {
    const x = await idleMemory(/** @type {number} */ (t.pid), t.port, echo.map((e) => e.port))
    r.figures.idle_kib_per_conn = x.kibPerConn
    r.extra.idle = x
  }, false)
}

/** The one key every redis-benchmark INCR client increments (no -r: the name is literal). */
const INCR_KEY = 'counter:__rand_int__'

/**
 * @typedef {object} IncrCounters   the shared counter on each copy after an INCR run
 * @property {number} requests      INCRs redis-benchmark sent
 * @property {number} primary       the first copy's (the primary's unless it failed over)
 * @property {number} backup        the second copy's (NaN with one copy)
 *
 * @typedef {object} FrontFacts     what a front says of itself after a run (admin endpoint)
 * @property {number} turns         ftproxy_turns_total: turns the replicas answered (resp)
 * @property {number} turnWaitMs    ftproxy_turn_wait_seconds_sum, in ms
 * @property {number} divergences   ftproxy_divergences_total
 * @property {boolean} protected    GET /status: a backup in service
 */

/**
 * INCR on one shared key, P1 then P16, each on fresh copies behind a fresh proxy: a front's
 * backup starts in sync for each, so each run shows its own divergences.
 * @param {Rep} ctx
 */
async function incrPhase (ctx) {
  /** @type {Array<[number, number]>} */
  const runs = [[1, P.p1Requests], [16, P.p16Requests]]
  for (const [pipeline, requests] of runs) await incrRun(ctx, pipeline, requests)
}

/**
 * One INCR run: req/s and p99 from redis-benchmark, the proxy's CPU; for a front the
 * divergences it logged, whether a replica went stale, and the copies' counters.
 * @param {Rep} ctx
 * @param {number} pipeline
 * @param {number} requests
 */
async function incrRun ({ target, r, dir, copies }, pipeline, requests) {
  const k = `p${pipeline}`
  const f = r.figures
  const start = () => startRedis({ dir: makeTempDir(`bench-redis-${target}`) })
  const redis = await startCopies(copies, start)
  /** @type {Record<string, unknown>[]} */
  let events = []
  /** @type {IncrCounters} */
  const counters = { requests, primary: NaN, backup: NaN }
  await withTarget(target, redis, r, dir, `incr_${k}`, async (t) => {
    events = t.events
    let rows = /** @type {Record<string, BenchRow>} */ ({})
    f[`cpu_incr_${k}_s`] = await cpuOf(t.pid, async () => {
      rows = await redisBenchmark(t.port, pipeline, requests, ['incr'])
    })
    f[`incr_${k}`] = rows.INCR?.rps ?? NaN
    f[`incr_p99_${k}_ms`] = rows.INCR?.p99ms ?? NaN
    const [primary = NaN, backup = NaN] = await countersOf(redis, () => staleIn(events))
    Object.assign(counters, { primary, backup })
    if (FRONTS.includes(target)) r.extra[`incr_front_${k}`] = await frontFacts(events)
  }, false)
  r.extra[`incr_counters_${k}`] = counters
  if (!FRONTS.includes(target)) return
  // The front has stopped: its whole log was read.
  f[`incr_div_${k}`] = events.filter((e) => e.event === 'divergence').length
  const stale = staleIn(events)
  f[`incr_stale_${k}`] = stale ? 1 : 0
  if (!stale && counters.primary !== counters.backup) {
    r.errors.push(`incr P${pipeline}: the copies' counters differ (${counters.primary} and ` +
      `${counters.backup}) and no replica went stale`)
  }
  const facts = /** @type {FrontFacts | null} */ (r.extra[`incr_front_${k}`])
  if (facts && facts.protected === stale) {
    r.errors.push(`incr P${pipeline}: /status says protected ${facts.protected}, yet ` +
      `${stale ? 'a' : 'no'} replica went stale`)
  }
}

/**
 * Ask a front (its admin endpoint, from its admin_listening event) for its turns, divergences
 * and protection. Null when it has no admin endpoint or does not answer within 3 s.
 * @param {Record<string, unknown>[]} events
 * @returns {Promise<FrontFacts | null>}
 */
async function frontFacts (events) {
  const ev = events.find((e) => e.event === 'admin_listening')
  if (typeof ev?.address !== 'string') return null
  const get = async (/** @type {string} */ p) => {
    const res = await fetch(`http://${ev.address}${p}`, { signal: AbortSignal.timeout(3000) })
    return res.text()
  }
  try {
    const metrics = await get('/metrics')
    const value = (/** @type {string} */ name) => {
      return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN)
    }
    const status = JSON.parse(await get('/status'))
    return {
      turns: value('ftproxy_turns_total'),
      turnWaitMs: value('ftproxy_turn_wait_seconds_sum') * 1000,
      divergences: value('ftproxy_divergences_total'),
      protected: status.protected === true,
    }
  } catch {
    return null
  }
}

/**
 * Whether the front took a replica out of service (a divergence retires a backup as stale).
 * @param {Record<string, unknown>[]} events
 */
function staleIn (events) {
  return events.some((e) => e.event === 'replica_role' && e.to === 'stale')
}

/**
 * The shared counter on each copy. A backup in ack mode may still be running the last commands
 * it acknowledged: read again until the copies agree, a replica went stale or 5 s passed.
 * @param {Server[]} copies
 * @param {() => boolean} stale
 * @returns {Promise<number[]>}
 */
async function countersOf (copies, stale) {
  const read = () => Promise.all(copies.map(async (c) => {
    const client = await RespClient.connect(c.port)
    try {
      const [v] = await client.call([['GET', INCR_KEY]], 5000)
      return v === null ? 0 : Number(v)
    } finally {
      client.destroy()
    }
  }))
  let values = await read()
  for (let i = 0; i < 50 && new Set(values).size > 1 && !stale(); i++) {
    await sleep(100)
    values = await read()
  }
  return values
}

// ---- report ---------------------------------------------------------------------------------

/**
 * @typedef {Summary & { failed: number }} Cell   a figure of one target over the repetitions
 * @typedef {Record<string, Partial<Record<TargetName, Cell>>>} Sums   metric key ─▶ target ─▶
 */

/**
 * @param {RepResult[]} raw
 * @returns {Sums}
 */
function summarizeAll (raw) {
  /** @type {Sums} */
  const out = {}
  for (const m of METRICS) {
    /** @type {Partial<Record<TargetName, Cell>>} */
    const byTarget = {}
    out[m.key] = byTarget
    for (const t of targets) {
      if (!m.targets.includes(t)) continue
      const reps = raw.filter((r) => r.target === t)
      const xs = reps.map((r) => r.figures[m.key] ?? NaN)
      const s = summarize(xs)
      byTarget[t] = { ...s, failed: reps.length - s.n }
    }
  }
  return out
}

/**
 * The markdown table: a row per metric of the phases that ran, a column per target.
 * @param {Sums} sum
 * @param {RepResult[]} raw
 */
function table (sum, raw) {
  const head = ['figure', ...targets.map((t) => TITLE[t])]
  const rows = [head, head.map(() => '---')]
  const shown = METRICS.filter((m) => {
    return m.phases.some((p) => phases.includes(p)) && m.targets.some((t) => targets.includes(t))
  })
  for (const m of shown) {
    rows.push([m.label, ...targets.map((t) => {
      if (m.cell && m.targets.includes(t)) return m.cell(raw.filter((r) => r.target === t))
      return tableCell(sum, m, t)
    })])
  }
  return rows.map((r) => `| ${r.join(' | ')} |`).join('\n')
}

/**
 * One cell: the median (min–max when several repetitions), its ratios to the reference
 * columns, the failed repetitions.
 * @param {Sums} sum
 * @param {Metric} m
 * @param {TargetName} t
 */
function tableCell (sum, m, t) {
  const s = sum[m.key]?.[t]
  if (!s) return '—'
  if (s.n === 0) return '**failed**'
  let cell = m.fmt(s.median)
  if (s.n > 1) cell += ` (${m.fmt(s.min)}–${m.fmt(s.max)})`
  /** @type {string[]} */
  const ratios = []
  /** @type {Array<[TargetName, string]>} */
  const refs = [['haproxy', 'H'], ['direct', 'D']]
  // ack via agents and ack with protocol resp are also compared with ftproxy ack (direct
  // replicas, protocol raw): ×A.
  if (t === 'agent' || t === 'resp') refs.push(['ack', 'A'])
  for (const [ref, tag] of refs) {
    const r = sum[m.key]?.[ref]
    if (ref !== t && r && r.n > 0 && r.median > 0) {
      ratios.push(`${(s.median / r.median).toFixed(2)}×${tag}`)
    }
  }
  if (ratios.length) cell += ` ${ratios.join(' ')}`
  if (s.failed > 0) cell += ` [${s.failed} failed]`
  return cell
}

/** @type {Record<TargetName, string>} */
const COLORS = {
  direct: '#4d4d4d',
  haproxy: '#1f77b4',
  none: '#9ecae1',
  ack: '#ff7f0e',
  resp: '#9467bd',
  match: '#d62728',
  agent: '#2ca02c',
}
// Chart geometry (px): the picture, one panel's width, the plot area's top and height.
const CHART_W = 920
const CHART_H = 380
const PANEL_W = 430
const TOP = 50
const PLOT_H = 250

/**
 * A hand-written SVG bar chart: requests/s per target, SET and GET, P1 and P16 panels (each
 * its own scale), median bars with min–max whiskers.
 * @param {Sums} sum
 */
function chart (sum) {
  /** @type {string[]} */
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${CHART_W}" height="${CHART_H}" ` +
      `viewBox="0 0 ${CHART_W} ${CHART_H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${CHART_W}" height="${CHART_H}" fill="white"/>`,
    '<text x="10" y="20" font-size="14" font-weight="bold">' +
      'redis-benchmark requests/s, 50 clients (median, whiskers: min–max)</text>',
  ]
  /** @type {Array<[string, string[]]>} */
  const panels = [['pipeline 1', ['set_p1', 'get_p1']], ['pipeline 16', ['set_p16', 'get_p16']]]
  panels.forEach(([title, keys], pi) => {
    out.push(...chartPanel(sum, title, keys, 60 + pi * (PANEL_W + 20)))
  })
  targets.forEach((t, i) => {
    const lx = 60 + i * 120
    out.push(`<rect x="${lx}" y="${CHART_H - 28}" width="12" height="12" fill="${COLORS[t]}"/>`)
    out.push(`<text x="${lx + 16}" y="${CHART_H - 18}">${TITLE[t]}</text>`)
  })
  out.push('</svg>', '')
  return out.join('\n')
}

/**
 * One panel of the chart: its grid and scale, a group of bars per key.
 * @param {Sums} sum
 * @param {string} title
 * @param {string[]} keys   metric keys, a group each
 * @param {number} x0       the panel's left edge
 * @returns {string[]}
 */
function chartPanel (sum, title, keys, x0) {
  /** @type {string[]} */
  const out = []
  let max = 0
  for (const k of keys) for (const t of targets) max = Math.max(max, sum[k]?.[t]?.max ?? 0)
  if (!(max > 0)) max = 1
  const step = niceStep(max / 4)
  const top2 = Math.ceil(max / step) * step
  const y = (/** @type {number} */ v) => TOP + PLOT_H - (v / top2) * PLOT_H
  out.push(`<text x="${x0 + PANEL_W / 2 - 40}" y="${TOP - 10}" font-weight="bold">${title}</text>`)
  for (let v = 0; v <= top2 + 1e-9; v += step) {
    const yv = y(v).toFixed(1)
    out.push(`<line x1="${x0}" x2="${x0 + PANEL_W - 40}" y1="${yv}" y2="${yv}" stroke="#ddd"/>`)
    const tick = kilo(v).replace(/\.0+(?=[kM])/, '')
    out.push(`<text x="${x0 - 5}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${tick}</text>`)
  }
  const groupW = (PANEL_W - 60) / keys.length
  const barW = Math.min(30, (groupW - 20) / targets.length)
  keys.forEach((k, gi) => {
    const gx = x0 + 10 + gi * groupW
    targets.forEach((t, ti) => {
      out.push(...chartBar(sum[k]?.[t], `${TITLE[t]} ${k}`, COLORS[t], gx + ti * barW, barW, y))
    })
    const lx = (gx + (targets.length * barW) / 2).toFixed(1)
    const test = k.startsWith('set') ? 'SET' : 'GET'
    out.push(`<text x="${lx}" y="${TOP + PLOT_H + 15}" text-anchor="middle">${test}</text>`)
  })
  out.push(`<line x1="${x0}" x2="${x0}" y1="${TOP}" y2="${TOP + PLOT_H}" stroke="black"/>`)
  return out
}

/**
 * One bar: the median, a min–max whisker when several repetitions, its value above it; a
 * cross when the figure failed (or was not measured).
 * @param {Cell | undefined} s
 * @param {string} what     the bar's tooltip, before its value
 * @param {string} color
 * @param {number} bx       the bar's left edge
 * @param {number} barW     its slot's width
 * @param {(v: number) => number} y   value ─▶ y coordinate
 * @returns {string[]}
 */
function chartBar (s, what, color, bx, barW, y) {
  if (!s || s.n === 0) {
    const x = bx + barW / 2
    return [`<text x="${x}" y="${TOP + PLOT_H - 4}" text-anchor="middle" fill="#c00">✗</text>`]
  }
  const top = y(s.median).toFixed(1)
  const w = (barW - 2).toFixed(1)
  const h = (TOP + PLOT_H - y(s.median)).toFixed(1)
  const cx = (bx + (barW - 2) / 2).toFixed(1)
  const out = [
    `<rect x="${bx.toFixed(1)}" y="${top}" width="${w}" height="${h}" fill="${color}">` +
      `<title>${what}: ${kilo(s.median)} req/s</title></rect>`,
  ]
  if (s.n > 1) {
    const [y1, y2] = [y(s.max).toFixed(1), y(s.min).toFixed(1)]
    out.push(`<line x1="${cx}" x2="${cx}" y1="${y1}" y2="${y2}" stroke="black"/>`)
  }
  const ty = (y(s.median) - 3).toFixed(1)
  out.push(`<text x="${cx}" y="${ty}" text-anchor="middle" font-size="8">${kilo(s.median)}</text>`)
  return out
}

/** @param {number} x */
function niceStep (x) {
  const p = 10 ** Math.floor(Math.log10(x))
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x) return m * p
  return 10 * p
}

/**
 * CPU seconds so far: the machine's (user+nice+system, all cores; softirq left out, where
 * much loopback work lands unattributed) and this process's with its reaped children. Their
 * difference over a run is what other processes took from it.
 */
function cpuAccount () {
  try {
    const [cpu = ''] = readFileSync('/proc/stat', 'utf8').split('\n')
    const [user = NaN, nice = NaN, system = NaN] = cpu.trim().split(/\s+/).slice(1).map(Number)
    const stat = readFileSync('/proc/self/stat', 'utf8')
    // utime, stime, cutime, cstime: fields 14-17, counted after the ') '
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ').slice(11, 15).map(Number)
    const [ut = NaN, st = NaN, cut = NaN, cst = NaN] = fields
    const tck = 100 // USER_HZ: /proc/stat and /proc/<pid>/stat count in the same unit
    return { machine: (user + nice + system) / tck, ours: (ut + st + cut + cst) / tck }
  } catch {
    return { machine: NaN, ours: NaN }
  }
}

/**
 * A short hash of the built front (every file under dist/): the figures are for this build.
 * A rebuild during the run (a shared tree) shows as a different hash at the end.
 */
function distHash () {
  try {
    const dist = path.join(ROOT, 'dist')
    const h = createHash('sha1')
    const files = readdirSync(dist, { recursive: true, encoding: 'utf8' })
    for (const f of files.filter((f) => f.endsWith('.js')).sort()) {
      h.update(f).update(readFileSync(path.join(dist, f)))
    }
    return h.digest('hex').slice(0, 12)
  } catch {
    return 'none'
  }
}

/** @param {string} cmd @param {string[]} args */
function versionOf (cmd, args) {
  try {
    const out = execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
    const [first = ''] = out.split('\n')
    return first.trim()
  } catch { return 'unknown' }
}

// ---- main -----------------------------------------------------------------------------------

/** What the run is: its date and mode, the machine, the tools, the build, the parameters. */
function runMeta () {
  return {
    date: new Date().toISOString(),
    mode: quick ? 'quick' : 'full',
    nproc: os.availableParallelism(),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    node: process.version,
    haproxy: versionOf('/usr/sbin/haproxy', ['-v']),
    redis: versionOf('redis-server', ['--version']),
    fd_hard_limit: fdHard,
    git: versionOf('git', ['-C', ROOT, 'describe', '--always', '--dirty']),
    dist: distHash(),
    params: P,
    targets,
    phases,
    /** CPU busy fraction (all cores) in the second before the run: something else running? */
    busy_before: NaN,
  }
}

/**
 * @typedef {ReturnType<typeof runMeta>} Meta
 *
 * @typedef {object} RunFacts   how the run went, measured around it
 * @property {number} seconds
 * @property {number} foreign        CPU s other processes took during the run
 * @property {number} foreignShare   the same as a share of the machine
 * @property {string} distAfter      distHash() at the end
 */

/**
 * Say what runs, and warn when the figures will mean little: the machine busy with something
 * else, fewer idle connections than planned. Records the busy fraction in meta.busy_before.
 * @param {Meta} meta
 */
async function preflight (meta) {
  const cores = `${meta.nproc} cores, node ${meta.node}`
  process.stderr.write(
    `bench: ${meta.mode}, ${P.reps} repetition(s), targets ${targets.join(', ')}, ` +
    `phases ${phases.join(', ')}, ${cores}\n`)
  // Figures from a machine that is busy with something else mean little: say so.
  const busyBefore = meta.busy_before = await machineBusy(1000)
  if (busyBefore > 0.1) {
    const pct = (busyBefore * 100).toFixed(0)
    process.stderr.write(`bench: WARNING: the machine was ${pct}% busy before the run started: ` +
      'figures will be low and noisy\n')
  }
  if (P.idleConns < (quick ? 2000 : 10000)) {
    process.stderr.write(`bench: idle connections capped at ${P.idleConns}: the open-files ` +
      `hard limit is ${fdHard} (the front needs ~3 per connection)\n`)
  }
}

/**
 * Every repetition of every target, in turn.
 * @returns {Promise<RepResult[]>}
 */
async function runTargets () {
  /** @type {RepResult[]} */
  const raw = []
  for (let rep = 0; rep < P.reps; rep++) {
    // Rotate the order so no target always runs first (or last) in a repetition.
    const k = rep % targets.length
    const order = [...targets.slice(k), ...targets.slice(0, k)]
    for (const t of order) raw.push(await runBounded(t, rep + 1))
  }
  return raw
}

/**
 * One repetition of one target, 10 minutes at most: past that it fails whole.
 * @param {TargetName} t
 * @param {number} rep    from 1
 * @returns {Promise<RepResult>}
 */
async function runBounded (t, rep) {
  const t0 = Date.now()
  const run = withDeadline(runTarget(t, rep), 600000, `${t} repetition ${rep}`)
  const r = await run.catch((err) => {
    // Only a phase stuck past its own deadline gets here: clear the table for the next.
    killAll()
    /** @type {RepResult} */
    const failed = {
      target: t,
      rep,
      figures: {},
      errors: [String(err instanceof Error ? err.message : err)],
      events: [],
      extra: {},
    }
    return failed
  })
  const took = ((Date.now() - t0) / 1000).toFixed(1)
  const errors = r.errors.length ? ` (${r.errors.length} error(s))` : ''
  process.stderr.write(`  rep ${rep} ${TITLE[t].padEnd(14)} ${took} s${errors}\n`)
  return r
}

/**
 * Warn when the figures are suspect: a rebuild of dist/ or other processes busy during the run.
 * @param {Meta} meta
 * @param {RunFacts} run
 */
function postflight (meta, run) {
  if (run.distAfter !== meta.dist) {
    process.stderr.write(`bench: WARNING: dist/ was rebuilt during the run (${meta.dist} -> ` +
      `${run.distAfter}): the ftproxy figures mix two builds\n`)
  }
  if (run.foreignShare > 0.05) {
    const pct = (run.foreignShare * 100).toFixed(0)
    process.stderr.write(`bench: WARNING: other processes used ${run.foreign.toFixed(0)} CPU s ` +
      `(${pct}% of the machine) during the run\n`)
  }
}

/**
 * Errors of every repetition, and the warn/error events the front and the agents logged.
 * @param {RepResult[]} raw
 */
function notesOf (raw) {
  /** @type {Array<[string, (e: Record<string, unknown>) => boolean]>} */
  const sources = [['front', (e) => e.from !== 'agent'], ['agents', (e) => e.from === 'agent']]
  /** @type {string[]} */
  const notes = []
  for (const r of raw) {
    const who = `${TITLE[r.target]} rep ${r.rep}`
    for (const e of r.errors) notes.push(`${who}: ${e.split('\n')[0]}`)
    for (const [source, mine] of sources) {
      const evs = [...new Set(r.events.filter(mine).map((e) => String(e.event)))]
      if (evs.length) notes.push(`${who}: ${source} logged ${evs.join(', ')}`)
    }
  }
  return notes
}

/**
 * The "Machine:" line: where, when and how the figures were taken.
 * @param {Meta} meta
 * @param {RunFacts} run
 */
function machineLine (meta, run) {
  const haproxy = meta.haproxy.replace(/ - https.*/, '')
  const redis = meta.redis.split(' sha=')[0]
  const busy = (meta.busy_before * 100).toFixed(0)
  const foreign = (run.foreignShare * 100).toFixed(0)
  const rebuilt = run.distAfter !== meta.dist
    ? ` **rebuilt during the run (now ${run.distAfter}): figures mix two builds**`
    : ''
  return `Machine: nproc ${meta.nproc} (${meta.cpu}), node ${meta.node}, ${haproxy}, ${redis}; ` +
    `${meta.date}; ${meta.mode} run, ${P.reps} repetition(s), ${run.seconds} s` +
    `; CPU ${busy}% busy before the start; other processes took ${foreign}% of the CPU ` +
    'during the run' +
    `; ftproxy ${meta.git}, dist ${meta.dist}${rebuilt}.`
}

/** What the table's cells are and how they were measured (a paragraph each). */
function legend () {
  const alsoAck = targets.includes('ack') && (targets.includes('agent') || targets.includes('resp'))
    ? '; ftproxy resp and ack via agents also to ftproxy ack (×A)'
    : ''
  const mib = P.tputBytes >> 20
  const kib = P.tputChunk >> 10
  return [
    'Each cell: median over repetitions (min–max), then its ratio to HAProxy (×H) and to ' +
      `direct (×D)${alsoAck}.`,
    `redis-benchmark: -c ${P.clients} -n ${P.p1Requests} (P1) / ${P.p16Requests} (P16), ` +
      '-t set,get; INCR one key: -t incr, no -r, so every client increments the one key ' +
      `${INCR_KEY}, each pipeline depth on fresh copies behind a fresh proxy. ` +
      'Divergences: `divergence` events the front logged during that run; "backup stale at X ' +
      'of N": the front retired the backup (its counter stopped at X of the N INCRs) and ran ' +
      'the rest on the primary alone, unprotected. ' +
      'ftproxy ack uses protocol raw; ftproxy resp is the same with protocol resp. ' +
      'Echo (Node load generator against bench/echo.mjs): ' +
      `${P.tputConns} connections × ${mib} MiB in ${kib} KiB writes; ` +
      `latency: ${P.latConns} connections × ${P.latCount} sequential ${P.latSize}-byte ` +
      `round trips (after ${P.latWarmup} unrecorded). ` +
      'ftproxy: two replicas; haproxy and direct: one server. ack via agents: output_commit ' +
      'ack, each replica through its own `ftproxy agent` process (loopback, no TLS); ' +
      'no idle figure. ' +
      'CPU: the proxy process (the front), user+sys, per load; agents CPU: both agents ' +
      `together. Idle: ${P.idleConns} connections, ftproxy ack and haproxy.`,
  ]
}

/**
 * Print the table and the notes, write bench/results/results.{json,md} and chart.svg.
 * @param {Meta} meta
 * @param {RunFacts} run
 * @param {RepResult[]} raw
 */
function report (meta, run, raw) {
  const sum = summarizeAll(raw)
  const md = table(sum, raw)
  const notes = notesOf(raw)
  const machine = machineLine(meta, run)
  const verdict = incrVerdict(sum, raw)
  const doc = [
    '# ftproxy benchmark', '', machine, '', md, '', ...verdict.map((l) => `${l}\n`),
    ...legend().map((l) => `${l}\n`),
    ...(notes.length ? ['Notes:', '', ...notes.map((n) => `* ${n}`), ''] : []),
  ].join('\n')

  process.stdout.write(`\n${md}\n\n${verdict.map((l) => `${l}\n\n`).join('')}${machine}\n`)
  if (notes.length) process.stdout.write(`\nNotes:\n${notes.map((n) => `* ${n}`).join('\n')}\n`)

  mkdirSync(RESULTS, { recursive: true })
  const round = (/** @type {string} */ _k, /** @type {unknown} */ v) => {
    return typeof v === 'number' && !Number.isInteger(v) ? Math.round(v * 1000) / 1000 : v
  }
  const runMetaOut = {
    ...meta,
    seconds: run.seconds,
    foreign_cpu_s: run.foreign,
    dist_after: run.distAfter,
  }
  const out = { meta: runMetaOut, summary: sum, raw, notes, incr_verdict: verdict }
  const json = JSON.stringify(out, round, 1)
  writeFileSync(path.join(RESULTS, 'results.json'), json + '\n')
  writeFileSync(path.join(RESULTS, 'results.md'), doc)
  // The chart is of the SET/GET figures: left as it was when they were not measured.
  const charted = phases.includes('redis')
  if (charted) writeFileSync(path.join(RESULTS, 'chart.svg'), chart(sum))
  process.stderr.write(`bench: ${run.seconds} s; wrote bench/results/results.json, results.md` +
    `${charted ? ', chart.svg' : ''}\n`)
}

/**
 * Issue 10's INCR goal: ftproxy resp's req/s as a share of ftproxy ack's (protocol raw) in
 * this invocation, the divergences of each, and what raw's figure is worth once it diverged.
 * Nothing unless both ran the INCR phase.
 * @param {Sums} sum
 * @param {RepResult[]} raw
 * @returns {string[]}
 */
function incrVerdict (sum, raw) {
  if (!phases.includes('incr') || !targets.includes('ack') || !targets.includes('resp')) return []
  /** @type {(key: string, t: TargetName, ref: TargetName) => string} */
  const ratio = (key, t, ref) => {
    const [a, b] = [sum[key]?.[t], sum[key]?.[ref]]
    return a && b && a.n > 0 && b.n > 0 ? `${(a.median / b.median).toFixed(2)}×` : 'n/a'
  }
  /** @type {(t: TargetName, ref: TargetName, what?: string) => string} */
  const both = (t, ref, what = 'incr') => {
    return `P1 ${ratio(`${what}_p1`, t, ref)}, P16 ${ratio(`${what}_p16`, t, ref)}`
  }
  const share = (/** @type {string} */ key) => {
    return (sum[key]?.resp?.median ?? NaN) / (sum[key]?.ack?.median ?? NaN)
  }
  const met = share('incr_p1') >= 0.8 && share('incr_p16') >= 0.8
  const lines = [
    'INCR on one shared key, req/s, ftproxy resp / ftproxy ack (protocol raw): ' +
      `${both('resp', 'ack')} (goal ≥ 0.8×: ${met ? 'met' : 'missed'}). ` +
      `${divergenceSummary(raw, 'resp')}; ${divergenceSummary(raw, 'ack')}.`,
  ]
  if (targets.includes('haproxy')) {
    lines.push(`INCR against HAProxy (one server): resp ${both('resp', 'haproxy')}; ` +
      `raw ${both('ack', 'haproxy')}.`)
  }
  lines.push(`resp turns (one connection's requests, answered before the next goes): ${
    ['p1', 'p16'].map((k) => turnSummary(raw, k)).join('; ')}.`)
  const rawStale = (/** @type {RepResult} */ r) => {
    return r.target === 'ack' && (r.figures.incr_stale_p1 === 1 || r.figures.incr_stale_p16 === 1)
  }
  if (raw.some(rawStale)) {
    const set = phases.includes('redis')
      ? ' SET, where the raw copies stay in sync (every reply is +OK), resp / raw: ' +
        `${both('resp', 'ack', 'set')}.`
      : ''
    lines.push('raw diverged: past its first divergence it ran on the primary alone, ' +
      `unprotected, so its INCR figure is not that of a protected front.${set}`)
  }
  return lines
}

/**
 * "P1 100000 turns for 100000 INCRs (two copies), mean wait 0.071 ms", over resp's runs.
 * @param {RepResult[]} raw
 * @param {string} k    'p1' or 'p16'
 */
function turnSummary (raw, k) {
  let turns = 0
  let waitMs = 0
  let requests = 0
  for (const r of raw.filter((x) => x.target === 'resp')) {
    const facts = /** @type {FrontFacts | null | undefined} */ (r.extra[`incr_front_${k}`])
    const c = /** @type {IncrCounters | undefined} */ (r.extra[`incr_counters_${k}`])
    if (!facts || !c) continue
    turns += facts.turns
    waitMs += facts.turnWaitMs
    requests += c.requests
  }
  const mean = turns > 0 ? (waitMs / turns).toFixed(3) : 'n/a'
  return `${k.toUpperCase()} ${turns} turns for ${requests} INCRs (two copies), ` +
    `mean wait ${mean} ms`
}

/**
 * "resp: 0 divergences, backup stale in 0 of 2 runs"
 * @param {RepResult[]} raw
 * @param {TargetName} t
 */
function divergenceSummary (raw, t) {
  let div = 0
  let stale = 0
  let runs = 0
  for (const r of raw.filter((x) => x.target === t)) {
    for (const k of ['p1', 'p16']) {
      const d = r.figures[`incr_div_${k}`]
      if (d === undefined) continue
      runs++
      div += d
      stale += r.figures[`incr_stale_${k}`] ?? 0
    }
  }
  const name = t === 'ack' ? 'raw' : t
  return `${name}: ${div} divergence(s), backup stale in ${stale} of ${runs} runs`
}

async function main () {
  installCleanup()
  const started = Date.now()
  const meta = runMeta()
  await preflight(meta)
  const cpu0 = cpuAccount()
  const raw = await runTargets()
  const seconds = Math.round((Date.now() - started) / 1000)
  const cpu1 = cpuAccount()
  // Every child was reaped by now, so its CPU time is in ours.
  const foreign = Math.max(0, (cpu1.machine - cpu0.machine) - (cpu1.ours - cpu0.ours))
  const foreignShare = foreign / (seconds * meta.nproc)
  /** @type {RunFacts} */
  const run = { seconds, foreign, foreignShare, distAfter: distHash() }
  postflight(meta, run)
  report(meta, run, raw)
  if (profDir) process.stderr.write(`bench: CPU profiles of the fronts in ${profDir}\n`)
}

await main()
