// Pub/sub through protocol: resp: subscribers (RESP2 SUBSCRIBE and PSUBSCRIBE, and RESP3
// ones, whose messages and confirmations are pushes) on some connections, publishers on
// others. Messages are output that answers no request of the subscriber's connection; each
// copy sends them, the front must frame them as such. Every message reaches each subscriber
// once, in each publisher's order; every PUBLISH counts every subscriber; then everyone
// unsubscribes and talks plain commands again. No divergence.

import t from 'tap'
import { haveRedis, redisPair } from '../helpers/cluster.js'
import { converge } from '../helpers/redis-load.js'
import { RespConn, type RespValue } from '../helpers/resp.js'
import { until } from '../helpers/until.js'

const skip = haveRedis() ? false : 'redis-server not installed'

const CHANNELS = ['ch:0', 'ch:1', 'ch:2']
const PUBLISHERS = 10
const MESSAGES = 1000 // per publisher
const WINDOW = 50

interface Sub {
  c: RespConn
  resp3: boolean
  pattern: boolean
  /** Payloads received, in order. */
  got: string[]
  bad: string[]
}

// A subscriber's messages, from its replies (RESP2) or pushes (RESP3).
function collect (s: Sub, items: RespValue[][]): void {
  for (const v of items) {
    const [kind] = v
    if (kind === 'subscribe' || kind === 'psubscribe') continue
    const ch = String(s.pattern ? v[2] : v[1])
    const payload = String(s.pattern ? v[3] : v[2])
    const seq = Number(payload.split(':')[2])
    const ok = kind === (s.pattern ? 'pmessage' : 'message') && ch === CHANNELS[seq % 3]
    if (ok) s.got.push(payload)
    else if (s.bad.length < 5) s.bad.push(JSON.stringify(v))
  }
}

/** Publisher p's messages among `got` come in the order it sent them. */
function inOrder (got: string[], p: number): boolean {
  return got.filter((m) => m.startsWith(`m:${p}:`)).every((m, k) => m === `m:${p}:${k}`)
}

async function subscriber (port: number, resp3: boolean, pattern: boolean): Promise<Sub> {
  const c = await RespConn.open(port)
  if (resp3) await c.command('HELLO', 3)
  const s: Sub = { c, resp3, pattern, got: [], bad: [] }
  let pushes = 0
  c.onData = () => {
    const fromPushes = c.pushes.slice(pushes).map((p) => p.items)
    pushes = c.pushes.length
    collect(s, [...fromPushes, ...c.drain().filter(Array.isArray)])
  }
  const confirmations = pattern ? 1 : CHANNELS.length
  c.send([pattern ? ['PSUBSCRIBE', 'ch:*'] : ['SUBSCRIBE', ...CHANNELS]])
  // RESP2 confirms with replies; RESP3 with pushes (its one reply is HELLO's).
  const confirmed = (): number =>
    resp3 ? c.pushes.filter((p) => p.kind.endsWith('subscribe')).length : c.received
  await until(() => confirmed() >= confirmations || c.closed, 'subscriptions confirmed')
  return s
}

