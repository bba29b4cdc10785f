// Connection-state rules of protocol: resp against two real redis-server copies, each while
// other connections INCR shared counters, so that the order across connections matters:
// MULTI/EXEC (with an uncompared command queued), DISCARD, WATCH; CLIENT REPLY OFF and SKIP
// (the connection falls back to raw order); MONITOR; QUIT; RESET after SUBSCRIBE and inside
// MULTI; garbage input. Each ends with no divergence, the backup still a backup, every shared
// INCR told a distinct value and counted, and the two copies identical.

import t from 'tap'
import type { Test } from 'tap'
import {
  haveRedis, redisPair, redisServer, type Server, type TestFront,
} from '../helpers/cluster.js'
import { mulberry32 } from '../helpers/prng.js'
import { converge } from '../helpers/redis-load.js'
import { RespConn, RespError, type RespValue } from '../helpers/resp.js'
import { sendAndWatch } from '../helpers/server-close.js'
import { until, untilValue } from '../helpers/until.js'

const skip = haveRedis() ? false : 'redis-server not installed'

const COUNTERS = ['bg:c:0', 'bg:c:1', 'bg:c:2']
const [C0 = '', C1 = ''] = COUNTERS
const LOAD_CONNS = 4
const BURST = 8
const WINDOW = 32
/** Replies the load must get while a subtest's commands run (they overlap). */
const OVERLAP = 1000

interface Pair { a: Server, b: Server, f: TestFront }

const pair = (tt: Test): Promise<Pair> => redisPair(tt, 'protocol: resp\noutput_commit: ack')

/** Connections INCRing the shared counters, pipelined, until stopped; every reply noted. */
class SharedLoad {
  /** The values INCRs on each counter were told (the load's and those noted). */
  readonly told = new Map<string, number[]>(COUNTERS.map((k) => [k, []]))
  /** INCRs applied with no reply (CLIENT REPLY OFF), per counter. */
  readonly silent = new Map<string, number>()
  readonly bad: string[] = []
  acked = 0
  private stopping = false

  private constructor (private readonly conns: RespConn[]) {}

  static async start (port: number, seed: number): Promise<SharedLoad> {
    const conns = await Promise.all(Array.from({ length: LOAD_CONNS }, () => RespConn.open(port)))
    const load = new SharedLoad(conns)
    conns.forEach((c, i) => load.drive(c, mulberry32(seed * 100 + i)))
    await load.progress(OVERLAP)
    return load
  }

  /** An INCR on a counter made elsewhere (in a transaction) and the value it was told. */
  note (key: string, v: RespValue): void {
    if (typeof v === 'number') this.told.get(key)?.push(v)
    else this.bad.push(`${key}: ${String(v)}`)
  }

  /** Waits until n more replies came (the load runs alongside whatever is awaited). */
  async progress (n = OVERLAP): Promise<void> {
    const to = this.acked + n
    await until(() => this.acked >= to || this.broken(), `${n} shared INCRs`, 15000)
  }

  /** Stops sending; waits for every reply, then closes. */
  async stop (): Promise<void> {
    this.stopping = true
    const done = (c: RespConn): boolean => c.received === c.sent || c.closed
    await until(() => this.conns.every(done), 'the shared load to finish', 15000)
    if (this.broken()) this.bad.push('a load connection closed')
    for (const c of this.conns) c.close()
  }

  /** What the copy on `port` holds against what was told: the problems found. */
  async check (port: number): Promise<string[]> {
    const c = await RespConn.open(port)
    const problems: string[] = []
    for (const [key, told] of this.told) {
      const got = Number(await c.command('GET', key))
      if (new Set(told).size !== told.length) problems.push(`${key}: a value told twice`)
      const want = told.length + (this.silent.get(key) ?? 0)
      if (got !== want) problems.push(`${key}=${got}, ${want} INCRs (${told.length} told)`)
    }
    c.close()
    return problems
  }

  private broken (): boolean {
    return this.conns.some((c) => c.closed || c.error !== null)
  }

