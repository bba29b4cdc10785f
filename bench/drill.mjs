// @ts-check
// Failure drill: `npm run drill [--rounds N] [--quick] [--seed S] [--only R] [--no-stop]
// [--protocol raw|resp]`
//
// Each round, in a fresh temp dir: an ftproxy front (child process, output_commit ack) in front
// of two redis-server copies that the front itself starts and supervises (replicas a and b;
// which one is primary alternates per round). Many RESP connections pipeline unique writes
// (INCR on keys each connection owns, SET of unique values) with a bounded window topped up on
// every reply. When a seeded-random fraction of all replies has arrived, the primary redis gets
// `kill -9` (pid from the front's `replica_process_started`). The load runs to the end; then:
//   * every reply is right (INCR: 1, 2, 3 … per key; SET: OK), no connection dropped or errored;
//   * the surviving redis, asked directly, holds every acknowledged write exactly (counter ==
//     acknowledged INCRs: none lost, none twice; every acknowledged SET key has its value);
//   * the front logged `failover` (from the primary to the backup) and no `divergence` or
//     `splice_failed`.
// A last round SIGSTOPs the primary instead (stall detection must fail over).
//
// The gap of a round: per connection, the longest silence between two consecutive replies
// whose interval contains the kill or starts within 1 s after it (a reply that was already
// on its way may arrive just after the kill; the outage is the silence after it); the round's
// gap is the max over connections.
//
// Seeds: --seed S fixes the base seed (printed); round r uses seed(S, r) for its kill moment;
// `--seed S --only r` (with the same --rounds/--quick) replays round r alone: same primary,
// same kill fraction; a replay does not write bench/results.
// Results: bench/results/drill.json and drill.md. A failed round's front log is copied to
// /tmp/drill-fail-<round>.log. Exit 1 if anything was lost, duplicated, dropped or wrong.

import { appendFileSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import {
  ROOT, freePort, installCleanup, makeTempDir, percentile, sleep, spawnChild, withDeadline,
} from './lib.mjs'
import { RespClient, RespError } from './resp.mjs'

/** @typedef {import('./resp.mjs').RespReply} RespReply */
/** @typedef {import('./lib.mjs').Child} Child */
/** @typedef {Record<string, unknown> & { event?: string }} LogEvent */

// `--reprotect`: the re-protection drill, bench/reprotect.mjs, with options of its own.
const REPROTECT = process.argv.includes('--reprotect')
const { values: opts } = parseArgs({
  args: REPROTECT ? [] : undefined,
  options: {
    rounds: { type: 'string' },
    quick: { type: 'boolean', default: false },
    seed: { type: 'string' },
    only: { type: 'string' },
    'no-stop': { type: 'boolean', default: false },
    protocol: { type: 'string', default: 'raw' },
  },
  strict: true,
})

const QUICK = opts.quick === true
const PROTOCOL = String(opts.protocol)
if (!['raw', 'line', 'resp'].includes(PROTOCOL)) throw new Error('--protocol: raw, line or resp')
const ROUNDS = Number(opts.rounds ?? (QUICK ? 2 : 10))
if (!Number.isInteger(ROUNDS) || ROUNDS < 0 || ROUNDS > 1000) {
  throw new Error('--rounds: an integer 0..1000')
}
const BASE_SEED = opts.seed !== undefined
  ? Number(opts.seed) >>> 0
  : (Date.now() ^ (process.pid << 16)) >>> 0
const ONLY = opts.only !== undefined ? Number(opts.only) : null

/** Load shape. Every connection sends PER_CONN commands: even ones INCR, odd ones SET. */
const CONNS = QUICK ? 12 : 32
const PER_CONN = QUICK ? 600 : 6000
const KEYS = 4 // counters per connection, used round-robin
const WINDOW = 32 // unanswered commands per connection at most
const LOAD_DEADLINE_MS = QUICK ? 30000 : 60000
const GAP_WINDOW_MS = 1000
const BIN = path.join(ROOT, 'bin', 'ftproxy')
const RESULTS = path.join(ROOT, 'bench', 'results')

installCleanup()

// ---- small helpers ----------------------------------------------------------------------------

/**
 * mulberry32: a small seeded PRNG (uniform in [0, 1)).
 * @param {number} seed
 */
function prng (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * The seed of round r (r from 1).
 * @param {number} base
 * @param {number} r
 */
const roundSeed = (base, r) => {
  return (Math.imul(base ^ 0x5bd1e995, 0x9e3779b1) + Math.imul(r, 0x85ebca6b)) >>> 0
}

/**
 * Poll with a deadline until fn() is truthy (at most ms, every 5 ms).
 * @param {() => unknown} fn
 * @param {string} what
 * @param {number} ms
 */
async function until (fn, what, ms) {
  const deadline = performance.now() + ms
  while (!fn()) {
    if (performance.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    }
    await sleep(5)
  }
}

/**
 * Whether a process exists and is not a zombie.
 * @param {number} pid
 */
function processAlive (pid) {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

/**
 * @param {number} pid
 * @param {NodeJS.Signals} sig
 */
function signal (pid, sig) {
  try { process.kill(pid, sig) } catch {}
}

/**
 * counts[i] += 1, for a counter index (in range).
 * @param {Int32Array} counts
 * @param {number} i
 */
function bump (counts, i) {
  counts[i] = (counts[i] ?? 0) + 1
}

/** @param {number} x */
const ms1 = (x) => Math.round(x * 10) / 10

// ---- the front --------------------------------------------------------------------------------

/**
 * @typedef {object} Replica
 * @property {string} name
 * @property {number} port
 */

/**
 * @param {Replica} r
 */
function replicaYaml (r) {
  return [
    `  - name: ${r.name}`,
    `    address: 127.0.0.1:${r.port}`,
    `    command: [redis-server, --port, "${r.port}", --bind, 127.0.0.1, --save, "", ` +
      '--appendonly, "no"]',
  ].join('\n')
}

/**
 * @typedef {object} Front
 * @property {Child} child
 * @property {number} port
 * @property {LogEvent[]} events
 * @property {string} logPath
 * @property {(event: string, pred?: (e: LogEvent) => boolean) => LogEvent | undefined} find
 * @property {(event: string) => LogEvent[]} all
 */

/**
 * An ftproxy front (child process) in front of two supervised redis copies; resolves once it
 * logged `listening`. Every output line goes to logPath.
 * @param {string} dir
 * @param {Replica[]} replicas  in priority order (the first is the primary)
 * @returns {Promise<Front>}
 */
async function startFront (dir, replicas) {
  const config = path.join(dir, 'ftproxy.yaml')
  const logPath = path.join(dir, 'front.log')
  writeFileSync(config, [
    'listen: 127.0.0.1:0',
    `state_dir: ${JSON.stringify(path.join(dir, 'state'))}`,
    'output_commit: ack',
    `protocol: ${PROTOCOL}`,
    'admin: { listen: 127.0.0.1:0 }',
    'health_check: { interval: 200ms, timeout: 200ms }',
    'timeouts: { connect: 1s, stall: 1s, linger: 1s }',
    'log: { level: info, format: json }',
    'replicas:',
    ...replicas.map(replicaYaml),
    '',
  ].join('\n'))
  writeFileSync(logPath, `# config ${config}\n${readFileSync(config, 'utf8')}\n`)
  /** @type {LogEvent[]} */
  const events = []
  const child = spawnChild(process.execPath, [BIN, 'run', '--config', config], {
    name: 'ftproxy',
    cwd: dir,
    onLine: (line, stream) => {
      appendFileSync(logPath, stream === 'stdout' ? line + '\n' : `[stderr] ${line}\n`)
      if (stream !== 'stdout' || !line.startsWith('{')) return
      try { events.push(JSON.parse(line)) } catch {}
    },
  })
  /** @type {Front['find']} */
  const find = (event, pred = () => true) => events.find((e) => e.event === event && pred(e))
  const all = (/** @type {string} */ event) => events.filter((e) => e.event === event)
  const settled = () => find('listening') || find('startup_failed') || !child.alive()
  try {
    await until(settled, 'listening', 20000)
  } catch (err) {
    await child.stop(1000)
    throw err
  }
  const ev = find('listening')
  if (!ev) {
    await child.stop(1000)
    const failed = JSON.stringify(find('startup_failed') ?? null)
    throw new Error(`front did not start: ${failed}\n${child.tail()}`)
  }
  const address = String(ev.address)
  const port = Number(address.slice(address.lastIndexOf(':') + 1))
  return { child, port, events, logPath, find, all }
}

// ---- the load ---------------------------------------------------------------------------------

/**
 * @typedef {object} Conn
 * @property {number} id
 * @property {RespClient} client
 * @property {Float64Array} times    arrival time of reply k
 * @property {Int32Array} ackIncr    per counter: INCRs answered with an integer
 * @property {Int32Array} sentIncr   per counter: INCRs written
 * @property {Uint8Array} ackSet     per SET: answered OK
 * @property {number} wrong          replies that were not what they had to be
 * @property {string[]} wrongSamples
 */

/** Command k of connection c (k from 0), and the reply it must get. */
const counter = (/** @type {number} */ c, /** @type {number} */ j) => `ctr:${c}:${j}`
const setKey = (/** @type {number} */ c, /** @type {number} */ n) => `drill:${c}:${n}`
/**
 * @param {number} round
 * @param {number} c
 * @param {number} n
 */
const setValue = (round, c, n) => `${round}-${c}-${n}`

/**
 * @param {number} k
 * @returns {number | string}  INCR: the counter's value after it; SET: 'OK'
 */
function expected (k) {
  return k % 2 === 0 ? Math.floor(k / 2 / KEYS) + 1 : 'OK'
}

/**
 * RESP bytes of commands [from, to) of connection c.
 * @param {number} round
 * @param {number} c
 * @param {number} from
 * @param {number} to
 */
function commands (round, c, from, to) {
  let s = ''
  for (let k = from; k < to; k++) {
    if (k % 2 === 0) {
      const key = counter(c, (k / 2) % KEYS)
      s += `*2\r\n$4\r\nINCR\r\n$${key.length}\r\n${key}\r\n`
    } else {
      const n = (k - 1) / 2
      const key = setKey(c, n)
      const v = setValue(round, c, n)
      s += `*3\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$${v.length}\r\n${v}\r\n`
    }
  }
  return s
}

/**
 * @typedef {object} LoadResult
 * @property {Conn[]} conns
 * @property {number} started      performance.now() when the first commands were sent
 * @property {number | null} killedAt  performance.now() right after the signal (null: never)
 * @property {number} repliesAtKill
 * @property {number} inflightAtKill
 * @property {string | null} timedOut
 * @property {number} ms
 */

/**
 * CONNS connections to the front, none of them sending yet.
 * @param {number} port
 * @returns {Promise<Conn[]>}
 */
async function openConns (port) {
  const connecting = Array.from({ length: CONNS }, () => RespClient.connect(port))
  const clients = await withDeadline(Promise.all(connecting), 10000, 'client connects')
  return clients.map((client, id) => ({
    id,
    client,
    times: new Float64Array(PER_CONN),
    ackIncr: new Int32Array(KEYS),
    sentIncr: new Int32Array(KEYS),
    ackSet: new Uint8Array(PER_CONN / 2),
    wrong: 0,
    wrongSamples: [],
  }))
}

/**
 * Top a connection's window up: send its next commands, at most WINDOW unanswered.
 * @param {number} round
 * @param {Conn} c
 */
function pump (round, c) {
  const cl = c.client
  const from = cl.sent
  const to = Math.min(PER_CONN, cl.received + WINDOW)
  if (to <= from || cl.closed) return
  for (let k = from + (from % 2); k < to; k += 2) bump(c.sentIncr, (k / 2) % KEYS)
  cl.sendRaw(commands(round, c.id, from, to), to - from)
}

/**
 * Replies [first, first + replies.length) of a connection, arrived at `at`: their times, the
 * writes they acknowledge, the wrong ones.
 * @param {Conn} c
 * @param {RespReply[]} replies
 * @param {number} first
 * @param {number} at
 */
function takeReplies (c, replies, first, at) {
  for (let i = 0; i < replies.length; i++) {
    const k = first + i
    if (k >= PER_CONN) {
      c.wrong++
      if (c.wrongSamples.length < 5) {
        c.wrongSamples.push(`reply #${k} beyond the ${PER_CONN} sent: ${String(replies[i])}`)
      }
      continue
    }
    c.times[k] = at
    const got = replies[i]
    const want = expected(k)
    if (k % 2 === 0) {
      if (typeof got === 'number') bump(c.ackIncr, (k / 2) % KEYS)
    } else if (got === 'OK') {
      c.ackSet[(k - 1) / 2] = 1
    }
    if (got !== want) {
      c.wrong++
      if (c.wrongSamples.length < 5) {
        const shown = got instanceof RespError ? '-' + got.message : JSON.stringify(got)
        c.wrongSamples.push(`reply #${k}: want ${String(want)}, got ${shown}`)
      }
    }
  }
}

/**
 * @param {number} round
 * @param {number} port
 * @param {number} killAfter  total replies after which `kill` runs (once, from a data event)
 * @param {() => void} kill
 * @returns {Promise<LoadResult>}
 */
async function runLoad (round, port, killAfter, kill) {
  const conns = await openConns(port)
  let total = 0
  /** @type {number | null} */
  let killedAt = null
  let repliesAtKill = 0
  let inflightAtKill = 0
  const started = performance.now()
  for (const c of conns) {
    c.client.onReplies = (replies, first, at) => {
      takeReplies(c, replies, first, at)
      total += replies.length
      if (killedAt === null && total >= killAfter) {
        repliesAtKill = total
        inflightAtKill = conns.reduce((n, x) => n + x.client.sent - x.client.received, 0)
        kill()
        killedAt = performance.now()
      }
      pump(round, c)
    }
  }
  for (const c of conns) pump(round, c)
  /** @type {string | null} */
  let timedOut = null
  const allDone = () => conns.every((c) => c.client.received >= PER_CONN || c.client.closed)
  await until(allDone, 'every reply', LOAD_DEADLINE_MS)
    .catch((/** @type {Error} */ err) => { timedOut = err.message })
  const ms = performance.now() - started
  return { conns, started, killedAt, repliesAtKill, inflightAtKill, timedOut, ms }
}

/**
 * The longest silence of one connection around the kill (see the header), the one that
 * contains the kill instant (span), and the longest one between replies before the kill (the
 * background: what this load shows without a failure). gap is null when no reply came after
 * the kill.
 * @param {Conn} c
 * @param {number} started
 * @param {number} killedAt
 */
function gapOf (c, started, killedAt) {
  let gap = /** @type {number | null} */ (null)
  let span = /** @type {number | null} */ (null)
  let before = 0
  const n = c.client.received < PER_CONN ? c.client.received : PER_CONN
  let prev = started
  for (let k = 0; k < n; k++) {
    const at = c.times[k] ?? NaN // k < PER_CONN, the length of times
    const d = at - prev
    if (at <= killedAt) {
      if (k > 0 && d > before) before = d
    } else if (prev <= killedAt + GAP_WINDOW_MS) {
      if (gap === null || d > gap) gap = d
      if (prev <= killedAt && span === null) span = d
    }
    prev = at
  }
  return { gap, span, before }
}

// ---- checks -----------------------------------------------------------------------------------

/**
 * What the surviving redis holds against what was acknowledged.
 * @typedef {object} Tally
 * @property {number} checked          acknowledged writes looked at
 * @property {number} lost             acknowledged, not there
 * @property {number} duplicated       INCRs applied more often than sent
 * @property {number} appliedUnacked   INCRs applied but never acknowledged (allowed)
 * @property {string[]} samples        the first few discrepancies
 */

/**
 * Ask the surviving redis directly: every acknowledged write exactly once.
 * @param {number} round
 * @param {number} port
 * @param {Conn[]} conns
 */
async function checkServer (round, port, conns) {
  const r = await RespClient.connect(port)
  try {
    /** @type {Tally} */
    const t = { checked: 0, lost: 0, duplicated: 0, appliedUnacked: 0, samples: [] }
    await checkCounters(r, conns, t)
    await checkSets(r, round, conns, t)
    const [dbsize] = await r.call([['DBSIZE']])
    const { checked, lost, duplicated, appliedUnacked, samples } = t
    return { checked, lost, duplicated, appliedUnacked, dbsize: Number(dbsize), samples }
  } finally {
    r.destroy()
  }
}

/**
 * Every counter holds its acknowledged INCRs, and no more than were sent.
 * @param {RespClient} r
 * @param {Conn[]} conns
 * @param {Tally} t
 */
async function checkCounters (r, conns, t) {
  const gets = conns.flatMap((c) => {
    return Array.from({ length: KEYS }, (_, j) => ['GET', counter(c.id, j)])
  })
  const values = await r.call(gets, 20000)
  let i = 0
  for (const c of conns) {
    for (let j = 0; j < KEYS; j++, i++) {
      const raw = values[i]
      const v = raw === null ? 0 : Number(raw)
      const acked = c.ackIncr[j] ?? 0 // j < KEYS, the length of both
      const sent = c.sentIncr[j] ?? 0
      t.checked += acked
      if (!Number.isInteger(v)) {
        t.lost += acked
        if (t.samples.length < 10) {
          t.samples.push(`${counter(c.id, j)} holds ${JSON.stringify(raw)}`)
        }
        continue
      }
      if (v < acked) t.lost += acked - v
      if (v > sent) t.duplicated += v - sent
      if (v > acked && v <= sent) t.appliedUnacked += v - acked
      if ((v < acked || v > sent) && t.samples.length < 10) {
        t.samples.push(`${counter(c.id, j)} = ${v}, acknowledged ${acked}, sent ${sent}`)
      }
    }
  }
}

/**
 * Every acknowledged SET key holds its value (MGET in slices).
 * @param {RespClient} r
 * @param {number} round
 * @param {Conn[]} conns
 * @param {Tally} t
 */
async function checkSets (r, round, conns, t) {
  for (const c of conns) {
    /** @type {number[]} */
    const ns = []
    for (let n = 0; n < c.ackSet.length; n++) if (c.ackSet[n]) ns.push(n)
    for (let s = 0; s < ns.length; s += 500) {
      const slice = ns.slice(s, s + 500)
      const [got] = await r.call([['MGET', ...slice.map((n) => setKey(c.id, n))]], 20000)
      if (!Array.isArray(got) || got.length !== slice.length) {
        throw new Error(`MGET: unexpected reply ${String(got)}`)
      }
      slice.forEach((n, x) => {
        t.checked++
        const want = setValue(round, c.id, n)
        if (got[x] !== want) {
          t.lost++
          if (t.samples.length < 10) {
            t.samples.push(`${setKey(c.id, n)} = ${JSON.stringify(got[x])}, want ${want}`)
          }
        }
      })
    }
  }
}

// ---- one round --------------------------------------------------------------------------------

/**
 * @typedef {object} RoundResult
 * @property {number} round
 * @property {'SIGKILL' | 'SIGSTOP'} signal
 * @property {number} seed
 * @property {string} primary
 * @property {string} backup
 * @property {number} killFraction
 * @property {boolean} ok
 * @property {string[]} problems
 * @property {number | null} gapMs
 * @property {number | null} gapSpanMs
 * @property {number | null} backgroundGapMs
 * @property {number | null} failoverMs
 * @property {string | null} failoverReason
 * @property {number} repliesAtKill
 * @property {number} inflightAtKill
 * @property {number} replies
 * @property {number} loadMs
 * @property {number} checked
 * @property {number} lost
 * @property {number} duplicated
 * @property {number} appliedUnacked
 * @property {number} dropped
 * @property {number} wrongReplies
 * @property {number} connsWithoutGap
 * @property {number} teardownMs
 * @property {string | null} failLog
 *
 * @typedef {object} RoundPlan   what a round does, fixed by its seed and number
 * @property {number} round
 * @property {'SIGKILL' | 'SIGSTOP'} sig
 * @property {number} seed
 * @property {number} killFraction   of all replies, after which the primary gets the signal
 * @property {Replica} primary
 * @property {Replica} backup
 */

/**
 * A round's result before it ran: nothing measured yet.
 * @param {RoundPlan} plan
 * @returns {RoundResult}
 */
function newResult (plan) {
  return {
    round: plan.round,
    signal: plan.sig,
    seed: plan.seed,
    primary: plan.primary.name,
    backup: plan.backup.name,
    killFraction: Math.round(plan.killFraction * 1000) / 1000,
    ok: false,
    problems: [],
    gapMs: null,
    gapSpanMs: null,
    backgroundGapMs: null,
    failoverMs: null,
    failoverReason: null,
    repliesAtKill: 0,
    inflightAtKill: 0,
    replies: 0,
    loadMs: 0,
    checked: 0,
    lost: 0,
    duplicated: 0,
    appliedUnacked: 0,
    dropped: 0,
    wrongReplies: 0,
    connsWithoutGap: 0,
    teardownMs: 0,
    failLog: null,
  }
}

/**
 * @param {number} round
 * @param {'SIGKILL' | 'SIGSTOP'} sig
 * @returns {Promise<RoundResult>}
 */
async function runRound (round, sig) {
  const seed = roundSeed(BASE_SEED, round)
  const rnd = prng(seed)
  const killFraction = 0.15 + 0.7 * rnd()
  const a = { name: 'a', port: 0 }
  const b = { name: 'b', port: 0 }
  const [primary, backup] = round % 2 === 1 ? [a, b] : [b, a]
  /** @type {RoundPlan} */
  const plan = { round, sig, seed, killFraction, primary, backup }
  const res = newResult(plan)
  const killAt = `${(killFraction * 100).toFixed(1)}% of replies`
  process.stdout.write(
    `round ${round} (${sig} of the primary ${primary.name}; seed ${seed}, kill after ${killAt}) … `)

  const f = await startRoundFront(plan, a, b)
  const stopped = { pid: 0 } // the primary, once SIGSTOPped
  try {
    await exercise(f, plan, res, stopped)
  } catch (err) {
    res.problems.push(`error: ${/** @type {Error} */ (err).stack ?? String(err)}`)
  } finally {
    res.teardownMs = await teardown(f, stopped.pid, res.problems)
  }
  finishRound(plan, res, f.logPath)
  return res
}

/**
 * The round's front on new ports (a port taken meanwhile is retried with new ports, twice at
 * most).
 * @param {RoundPlan} plan
 * @param {Replica} a
 * @param {Replica} b
 */
async function startRoundFront (plan, a, b) {
  for (let attempt = 1; ; attempt++) {
    const dir = makeTempDir(`ftproxy-drill-${plan.round}`)
    a.port = await freePort()
    do b.port = await freePort(); while (b.port === a.port)
    try {
      return await startFront(dir, [plan.primary, plan.backup])
    } catch (err) {
      if (attempt >= 3) throw err
      process.stdout.write(`(setup retry: ${/** @type {Error} */ (err).message.split('\n')[0]}) `)
    }
  }
}

/**
 * The load with the signal in its middle, then every check; problems go to res.problems.
 * @param {Front} f
 * @param {RoundPlan} plan
 * @param {RoundResult} res
 * @param {{ pid: number }} stopped   gets the primary's pid once it is SIGSTOPped
 */
async function exercise (f, plan, res, stopped) {
  const { round, sig, primary } = plan
  const problems = res.problems
  const started = f.find('replica_process_started', (e) => e.replica === primary.name)
  const pid = Number(started?.pid)
  if (!Number.isInteger(pid) || pid <= 0) {
    throw new Error(`no replica_process_started for ${primary.name}`)
  }

  const killAfter = Math.floor(plan.killFraction * CONNS * PER_CONN)
  const load = await runLoad(round, f.port, killAfter, () => {
    process.kill(pid, sig)
    if (sig === 'SIGSTOP') stopped.pid = pid
  })
  res.loadMs = Math.round(load.ms)
  res.repliesAtKill = load.repliesAtKill
  res.inflightAtKill = load.inflightAtKill
  res.replies = load.conns.reduce((n, c) => n + Math.min(c.client.received, PER_CONN), 0)
  if (load.killedAt === null) problems.push('the primary was never signalled (too few replies)')
  if (load.timedOut) problems.push(`load: ${load.timedOut}`)

  checkConns(load.conns, res)
  if (load.killedAt !== null) measureGaps(load.conns, load.started, load.killedAt, res)
  await checkFront(f, plan, res)
  await checkSurvivor(round, plan.backup.port, load.conns, res)

  for (const c of load.conns) c.client.end()
}

/**
 * Replies and connections: every reply came and was right, no connection dropped.
 * @param {Conn[]} conns
 * @param {RoundResult} res
 */
function checkConns (conns, res) {
  const problems = res.problems
  for (const c of conns) {
    const cl = c.client
    if (cl.received !== PER_CONN) {
      problems.push(`conn ${c.id}: ${cl.received} of ${PER_CONN} replies`)
    }
    if (cl.closed || cl.ended || cl.error) {
      res.dropped++
      const how = `closed ${cl.closed}, ended ${cl.ended}, error ${cl.error?.message ?? 'none'}`
      problems.push(`conn ${c.id}: dropped (${how})`)
    }
    if (c.wrong) {
      res.wrongReplies += c.wrong
      problems.push(`conn ${c.id}: ${c.wrong} wrong replies: ${c.wrongSamples.join('; ')}`)
    }
  }
}

/**
 * The round's gap, span and background gap: the worst over connections (see gapOf).
 * @param {Conn[]} conns
 * @param {number} started
 * @param {number} killedAt
 * @param {RoundResult} res
 */
function measureGaps (conns, started, killedAt, res) {
  let worst = 0
  let worstSpan = 0
  let before = 0
  for (const c of conns) {
    const g = gapOf(c, started, killedAt)
    if (g.gap === null) res.connsWithoutGap++
    else worst = Math.max(worst, g.gap)
    if (g.span !== null) worstSpan = Math.max(worstSpan, g.span)
    before = Math.max(before, g.before)
  }
  res.gapMs = ms1(worst)
  res.gapSpanMs = ms1(worstSpan)
  res.backgroundGapMs = ms1(before)
}

/**
 * The front's account: one failover, from the primary to the backup, and none of the events
 * that mean lost or diverged state.
 * @param {Front} f
 * @param {RoundPlan} plan
 * @param {RoundResult} res
 */
async function checkFront (f, plan, res) {
  const problems = res.problems
  await until(() => f.find('failover'), 'failover event', 5000).catch(() => {})
  const fo = f.find('failover')
  if (!fo) {
    problems.push('no failover event')
  } else {
    res.failoverMs = typeof fo.duration_ms === 'number' ? fo.duration_ms : null
    res.failoverReason = String(fo.reason)
    if (fo.from !== plan.primary.name || fo.to !== plan.backup.name) {
      problems.push(`failover from ${String(fo.from)} to ${String(fo.to)}`)
    }
  }
  const failovers = f.all('failover').length
  if (failovers > 1) problems.push(`${failovers} failover events`)
  const bads = ['divergence', 'splice_failed', 'serving_stopped', 'arbiter_lost', 'arbiter_error']
  for (const bad of bads) {
    const n = f.all(bad).length
    if (n) problems.push(`${n} ${bad} event(s): ${JSON.stringify(f.find(bad))}`)
  }
}

/**
 * The surviving redis, directly: every acknowledged write there exactly once, and (when all
 * else is well) no key more or less than the load wrote.
 * @param {number} round
 * @param {number} port
 * @param {Conn[]} conns
 * @param {RoundResult} res
 */
async function checkSurvivor (round, port, conns, res) {
  const problems = res.problems
  const srv = await checkServer(round, port, conns)
  res.checked = srv.checked
  res.lost = srv.lost
  res.duplicated = srv.duplicated
  res.appliedUnacked = srv.appliedUnacked
  if (srv.lost) problems.push(`${srv.lost} acknowledged write(s) lost`)
  if (srv.duplicated) problems.push(`${srv.duplicated} INCR(s) applied more often than sent`)
  if (srv.samples.length) problems.push(`server: ${srv.samples.join('; ')}`)
  const wantKeys = CONNS * KEYS + CONNS * PER_CONN / 2
  if (problems.length === 0 && srv.dbsize !== wantKeys) {
    problems.push(`DBSIZE ${srv.dbsize}, want ${wantKeys}`)
  }
}

/**
 * Teardown: a stopped redis is killed (and continued); the front gets SIGTERM and must exit
 * (it stops the redis copies it supervises); then no redis of this round may be left.
 * Resolves to the milliseconds it took.
 * @param {Front} f
 * @param {number} stoppedPid   0: none
 * @param {string[]} problems
 */
async function teardown (f, stoppedPid, problems) {
  const t0 = performance.now()
  if (stoppedPid) {
    signal(stoppedPid, 'SIGKILL')
    signal(stoppedPid, 'SIGCONT')
  }
  signal(f.child.pid, 'SIGTERM')
  const exit = await withDeadline(f.child.exited, 15000, 'front exit').catch(() => null)
  if (exit === null) {
    problems.push('the front did not exit within 15 s of SIGTERM')
  } else if (exit.code !== 0) {
    problems.push(`the front exited with code ${exit.code}, signal ${exit.signal}`)
  }
  const pids = f.all('replica_process_started').map((e) => Number(e.pid)).filter((p) => p > 0)
  await until(() => pids.every((p) => !processAlive(p)), 'redis processes gone', 5000).catch(() => {
    const left = pids.filter(processAlive).join(', ')
    problems.push(`redis process(es) left after the front exited: ${left}`)
    for (const p of pids) signal(p, 'SIGKILL')
  })
  await f.child.stop(500)
  return Math.round(performance.now() - t0)
}

/**
 * The round's verdict: ok, or the front's log kept in /tmp with the problems; one line out.
 * @param {RoundPlan} plan
 * @param {RoundResult} res
 * @param {string} logPath   the front's log
 */
function finishRound (plan, res, logPath) {
  const { round, sig, seed, primary } = plan
  const problems = res.problems
  res.ok = problems.length === 0
  if (!res.ok) {
    res.failLog = `/tmp/drill-fail-${round}.log`
    copyFileSync(logPath, res.failLog)
    const what = `base seed ${BASE_SEED}, round seed ${seed}, ${sig} of ${primary.name}`
    appendFileSync(res.failLog, `\n# drill round ${round}: ${what}\n# ${problems.join('\n# ')}\n`)
  }
  process.stdout.write(res.ok
    ? `ok: gap ${res.gapMs} ms, failover ${res.failoverMs} ms, ${res.checked} writes checked\n`
    : `FAILED (log: ${res.failLog})\n  ${problems.slice(0, 20).join('\n  ')}\n`)
}

// ---- main -------------------------------------------------------------------------------------

/**
 * @param {number[]} xs
 * @param {number} p
 */
function pct (xs, p) {
  const v = percentile([...xs].sort((x, y) => x - y), p)
  return Number.isNaN(v) ? null : ms1(v)
}

/**
 * The rounds to run: ROUNDS SIGKILL rounds, then (unless noStop) one SIGSTOP round.
 * @param {boolean} noStop
 */
function planRounds (noStop) {
  /** @type {Array<[number, 'SIGKILL' | 'SIGSTOP']>} */
  const plan = []
  for (let r = 1; r <= ROUNDS; r++) plan.push([r, 'SIGKILL'])
  if (!noStop) plan.push([ROUNDS + 1, 'SIGSTOP'])
  if (ONLY !== null && !plan.some(([r]) => r === ONLY)) {
    throw new Error(`--only ${ONLY}: rounds are 1..${plan.length} with these options`)
  }
  return plan
}

/**
 * The figures over every round.
 * @param {RoundResult[]} results
 * @param {number} runtimeS
 */
function summaryOf (results, runtimeS) {
  const kills = results.filter((r) => r.signal === 'SIGKILL')
  const stops = results.filter((r) => r.signal === 'SIGSTOP')
  const gaps = /** @type {number[]} */ (kills.map((r) => r.gapMs).filter((x) => x !== null))
  const fos = /** @type {number[]} */ (kills.map((r) => r.failoverMs).filter((x) => x !== null))
  const sum = (/** @type {(r: RoundResult) => number} */ f) => {
    return results.reduce((n, r) => n + f(r), 0)
  }
  return {
    rounds: results.length,
    failedRounds: results.filter((r) => !r.ok).map((r) => r.round),
    sigkill: {
      rounds: kills.length,
      gapMs: { p50: pct(gaps, 50), p99: pct(gaps, 99), max: pct(gaps, 100) },
      failoverMs: { p50: pct(fos, 50), max: pct(fos, 100) },
    },
    sigstop: stops.map((r) => ({
      round: r.round,
      gapMs: r.gapMs,
      failoverMs: r.failoverMs,
      reason: r.failoverReason,
    })),
    checked: sum((r) => r.checked),
    lost: sum((r) => r.lost),
    duplicated: sum((r) => r.duplicated),
    dropped: sum((r) => r.dropped),
    wrongReplies: sum((r) => r.wrongReplies),
    runtimeS,
  }
}

/** @typedef {ReturnType<typeof summaryOf>} Summary */

/** @param {Summary} summary */
function printSummary (summary) {
  const { sigkill } = summary
  const failed = summary.failedRounds.length ? summary.failedRounds.join(', ') : 'none'
  console.log('')
  console.log(`rounds: ${summary.rounds} (${sigkill.rounds} SIGKILL, ` +
    `${summary.sigstop.length} SIGSTOP), failed: ${failed}`)
  console.log(`SIGKILL gap (ms): p50 ${sigkill.gapMs.p50}, p99 ${sigkill.gapMs.p99}, ` +
    `max ${sigkill.gapMs.max}`)
  console.log(`SIGKILL failover duration_ms: p50 ${sigkill.failoverMs.p50}, ` +
    `max ${sigkill.failoverMs.max}`)
  for (const s of summary.sigstop) {
    console.log(`SIGSTOP gap ${s.gapMs} ms, failover ${s.failoverMs} ms (${s.reason})`)
  }
  console.log(`acknowledged writes checked: ${summary.checked}; lost ${summary.lost}; ` +
    `duplicated ${summary.duplicated}; dropped connections ${summary.dropped}; ` +
    `wrong replies ${summary.wrongReplies}`)
  console.log(`runtime: ${summary.runtimeS} s`)
}

/**
 * bench/results/drill.json (everything) and drill.md (a table of the rounds).
 * @param {RoundResult[]} results
 * @param {Summary} summary
 */
function writeResults (results, summary) {
  mkdirSync(RESULTS, { recursive: true })
  const params = {
    conns: CONNS,
    commandsPerConn: PER_CONN,
    countersPerConn: KEYS,
    window: WINDOW,
    quick: QUICK,
    baseSeed: BASE_SEED,
    outputCommit: 'ack',
    stall: '1s',
    healthCheck: '200ms/200ms',
  }
  const json = {
    date: new Date().toISOString(),
    node: process.version,
    params,
    summary,
    rounds: results,
  }
  writeFileSync(path.join(RESULTS, 'drill.json'), JSON.stringify(json, null, 2) + '\n')
  const { sigkill } = summary
  const quickFlag = (QUICK ? ' --quick' : '') +
    (PROTOCOL !== 'raw' ? ` --protocol ${PROTOCOL}` : '')
  const md = [
    '# ftproxy failure drill',
    '',
    `${new Date().toISOString().slice(0, 10)}, loopback, node ${process.version}; ` +
      `${CONNS} connections x ${PER_CONN} pipelined commands (INCR/SET, window ${WINDOW}), ` +
      'output_commit ack, two supervised redis-server copies, stall 1s. ' +
      `Base seed ${BASE_SEED}; runtime ${summary.runtimeS} s. ` +
      'Gap: the longest silence any connection saw between two replies around the kill; ' +
      'background gap: the longest before the kill (no failure).',
    '',
    '| round | signal | primary | kill at | gap ms | background gap ms | failover ms ' +
      '| writes checked | lost | dup | dropped | ok |',
    '| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    ...results.map(roundRow),
    '',
    `SIGKILL gap p50 / p99 / max: ${sigkill.gapMs.p50} / ${sigkill.gapMs.p99} / ` +
      `${sigkill.gapMs.max} ms; ` +
      `failover duration p50 / max: ${sigkill.failoverMs.p50} / ${sigkill.failoverMs.max} ms.`,
    `Acknowledged writes checked: ${summary.checked}; lost: ${summary.lost}; ` +
      `duplicated: ${summary.duplicated}; dropped connections: ${summary.dropped}.`,
    '',
    `Reproduce: \`npm run drill -- --rounds ${ROUNDS} --seed ${BASE_SEED}${quickFlag}\``,
    '',
  ].join('\n')
  writeFileSync(path.join(RESULTS, 'drill.md'), md)
}

/**
 * A round's row in drill.md.
 * @param {RoundResult} r
 */
function roundRow (r) {
  const cells = [
    r.round, r.signal, r.primary, `${Math.round(r.killFraction * 100)}%`, r.gapMs,
    r.backgroundGapMs, r.failoverMs, r.checked, r.lost, r.duplicated, r.dropped,
    r.ok ? 'yes' : 'NO',
  ]
  // String(): null shows as "null", as it does in a template (join would leave it empty).
  return `| ${cells.map(String).join(' | ')} |`
}

async function main () {
  const t0 = performance.now()
  const noStop = opts['no-stop'] === true
  const rounds = ONLY !== null
    ? `round ${ONLY} only`
    : `${ROUNDS} SIGKILL round(s)${noStop ? '' : ' + 1 SIGSTOP round'}`
  console.log(`ftproxy drill: ${rounds}, ` +
    `${CONNS} connections x ${PER_CONN} pipelined commands (window ${WINDOW}), ` +
    `base seed ${BASE_SEED}`)
  const quickFlag = (QUICK ? ' --quick' : '') +
    (PROTOCOL !== 'raw' ? ` --protocol ${PROTOCOL}` : '')
  console.log(`replay: node bench/drill.mjs --seed ${BASE_SEED}${quickFlag} [--only R]`)
  /** @type {RoundResult[]} */
  const results = []
  for (const [r, sig] of planRounds(noStop)) {
    if (ONLY !== null && r !== ONLY) continue
    results.push(await runRound(r, sig))
  }
  const runtimeS = Math.round((performance.now() - t0) / 100) / 10
  const summary = summaryOf(results, runtimeS)
  const bad = summary.lost > 0 || summary.duplicated > 0 || summary.dropped > 0 ||
    summary.failedRounds.length > 0
  printSummary(summary)

  if (ONLY !== null) {
    console.log('(a replay of one round: bench/results not written)')
    return bad ? 1 : 0
  }
  writeResults(results, summary)
  return bad ? 1 : 0
}

if (REPROTECT) {
  await import('./reprotect.mjs') // it runs itself
} else {
  main().then((code) => { process.exitCode = code }, (err) => {
    console.error(err instanceof Error ? err.stack : String(err))
    process.exitCode = 2
  })
}
