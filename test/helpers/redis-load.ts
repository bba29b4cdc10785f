// Shared-key load against Redis through a front, and the checks that follow it: many
// connections pipelining a seeded mix of commands on a few shared keys (counters, lists, a
// set, a hash, MULTI/EXEC transfers), every reply matched to its request and tallied, then
// a copy of the data asked directly whether it holds exactly what the clients were told.

import { Queue } from '../../lib/util/queue.js'
import { mulberry32 } from './prng.js'
import { RespConn, RespError, type Arg, type RespValue } from './resp.js'
import { until } from './until.js'

export const COUNTERS = 5
const LISTS = 3
const P = 'mix:' // every key of the mix starts so
const counterKey = (i: number): string => `${P}c:${i}`
const listKey = (i: number): string => `${P}l:${i}`
const SET = `${P}s`
const HASH = `${P}h`
const FROM = `${P}ta` // MULTI/EXEC transfers: DECRBY FROM, INCRBY TO; the sum stays 0
const TO = `${P}tb`

/** The reply a request expects, and what it is tallied as. */
type Expect =
  | { kind: 'incr' | 'hincr', key: string }
  | { kind: 'lpush', elem: string }
  | { kind: 'rpop' | 'int' | 'ok' | 'queued' | 'exec' }

interface Op { args: Arg[], expect: Expect }

interface Unanswered {
  incr: Map<string, number>
  hincr: Map<string, number>
  push: Set<string>
  rpop: number
}

/** What the clients were told, summed over all connections. */
export interface Tally {
  sent: number
  acked: number
  /** INCR replies per counter. */
  incr: Map<string, number[]>
  /** Acknowledged HINCRBYs per field. */
  hincr: Map<string, number>
  /** Elements whose LPUSH was acknowledged. */
  pushed: Set<string>
  /** Elements RPOP returned. */
  popped: string[]
  /** EXEC replies that applied a transfer. */
  transfers: number
  /** Requests never answered, by what they were. */
  unanswered: Unanswered
  /** Replies of the wrong shape (the first few). */
  bad: string[]
}

function newTally (): Tally {
  return {
    sent: 0,
    acked: 0,
    incr: new Map(),
    hincr: new Map(),
    pushed: new Set(),
    popped: [],
    transfers: 0,
    unanswered: { incr: new Map(), hincr: new Map(), push: new Set(), rpop: 0 },
    bad: [],
  }
}

function valuesOf (m: Map<string, number[]>, key: string): number[] {
  const have = m.get(key)
  if (have) return have
  const made: number[] = []
  m.set(key, made)
  return made
}

const bump = (m: Map<string, number>, k: string): void => { m.set(k, (m.get(k) ?? 0) + 1) }

// The next request(s) of connection `conn` (a MULTI/EXEC block is four).
function nextOps (rand: () => number, conn: number, seq: number, incrOnly: boolean): Op[] {
  const pick = (n: number): number => Math.floor(rand() * n)
  const r = incrOnly ? 0 : rand()
  if (r < 0.3) {
    const key = counterKey(pick(COUNTERS))
    return [{ args: ['INCR', key], expect: { kind: 'incr', key } }]
  }
  if (r < 0.45) {
    const elem = `e:${conn}:${seq}`
    return [{ args: ['LPUSH', listKey(pick(LISTS)), elem], expect: { kind: 'lpush', elem } }]
  }
  if (r < 0.6) return [{ args: ['RPOP', listKey(pick(LISTS))], expect: { kind: 'rpop' } }]
  if (r < 0.68) return [{ args: ['SADD', SET, `m:${pick(100)}`], expect: { kind: 'int' } }]
  if (r < 0.75) return [{ args: ['SREM', SET, `m:${pick(100)}`], expect: { kind: 'int' } }]
  if (r < 0.82) {
    return [{ args: ['HSET', HASH, `f:${pick(50)}`, `v:${conn}:${seq}`], expect: { kind: 'int' } }]
  }
  if (r < 0.9) {
    const key = `n:${pick(10)}`
    return [{ args: ['HINCRBY', HASH, key, 1], expect: { kind: 'hincr', key } }]
  }
  const n = 1 + pick(9)
  return [
    { args: ['MULTI'], expect: { kind: 'ok' } },
    { args: ['DECRBY', FROM, n], expect: { kind: 'queued' } },
    { args: ['INCRBY', TO, n], expect: { kind: 'queued' } },
    { args: ['EXEC'], expect: { kind: 'exec' } },
  ]
}

// Tallies one reply; false if its shape is not what the request expects.
function tallyReply (t: Tally, e: Expect, v: RespValue): boolean {
  switch (e.kind) {
    case 'incr':
      if (typeof v !== 'number') return false
      valuesOf(t.incr, e.key).push(v)
      return true
    case 'hincr':
      if (typeof v !== 'number') return false
      bump(t.hincr, e.key)
      return true
    case 'lpush':
      if (typeof v !== 'number') return false
      t.pushed.add(e.elem)
      return true
    case 'rpop':
      if (typeof v === 'string') t.popped.push(v)
      return v === null || typeof v === 'string'
    case 'int': return typeof v === 'number'
    case 'ok': return v === 'OK'
    case 'queued': return v === 'QUEUED'
    case 'exec':
      if (!Array.isArray(v) || v.length !== 2 || !v.every((x) => typeof x === 'number')) {
        return false
      }
      t.transfers++
      return true
  }
}