  private drive (c: RespConn, rand: () => number): void {
    const keys: string[] = []
    const pump = (): void => {
      while (!this.stopping && c.sent - c.received < WINDOW) {
        const burst = Array.from({ length: BURST }, () =>
          COUNTERS[Math.floor(rand() * COUNTERS.length)] ?? C0)
        keys.push(...burst)
        c.send(burst.map((k) => ['INCR', k]))
      }
    }
    c.onData = () => {
      for (const v of c.drain()) {
        this.acked++
        this.note(keys.shift() ?? '?', v)
      }
      pump()
    }
    pump()
  }
}

/** The checks every subtest ends with. */
async function finish (tt: Test, p: Pair, load: SharedLoad): Promise<void> {
  await load.stop()
  tt.same(load.bad, [], 'every shared INCR answered with a number, no load connection lost')
  tt.same(await load.check(p.a.port), [],
    'each shared counter: every INCR told a distinct value, and the primary holds them all')
  tt.same(p.f.all('divergence'), [], 'no divergence')
  tt.equal(p.f.role('b'), 'backup', 'the backup is still a backup')
  tt.same(await converge(p.a.port, p.b.port), [], 'both copies identical')
}

/** The front's id of a client connection (from its connection_open event). */
async function connId (f: TestFront, c: RespConn): Promise<number> {
  const remote = `127.0.0.1:${c.socket.localPort ?? 0}`
  return Number((await f.waitEvent('connection_open', (e) => e.remote === remote)).conn)
}

const isErr = (v: RespValue | undefined): boolean => v instanceof RespError && v.code === 'ERR'

const protocolErrors = (f: TestFront, conn: number): unknown[] =>
  f.all('protocol_error').filter((e) => e.conn === conn).map((e) => e.reason)

t.test('MULTI/EXEC, DISCARD and WATCH among shared INCRs', { skip }, async (tt) => {
  const p = await pair(tt)
  const c = await RespConn.open(p.f.port)
  const members = Array.from({ length: 300 }, (_, i) => `m:${i}`)
  // Not integers: a hashtable, listed in each process's own hash order. Nothing touches it
  // after this, so no rehash step reorders it.
  tt.equal(await c.command('SADD', 'tx:set', ...members), 300, 'a set of 300 members')
  const load = await SharedLoad.start(p.f.port, 1)
  const [fromA, fromB] = await Promise.all([p.a.port, p.b.port].map(async (port) => {
    const d = await RespConn.open(port)
    const got = await d.command('SMEMBERS', 'tx:set')
    d.close()
    return got
  }))
  tt.notSame(fromA, fromB, 'the copies list the set in different orders (hash seeds differ)')

  // An EXEC whose queued commands include uncompared ones (TIME, SMEMBERS of a hashtable).
  const uncompared = p.f.front.counters.uncompared_replies
  for (let i = 0; i < 10; i++) {
    const replies = await c.call([['MULTI'], ['INCR', C0], ['TIME'], ['SMEMBERS', 'tx:set'],
      ['EXEC']])
    tt.same(replies.slice(0, 4), ['OK', 'QUEUED', 'QUEUED', 'QUEUED'], `round ${i}: queued`)
    const exec = replies[4]
    if (!Array.isArray(exec)) {
      tt.fail(`round ${i}: EXEC answered ${String(exec)}`)
      continue
    }
    load.note(C0, exec[0] ?? null)
    const time = exec[1]
    tt.ok(Array.isArray(time) && time.length === 2, `round ${i}: TIME in EXEC's array`)
    tt.same(exec[2], fromA, `round ${i}: the client got the primary's order of the set`)
  }
  await until(() => p.f.front.counters.uncompared_replies >= uncompared + 10,
    'the backup\'s EXEC replies to be counted as uncompared')
  await load.progress()

  const discard = await c.call([['MULTI'], ['INCR', 'tx:d'], ['INCR', C1], ['DISCARD'],
    ['GET', 'tx:d'], ['EXEC']])
  tt.same(discard.slice(0, 5), ['OK', 'QUEUED', 'QUEUED', 'OK', null],
    'DISCARD: nothing queued ran')
  tt.ok(isErr(discard[5]), 'and EXEC after it is an error')

  // WATCH, then a conflicting INCR from another connection: EXEC aborts (nil) on both.
  const other = await RespConn.open(p.f.port)
  tt.same(await c.call([['WATCH', 'tx:w'], ['GET', 'tx:w']]), ['OK', null], 'watching')
  tt.equal(await other.command('INCR', 'tx:w'), 1, 'the other connection changes the key')
  tt.same(await c.call([['MULTI'], ['INCR', 'tx:w'], ['EXEC']]), ['OK', 'QUEUED', null],
    'a watched key changed by another connection: EXEC returns nil')
  tt.same(await c.call([['MULTI'], ['INCR', 'tx:w'], ['EXEC']]), ['OK', 'QUEUED', [2]],
    'unwatched: EXEC runs')

  // The same race left to the order the front logs the two connections' input in (each
  // writes in turn first): that order decides, the same on both copies.
  const outcomes = { aborted: 0, ran: 0 }
  for (let i = 0; i < 40; i++) {
    await c.call([['WATCH', 'tx:r']])
    const tx = (): Promise<RespValue[]> => c.call([['MULTI'], ['INCR', 'tx:r'], ['EXEC']])
    const conflict = (): Promise<RespValue[]> => other.call([['INCR', 'tx:r']])
    const execs = i % 2 === 0
      ? (await Promise.all([tx(), conflict()]))[0]
      : (await Promise.all([conflict(), tx()]))[1]
    if (execs[2] === null) outcomes.aborted++
    else outcomes.ran++
  }
  tt.comment(`racing WATCH: ${outcomes.aborted} aborted, ${outcomes.ran} ran`)
  tt.ok(outcomes.aborted > 0 && outcomes.ran > 0, 'both outcomes happened')
  await load.progress()
  await finish(tt, p, load)
  tt.notOk(p.f.find('protocol_error'), 'every request framed')
  c.close()
  other.close()
})

