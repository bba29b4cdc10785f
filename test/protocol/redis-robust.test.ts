// protocol: resp against what a server or a client can do to ftproxy's own connections and
// checks: a client kills every normal connection (ftproxy's control connection included),
// a command keeps the server busy for longer than the health checks' patience, a pipeline
// ends in garbage while others share its keys, and a relay between ftproxy and the server
// hides the addresses the blocking check looks for. None of it may stop the service or
// make the copies differ.

import t from 'tap'
import { Relay } from '../helpers/relay.js'
import { TestFront, frontYaml, haveRedis, redisPair, redisServer } from '../helpers/cluster.js'
import { converge } from '../helpers/redis-load.js'
import { RespConn, encode } from '../helpers/resp.js'
import { until } from '../helpers/until.js'

const skip = haveRedis() ? false : 'redis-server not installed'
const RESP = 'protocol: resp\noutput_commit: ack'
const QUICK = 'interval: 200ms, timeout: 200ms, fall: 2, rise: 1'

t.test('CLIENT KILL TYPE normal from a client: the service goes on', { skip }, async (tt) => {
  const { f } = await redisPair(tt, RESP, QUICK)
  const killer = await RespConn.open(f.port)
  await killer.command('SET', 'x', '1')
  await killer.call([['CLIENT', 'KILL', 'TYPE', 'normal']]).catch(() => null)
  const c = await RespConn.open(f.port)
  for (let i = 2; i <= 50; i++) {
    const [v] = await c.call([['INCR', 'x']], 3000)
    if (v !== i) tt.fail(`INCR answered ${String(v)}, wanted ${i}`)
  }
  // A few health periods: checks go over the control connection, which came back.
  await new Promise((resolve) => setTimeout(resolve, 600))
  tt.same(f.front.status().replicas.map((r) => r.role), ['primary', 'backup'], 'roles kept')
  tt.notOk(f.find('serving_stopped'), 'still serving')
  tt.same(f.all('divergence'), [], 'no divergence')
  c.close()
})

t.test('a command that keeps every copy busy fails no replica', { skip }, async (tt) => {
  const a = await redisServer(tt, ['--enable-debug-command', 'yes'])
  const b = await redisServer(tt, ['--enable-debug-command', 'yes'])
  const replicas = [{ name: 'a', port: a.port }, { name: 'b', port: b.port }]
  const f = await new TestFront().start(tt, frontYaml(tt, replicas, RESP, QUICK))
  const sleeper = await RespConn.open(f.port)
  const other = await RespConn.open(f.port)
  const slept = sleeper.call([['DEBUG', 'SLEEP', '2']], 10000)
  const [n] = await other.call([['INCR', 'n']], 10000) // waits its turn behind the sleep
  tt.equal(n, 1, 'the other client was answered after the sleep')
  tt.same(await slept, ['OK'], 'and the sleeper got its reply')
  tt.notOk(f.find('replica_down'), '2 s of silence, ten health periods: nobody marked down')
  tt.same(f.front.status().replicas.map((r) => r.role), ['primary', 'backup'])
  sleeper.close()
  other.close()
})

t.test('a pipeline that ends in garbage keeps its place in the order', { skip }, async (tt) => {
  const { a, b, f } = await redisPair(tt, RESP)
  const others = await Promise.all(Array.from({ length: 4 }, () => RespConn.open(f.port)))
  const load = { running: true }
  const loaders = others.map(async (c) => {
    while (load.running) await c.call([['INCR', 'c'], ['INCR', 'c']], 5000)
  })
  for (let round = 0; round < 10; round++) {
    const s = await RespConn.open(f.port)
    const pipeline = Array.from({ length: 3000 }, () => encode(['INCR', 'c']))
    s.socket.write(Buffer.concat([...pipeline, Buffer.from('*x\r\n')]))
    await until(() => s.ended || s.closed, 'redis ended the garbage connection')
    s.close()
  }
  load.running = false
  await Promise.all(loaders)
  tt.ok(f.find('protocol_error'), 'protocol_error logged')
  tt.same(f.all('divergence'), [], 'no divergence')
  tt.equal(f.role('b'), 'backup', 'the backup is in service')
  tt.same(await converge(a.port, b.port), [], 'both copies identical')
  for (const c of others) c.close()
})

t.test('behind a relay the blocking check gives up, it does not hang', { skip }, async (tt) => {
  const [ra, rb] = await Promise.all([redisServer(tt), redisServer(tt)])
  const [la, lb] = await Promise.all([Relay.start(tt, ra.port), Relay.start(tt, rb.port)])
  const replicas = [{ name: 'a', port: la.port }, { name: 'b', port: lb.port }]
  const f = await new TestFront().start(tt, frontYaml(tt, replicas, RESP))
  const waiter = await RespConn.open(f.port)
  const popped = waiter.call([['BLPOP', 'q', '0']], 10000)
  const other = await RespConn.open(f.port)
  const [n] = await other.call([['INCR', 'n']], 5000)
  tt.equal(n, 1, 'the next turn went on')
  tt.ok(await f.waitEvent('control_refused'), 'and the front said why it could not check')
  await other.call([['LPUSH', 'q', 'v']])
  tt.same(await popped, [['q', 'v']], 'the waiter got the element')
  waiter.close()
  other.close()
})

t.test('CLIENT KILL TYPE normal again and again: every copy counts the same', { skip },
  async (tt) => {
    const { a, b, f } = await redisPair(tt, RESP)
    const others = await Promise.all(Array.from({ length: 3 }, () => RespConn.open(f.port)))
    for (const c of others) await c.call([['INCR', 'n']])
    const killer = await RespConn.open(f.port)
    // Each kill closes ftproxy's own connections on every copy; they must reopen at the same
    // point in the order, or the next kill counts differently (its reply is compared).
    for (let i = 0; i < 40; i++) await killer.call([['CLIENT', 'KILL', 'TYPE', 'normal']])
    tt.same(f.all('divergence'), [], 'no divergence')
    tt.equal(f.role('b'), 'backup', 'the backup is in service')
    tt.same(await converge(a.port, b.port), [], 'both copies identical')
    killer.close()
    for (const c of others) c.close()
  })