function tallyUnanswered (t: Tally, e: Expect): void {
  if (e.kind === 'incr') bump(t.unanswered.incr, e.key)
  if (e.kind === 'hincr') bump(t.unanswered.hincr, e.key)
  if (e.kind === 'lpush') t.unanswered.push.add(e.elem)
  if (e.kind === 'rpop') t.unanswered.rpop++
}

export interface MixOptions {
  conns: number
  /** Requests per connection (a MULTI/EXEC block at the end may add up to three). */
  requests: number
  /** Requests per write. */
  burst: number
  /** Unanswered requests per connection at most. */
  window: number
  seed: number
  /** INCRs on the shared counters only. */
  incrOnly?: boolean
  /** After each chunk of replies, with the total of replies so far. */
  onProgress?: (acked: number) => void
  /** About every 10 ms while the load runs. */
  onTick?: () => void
  /** Once it says true, no more requests are sent (the run ends when all are answered). */
  stop?: () => boolean
  ms?: number
}

export interface MixRun {
  tally: Tally
  conns: RespConn[]
  ms: number
  /** Why the load did not finish in time (null: it did). */
  timedOut: string | null
  /** Connections closed or broken before their last reply. */
  broken: number
}

interface Drive {
  c: RespConn
  i: number
  rand: () => number
  queue: Queue<Expect>
}

const broken = (c: RespConn): boolean => c.closed || c.error !== null

/** Runs the mix on `opts.conns` connections to `port`; every reply is tallied. */
export async function runMix (port: number, opts: MixOptions): Promise<MixRun> {
  const { conns: n, requests, burst, window, seed, incrOnly = false, ms = 60000 } = opts
  const tally = newTally()
  const conns = await Promise.all(Array.from({ length: n }, () => RespConn.open(port)))
  const drives: Drive[] = conns.map((c, i) =>
    ({ c, i, rand: mulberry32(seed * 1000 + i), queue: new Queue<Expect>() }))
  const pump = (d: Drive): void => {
    if (opts.stop?.() === true) return
    while (d.c.sent < requests && d.c.sent - d.c.received < window) {
      const ops: Op[] = []
      while (ops.length < burst && d.c.sent + ops.length < requests) {
        ops.push(...nextOps(d.rand, d.i, d.c.sent + ops.length, incrOnly))
      }
      for (const op of ops) d.queue.push(op.expect)
      tally.sent += ops.length
      d.c.send(ops.map((op) => op.args))
    }
  }
  const take = (d: Drive): void => {
    for (const v of d.c.drain()) {
      const e = d.queue.shift()
      tally.acked++
      if (e === undefined || !tallyReply(tally, e, v)) {
        if (tally.bad.length < 10) tally.bad.push(`conn ${d.i}: ${e?.kind} got ${show(v)}`)
      }
    }
    opts.onProgress?.(tally.acked)
    if (!broken(d.c)) pump(d)
  }
  const started = Date.now()
  for (const d of drives) {
    d.c.onData = () => take(d)
    pump(d)
  }
  const finished = (d: Drive): boolean => broken(d.c) ||
    ((d.c.sent >= requests || opts.stop?.() === true) && d.c.received === d.c.sent)
  let timedOut: string | null = null
  await until(() => { opts.onTick?.(); return drives.every(finished) }, 'every reply', ms)
    .catch((err: Error) => { timedOut = err.message })
  for (const d of drives) {
    for (let e = d.queue.shift(); e; e = d.queue.shift()) tallyUnanswered(tally, e)
  }
  const lost = drives.filter((d) => broken(d.c) && d.c.received < d.c.sent).length
  return { tally, conns, ms: Date.now() - started, timedOut, broken: lost }
}

function show (v: RespValue): string {
  if (v instanceof RespError) return `error ${v.message}`
  return JSON.stringify(v, (_k, x: unknown) => typeof x === 'bigint' ? String(x) : x) ?? 'undefined'
}

/**
 * What the copy on `port` holds against what the clients were told: the problems found
 * (none: nothing acknowledged was lost, nothing was applied twice, transfers were atomic).
 * Requests never answered may or may not have been applied.
 */
export async function checkMix (port: number, t: Tally): Promise<string[]> {
  const c = await RespConn.open(port)
  try {
    const problems: string[] = []
    for (let i = 0; i < COUNTERS; i++) problems.push(...await checkCounter(c, t, counterKey(i)))
    problems.push(...await checkLists(c, t))
    for (const [field, n] of t.hincr) {
      const got = Number(await c.command('HGET', HASH, field))
      const extra = t.unanswered.hincr.get(field) ?? 0
      if (got < n || got > n + extra) problems.push(`${HASH} ${field}=${got}: ${n}+${extra} sent`)
    }
    const [from, to] = await c.call([['GET', FROM], ['GET', TO]])
    if (Number(from ?? 0) + Number(to ?? 0) !== 0) {
      problems.push(`transfers not atomic: ${FROM}=${show(from ?? null)} ${TO}=${show(to ?? null)}`)
    }
    return problems
  } finally {
    c.close()
  }
}