const SILENT = 200

t.test('CLIENT REPLY OFF: that connection falls back to raw order, others unaffected',
  { skip }, async (tt) => {
    const p = await pair(tt)
    const load = await SharedLoad.start(p.f.port, 2)
    const c = await RespConn.open(p.f.port)
    const id = await connId(p.f, c)
    // Its INCRs on a shared counter, unanswered, are in raw order: written in log order as
    // they come, no turn waits for them. Nothing guarantees where each copy runs them among
    // the other connections' turns; on loopback each runs them as written (not a promise).
    const silent = Array.from({ length: SILENT }, () => ['INCR', C0])
    c.send([['CLIENT', 'REPLY', 'OFF'], ['SET', 'off:k', 1], ['INCR', 'off:k'], ...silent,
      ['INCR', 'off:k'], ['CLIENT', 'REPLY', 'ON'], ['GET', 'off:k']])
    load.silent.set(C0, SILENT)
    await c.waitReplies(2)
    tt.same(c.replies, ['OK', '3'], 'only CLIENT REPLY ON and GET answered')
    await p.f.waitEvent('protocol_error', (e) => e.conn === id)
    tt.equal(protocolErrors(p.f, id).length, 1, 'one protocol_error for that connection')
    tt.match(protocolErrors(p.f, id)[0], /REPLY/i, 'naming the cause')
    tt.same(await c.call([['INCR', 'off:k'], ['PING']]), [4, 'PONG'], 'it goes on, raw')
    await load.progress()
    await finish(tt, p, load)
    tt.equal(p.f.all('protocol_error').length, 1, 'no other connection fell back')
    c.close()
  })