t.test('publishers and subscribers on shared channels stay in sync', { skip }, async (tt) => {
  const { a, b, f } = await redisPair(tt, 'protocol: resp\noutput_commit: ack')
  const subs: Sub[] = []
  for (const resp3 of [false, false, false, false, false, true]) {
    for (const pattern of [false, true]) subs.push(await subscriber(f.port, resp3, pattern))
  }
  const pubs = await Promise.all(Array.from({ length: PUBLISHERS }, () => RespConn.open(f.port)))
  const counts: RespValue[] = []
  const pump = (c: RespConn, p: number): void => {
    counts.push(...c.drain())
    const burst: string[][] = []
    while (c.sent + burst.length < MESSAGES && c.sent + burst.length - c.received < WINDOW) {
      const seq = c.sent + burst.length
      burst.push(['PUBLISH', CHANNELS[seq % 3] as string, `m:${p}:${seq}`])
    }
    if (burst.length > 0) c.send(burst)
  }
  const started = Date.now()
  pubs.forEach((c, p) => { c.onData = () => pump(c, p); pump(c, p) })
  const total = PUBLISHERS * MESSAGES
  const broken = (): boolean => [...pubs, ...subs.map((s) => s.c)].some((c) => c.closed)
  await until(() => subs.every((s) => s.got.length >= total) || broken(), 'every message', 55000)
    .catch((err: Error) => tt.fail(err.message))
  tt.comment(`${total} messages to ${subs.length} subscribers in ${Date.now() - started}ms`)
  tt.equal(broken(), false, 'no connection closed')
  tt.same(counts.filter((n) => n !== subs.length), [], `every PUBLISH reached ${subs.length}`)
  const want = pubs.flatMap((_, p) => Array.from({ length: MESSAGES }, (_, s) => `m:${p}:${s}`))
  subs.forEach((s, i) => {
    const name = `subscriber ${i} (${s.resp3 ? 'RESP3' : 'RESP2'}${s.pattern ? ', pattern' : ''})`
    tt.same(s.bad, [], `${name}: nothing but its messages`)
    tt.same([...s.got].sort(), [...want].sort(), `${name}: every message once`)
    tt.ok(pubs.every((_, p) => inOrder(s.got, p)), `${name}: each publisher's messages in order`)
  })
  for (const s of subs) {
    s.c.onData = null
    s.c.drain()
    s.c.send([s.pattern ? ['PUNSUBSCRIBE', 'ch:*'] : ['UNSUBSCRIBE', ...CHANNELS], ['PING']])
  }
  const pong = (s: Sub): boolean => s.c.replies.includes('PONG')
  await until(() => subs.every(pong) || broken(), 'PONG after unsubscribing')
    .catch((err: Error) => tt.fail(err.message))
  tt.ok(subs.every((s) => s.resp3 || s.c.replies.length === (s.pattern ? 2 : 4)),
    'RESP2: one reply per channel, then PONG')
  const unsubscribed = (s: Sub): boolean => s.c.pushes.some((p) => p.kind.endsWith('unsubscribe'))
  tt.ok(subs.every((s) => !s.resp3 || unsubscribed(s)), 'RESP3: unsubscribe pushes')
  tt.same(f.all('divergence'), [], 'no divergence')
  tt.notOk(f.find('unprotected'), 'never unprotected')
  tt.same(await converge(a.port, b.port), [], 'both copies identical')
  for (const c of [...pubs, ...subs.map((s) => s.c)]) c.close()
})

// Without arguments, (P)UNSUBSCRIBE answers once per subscription in the order of the
// connection's own dict of them, which each process seeds at random: the replies differ
// between two correct copies.
t.test('UNSUBSCRIBE and PUNSUBSCRIBE without arguments', { skip }, async (tt) => {
  const { a, b, f } = await redisPair(tt, 'protocol: resp\noutput_commit: ack')
  const channels = Array.from({ length: 8 }, (_, i) => `ch:${i}`)
  const patterns = Array.from({ length: 8 }, (_, i) => `p:${i}:*`)
  const c = await RespConn.open(f.port)
  const subscribed = await c.call([['SUBSCRIBE', ...channels], ['PSUBSCRIBE', ...patterns]],
    10000, 16)
  tt.equal(subscribed.length, 16, 'one confirmation per channel and pattern')
  const replies = await c.call([['UNSUBSCRIBE'], ['PUNSUBSCRIBE'], ['PING']], 10000, 17)
  const names = replies.slice(0, 16).map((r) => Array.isArray(r) ? String(r[1]) : '')
  tt.same([...names].sort(), [...channels, ...patterns].sort(), 'one reply per subscription')
  tt.equal(replies[16], 'PONG', 'then plain commands again')
  tt.same(f.all('divergence'), [], 'no divergence')
  tt.same(await converge(a.port, b.port), [], 'both copies identical')
  tt.equal(f.front.status().protected, true, 'the front is protected')
  c.close()
})
