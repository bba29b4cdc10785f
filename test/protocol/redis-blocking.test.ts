// Blocking commands through protocol: resp. Clients wait in BLPOP on shared lists while
// others LPUSH to them: which waiting client gets which element depends on the order the
// copies took the BLPOPs and the pushes, so it is the same on both only if that order is.
// No divergence, every pushed element popped exactly once, both copies end identical.

import t from 'tap'
import { TestFront, frontYaml, haveRedis, redisServer } from '../helpers/cluster.js'
import { converge } from '../helpers/redis-load.js'
import { RespConn } from '../helpers/resp.js'
import { until } from '../helpers/until.js'

const skip = haveRedis() ? false : 'redis-server not installed'

const LISTS = 4
const POPPERS = 20 // popper j pops from list j % LISTS; pusher j pushes to it
const PUSHERS = 20
const PAIRS = 10000 // pushes in all, and pops
const EACH = PAIRS / POPPERS
const POP_WINDOW = 4 // BLPOPs pipelined per popper
const PUSH_WINDOW = 2 // fewer: the lists stay mostly empty, so most BLPOPs wait
const list = (j: number): string => `q:${j % LISTS}`

interface Side { c: RespConn, j: number }

// Keeps `window` requests of `make` unanswered on c until `EACH` are sent.
function pump (d: Side, window: number, make: (seq: number) => string[]): void {
  const burst: string[][] = []
  while (d.c.sent + burst.length < EACH && d.c.sent + burst.length - d.c.received < window) {
    burst.push(make(d.c.sent + burst.length))
  }
  if (burst.length > 0) d.c.send(burst)
}

t.test('BLPOP waiters and LPUSH feeders on shared lists stay in sync', { skip }, async (tt) => {
  const [a, b] = await Promise.all([redisServer(tt), redisServer(tt)])
  // 40 clients on two copies keep both cores busy: the tests' stall of 1 s would take a
  // copy that a loaded machine gives no CPU for a second as hung (timeouts.stall: 3 s).
  const yaml = frontYaml(tt, [{ name: 'a', port: a.port }, { name: 'b', port: b.port }],
    'protocol: resp\noutput_commit: ack').replace('stall: 1s', 'stall: 3s')
  const f = await new TestFront().start(tt, yaml)
  const open = (j: number): Promise<Side> => RespConn.open(f.port).then((c) => ({ c, j }))
  const poppers = await Promise.all(Array.from({ length: POPPERS }, (_, j) => open(j)))
  const pushers = await Promise.all(Array.from({ length: PUSHERS }, (_, j) => open(j)))
  const popped: string[] = []
  const bad: string[] = []
  for (const d of poppers) {
    d.c.onData = () => {
      for (const v of d.c.drain()) {
        if (Array.isArray(v) && v[0] === list(d.j) && typeof v[1] === 'string') popped.push(v[1])
        else if (bad.length < 5) bad.push(`popper ${d.j}: ${JSON.stringify(v)}`)
      }
      pump(d, POP_WINDOW, () => ['BLPOP', list(d.j), '0'])
    }
  }
  for (const d of pushers) {
    d.c.onData = () => {
      for (const v of d.c.drain()) {
        if (typeof v !== 'number' && bad.length < 5) bad.push(`pusher ${d.j}: ${String(v)}`)
      }
      pump(d, PUSH_WINDOW, (seq) => ['LPUSH', list(d.j), `p:${d.j}:${seq}`])
    }
  }
  // The primary's own view, asked directly (after every client connected, so that the
  // copies number the clients' connections alike).
  const monitor = await RespConn.open(a.port)
  const blocked = async (): Promise<number> =>
    String(await monitor.command('CLIENT', 'LIST')).split('\n')
      .filter((l) => / flags=\w*b\w* /.test(l) && l.includes(' cmd=blpop ')).length
  const started = Date.now()
  for (const d of poppers) pump(d, POP_WINDOW, () => ['BLPOP', list(d.j), '0'])
  await until(async () => await blocked() === POPPERS, 'every popper waiting in BLPOP')
  for (const d of pushers) pump(d, PUSH_WINDOW, (seq) => ['LPUSH', list(d.j), `p:${d.j}:${seq}`])
  const all = [...poppers, ...pushers]
  const broken = (): boolean => all.some((d) => d.c.closed || d.c.error !== null)
  let samples = 0
  let waiting = 0
  await until(async () => {
    samples++
    if (await blocked() > 0) waiting++
    return popped.length >= PAIRS || broken()
  }, `${PAIRS} pops`, 55000).catch((err: Error) => tt.fail(err.message))
  tt.comment(`${popped.length} pops of ${PAIRS} in ${Date.now() - started}ms, ` +
    `${f.front.counters.turns} turns; some client waited in BLPOP at ${waiting}/${samples} samples`)
  tt.ok(waiting > samples / 2, 'clients waited in BLPOP most of the time')
  tt.same(bad, [], 'every BLPOP got [its list, an element], every LPUSH a length')
  tt.equal(broken(), false, 'no connection broke')
  const pushed = pushers.flatMap((d) => Array.from({ length: EACH }, (_, s) => `p:${d.j}:${s}`))
  tt.same([...popped].sort(), pushed.sort(), 'every pushed element popped exactly once')
  tt.same(f.all('divergence'), [], 'no divergence')
  tt.notOk(f.find('unprotected'), 'never unprotected')
  tt.same(await converge(a.port, b.port), [], 'both copies identical (and drained)')
  tt.equal(f.front.status().protected, true, 'the front is protected')
  for (const d of all) d.c.close()
  monitor.close()
})