t.test('CLIENT REPLY SKIP: one reply skipped, the connection falls back to raw order',
  { skip }, async (tt) => {
    const p = await pair(tt)
    const load = await SharedLoad.start(p.f.port, 3)
    const c = await RespConn.open(p.f.port)
    const id = await connId(p.f, c)
    c.send([['CLIENT', 'REPLY', 'SKIP'], ['SET', 'skip:k', 5], ['INCR', 'skip:k'], ['PING']])
    await c.waitReplies(2)
    tt.same(c.replies, [6, 'PONG'], 'CLIENT REPLY SKIP and SET unanswered, then replies')
    await p.f.waitEvent('protocol_error', (e) => e.conn === id)
    tt.equal(protocolErrors(p.f, id).length, 1, 'one protocol_error for that connection')
    tt.match(protocolErrors(p.f, id)[0], /REPLY/i, 'naming the cause')
    await load.progress()
    await finish(tt, p, load)
    tt.equal(p.f.all('protocol_error').length, 1, 'no other connection fell back')
    c.close()
  })

// A feed line: `+1700000000.123456 [0 127.0.0.1:41234] "SET" "mon:marker" "v"`.
const FEED = /^\d+\.\d+ \[\d+ ([\d.]+:\d+)\] (.*)$/

t.test('MONITOR while others run commands: the primary\'s feed, the backup in service',
  { skip }, async (tt) => {
    const p = await pair(tt)
    const load = await SharedLoad.start(p.f.port, 4)
    const m = await RespConn.open(p.f.port)
    tt.equal(await m.command('MONITOR'), 'OK', 'MONITOR answers +OK')
    const setter = await RespConn.open(p.f.port)
    tt.equal(await setter.command('SET', 'mon:marker', 'v'), 'OK', 'another connection SETs')
    const line = await untilValue(() => m.replies.map(String)
      .find((l) => l.includes('"SET" "mon:marker"')), 'the SET in the feed')
    const addr = FEED.exec(line)?.[1] ?? '?'
    await load.progress()
    const lines = m.replies.map(String)
    tt.ok(lines.slice(1).every((l) => FEED.test(l)), 'after +OK, only feed lines')
    tt.ok(lines.some((l) => l.includes('"INCR" "bg:c:')), 'the other connections\' INCRs in it')
    const clients = await Promise.all([p.a.port, p.b.port].map(async (port) => {
      const d = await RespConn.open(port)
      const list = String(await d.command('CLIENT', 'LIST'))
      d.close()
      return list
    }))
    tt.ok(clients[0]?.includes(`addr=${addr} `), `the SET's client (${addr}) is the primary's`)
    // RESET ends the feed; the connection then serves commands again (the primary's replies).
    const from = m.received
    m.send([['RESET'], ['INCR', C0]])
    const after = (): RespValue[] => m.replies.slice(m.replies.indexOf('RESET', from))
    await until(() => after().length === 2 || m.closed, 'RESET and INCR answered')
    tt.same(after().map((v) => typeof v), ['string', 'number'], '+RESET, then the INCR')
    load.note(C0, after()[1] ?? null)
    await finish(tt, p, load)
    tt.equal(p.f.front.status().protected, true, 'the front is protected')
    tt.ok(p.f.front.counters.uncompared_replies > 0, 'the backup\'s feed was counted, not compared')
    m.close()
    setter.close()
  })