// A counter holds its acknowledged INCRs, plus at most its unanswered ones; no two INCRs
// were told the same value.
async function checkCounter (c: RespConn, t: Tally, key: string): Promise<string[]> {
  const got = Number(await c.command('GET', key))
  const values = t.incr.get(key) ?? []
  const extra = t.unanswered.incr.get(key) ?? 0
  const problems: string[] = []
  if (new Set(values).size !== values.length) problems.push(`${key}: a value told twice`)
  if (got < values.length || got > values.length + extra) {
    problems.push(`${key}=${got}: ${values.length} INCRs acknowledged, ${extra} unanswered`)
  }
  if (values.some((v) => v < 1 || v > got)) problems.push(`${key}: a value beyond ${got}`)
  return problems
}

// Every element is in a list or was popped, once; pops never answered may have taken some.
async function checkLists (c: RespConn, t: Tally): Promise<string[]> {
  const reads = Array.from({ length: LISTS }, (_, i) => ['LRANGE', listKey(i), 0, -1])
  const lists = await c.call(reads)
  const held = lists.flatMap((l) => Array.isArray(l) ? l.map(String) : [])
  const seen = [...held, ...t.popped]
  const problems: string[] = []
  if (new Set(seen).size !== seen.length) problems.push('an element popped twice, or popped + held')
  const alien = seen.filter((e) => !t.pushed.has(e) && !t.unanswered.push.has(e))
  if (alien.length > 0) problems.push(`elements never pushed: ${alien.slice(0, 3).join(' ')}`)
  const all = new Set(seen)
  const missing = [...t.pushed].filter((e) => !all.has(e))
  if (missing.length > t.unanswered.rpop) {
    problems.push(`${missing.length} pushed elements lost (${t.unanswered.rpop} pops unanswered)`)
  }
  return problems
}

/**
 * Every key of the copy on `port` with its type and value, read directly: order-free where
 * the type is (set members, hash fields sorted), so two correct copies give equal maps.
 */
async function snapshot (port: number): Promise<Map<string, string>> {
  const c = await RespConn.open(port)
  try {
    const keys = (await c.command('KEYS', '*') as string[]).sort()
    const types = await c.call(keys.map((k) => ['TYPE', k]), 30000)
    const reads: Arg[][] = keys.map((k, i) => readOf(String(types[i]), k))
    const values = await c.call(reads, 30000)
    const out = new Map<string, string>()
    keys.forEach((k, i) => {
      const type = String(types[i])
      out.set(k, `${type} ${canonical(type, values[i] ?? null)}`)
    })
    return out
  } finally {
    c.close()
  }
}

function readOf (type: string, key: string): Arg[] {
  switch (type) {
    case 'string': return ['GET', key]
    case 'list': return ['LRANGE', key, 0, -1]
    case 'set': return ['SMEMBERS', key]
    case 'hash': return ['HGETALL', key]
    case 'zset': return ['ZRANGE', key, 0, -1, 'WITHSCORES']
    default: return ['DUMP', key]
  }
}

function canonical (type: string, v: RespValue): string {
  if (type === 'set' && Array.isArray(v)) return show(v.map(String).sort())
  if (type === 'hash' && Array.isArray(v)) {
    const pairs: string[] = []
    for (let i = 0; i + 1 < v.length; i += 2) pairs.push(`${String(v[i])}=${String(v[i + 1])}`)
    return show(pairs.sort())
  }
  return show(v)
}

/** How the copies on ports a and b differ (the first few keys); none when identical. */
async function diffCopies (a: number, b: number): Promise<string[]> {
  const [sa, sb] = await Promise.all([snapshot(a), snapshot(b)])
  const out: string[] = []
  if (sa.size !== sb.size) out.push(`DBSIZE ${sa.size} != ${sb.size}`)
  for (const k of new Set([...sa.keys(), ...sb.keys()])) {
    if (sa.get(k) === sb.get(k)) continue
    const cut = (s = '(none)'): string => s.length > 80 ? `${s.slice(0, 80)}…` : s
    out.push(`${k}: ${cut(sa.get(k))} != ${cut(sb.get(k))}`)
    if (out.length >= 5) break
  }
  return out
}

/**
 * Waits (at most ms) until the copies are identical, as a backup that runs behind the primary
 * becomes once it has caught up; the differences left if it never does.
 */
export async function converge (a: number, b: number, ms = 20000): Promise<string[]> {
  let diff: string[] = []
  await until(async () => (diff = await diffCopies(a, b)).length === 0, 'the copies to agree', ms)
    .catch(() => {})
  return diff
}