t.test('QUIT; RESET after SUBSCRIBE and inside MULTI', { skip }, async (tt) => {
  const p = await pair(tt)
  const load = await SharedLoad.start(p.f.port, 5)
  const q = await RespConn.open(p.f.port)
  q.send([['PING'], ['INCR', C0], ['QUIT'], ['INCR', C0]])
  await until(() => q.ended || q.closed, 'the server\'s close after QUIT')
  const [pong, n, ok, ...rest] = q.replies
  tt.same([pong, ok, rest], ['PONG', 'OK', []], '+PONG, the INCR, +OK, then the close')
  load.note(C0, n ?? null)
  tt.equal(q.error, null, 'a clean close (FIN)')
  q.close()

  const s = await RespConn.open(p.f.port)
  const pub = await RespConn.open(p.f.port)
  const subscribed = await s.call([['SUBSCRIBE', 'rs:a', 'rs:b']], 10000, 2)
  tt.same(subscribed.map((v) => Array.isArray(v) && v[0]), ['subscribe', 'subscribe'],
    'one confirmation per channel')
  tt.equal(await pub.command('PUBLISH', 'rs:a', 'x'), 1, 'one subscriber')
  await until(() => s.received === 3, 'the message')
  const [reset, n1] = await s.call([['RESET'], ['INCR', C1]])
  tt.equal(reset, 'RESET', '+RESET')
  load.note(C1, n1 ?? null)
  tt.equal(await pub.command('PUBLISH', 'rs:a', 'y'), 0, 'after RESET: no subscriber left')
  tt.equal(await s.command('GET', 'rs:none'), null, 'normal commands work')

  const tx = await s.call([['MULTI'], ['INCR', 'rs:k'], ['INCR', C1], ['RESET'], ['EXEC'],
    ['GET', 'rs:k'], ['INCR', 'rs:k']])
  tt.same(tx.slice(0, 4), ['OK', 'QUEUED', 'QUEUED', 'RESET'], 'RESET inside MULTI')
  tt.ok(isErr(tx[4]), 'EXEC after it: no transaction')
  tt.same(tx.slice(5), [null, 1], 'the queued INCRs never ran; normal commands work')

  // RESET after HELLO 3 and a subscription (pushes): back to RESP2, unsubscribed.
  const r3 = await s.call([['HSET', 'rs:h', 'f', 'v'], ['HELLO', 3], ['SUBSCRIBE', 'rs:a']],
    10000, 2)
  tt.ok(r3[1] instanceof Map, 'HELLO 3: a map')
  await until(() => s.pushes.length === 1, 'the subscribe push')
  const [reset3, h, n3] = await s.call([['RESET'], ['HGETALL', 'rs:h'], ['INCR', C1]])
  tt.equal(reset3, 'RESET', '+RESET')
  tt.same(h, ['f', 'v'], 'RESP2 again: HGETALL is an array')
  load.note(C1, n3 ?? null)
  tt.equal(await pub.command('PUBLISH', 'rs:a', 'z'), 0, 'no subscriber left')
  await load.progress()
  await finish(tt, p, load)
  tt.notOk(p.f.find('protocol_error'), 'every request framed')
  s.close()
  pub.close()
})

/** A malformed multibulk length, then more than Redis reads before it closes. */
const GARBAGE = Buffer.concat([Buffer.from('*x\r\n'), Buffer.alloc(256 * 1024, 'a')])
const GARBAGE_ROUNDS = 10

t.test('garbage on one connection: the error and the close, as from Redis; others go on',
  { skip }, async (tt) => {
    const p = await pair(tt)
    const direct = await redisServer(tt) // a third copy, only to see what Redis sends
    const want = await sendAndWatch(direct.port, GARBAGE)
    tt.match(want, { text: /^-ERR Protocol error/ }, `directly: ${JSON.stringify(want)}`)
    const load = await SharedLoad.start(p.f.port, 6)
    for (let i = 0; i < GARBAGE_ROUNDS; i++) {
      tt.same(await sendAndWatch(p.f.port, GARBAGE), want, `round ${i}: the same as directly`)
    }
    const errors = p.f.all('protocol_error')
    tt.equal(errors.length, GARBAGE_ROUNDS, 'a protocol_error for each garbage connection')
    tt.equal(new Set(errors.map((e) => e.conn)).size, GARBAGE_ROUNDS, 'each once')
    await load.progress()
    const c = await RespConn.open(p.f.port)
    const [pong, n] = await c.call([['PING'], ['INCR', C0]])
    tt.equal(pong, 'PONG', 'new clients served')
    load.note(C0, n ?? null)
    c.close()
    await until(() => p.f.front.status().connections === LOAD_CONNS, 'the closed ones forgotten')
    await finish(tt, p, load)
    tt.equal(p.f.front.status().protected, true, 'the front is protected')
  })
