// Connection ids must be the same on both copies: HELLO 3's reply carries the connection's
// id, and modern clients send it at connect. Each copy numbers connections in the order it
// accepted them, so every connection ftproxy makes itself (health checks run every 100 ms
// here) must reach both copies at the same point, or not be made. 50 RESP3 clients connect
// in waves between health checks, each says HELLO 3 and CLIENT ID: no divergence. And a
// RESP3 push answering no request (a client-side caching invalidation) passes through.

import t from 'tap'
import { haveRedis, redisPair } from '../helpers/cluster.js'
import { converge } from '../helpers/redis-load.js'
import { RespConn } from '../helpers/resp.js'
import { until, untilValue } from '../helpers/until.js'

const skip = haveRedis() ? false : 'redis-server not installed'

const WAVES = 10
const PER_WAVE = 5
const HEALTH = 'interval: 100ms, timeout: 100ms, fall: 3, rise: 1'

// PINGs the primary has served: the health probes of ftproxy's control connection.
async function pings (m: RespConn): Promise<number> {
  const info = String(await m.command('INFO', 'commandstats'))
  return Number(/cmdstat_ping:calls=(\d+)/.exec(info)?.[1] ?? 0)
}

// Connections the copy on `port` accepted in all (asked directly: this one counts too).
async function accepted (port: number): Promise<number> {
  const d = await RespConn.open(port)
  const info = String(await d.command('INFO', 'stats'))
  d.close()
  return Number(/total_connections_received:(\d+)/.exec(info)?.[1])
}

t.test('HELLO 3 and CLIENT ID on 50 connections, health checks every 100ms', { skip },
  async (tt) => {
    const { a, b, f } = await redisPair(tt, 'protocol: resp\noutput_commit: ack', HEALTH)
    const m = await RespConn.open(f.port)
    const first = await pings(m)
    const conns: RespConn[] = []
    const ids: number[] = []
    const bad: string[] = []
    for (let w = 0; w < WAVES; w++) {
      // Connect only after two more health checks, so they fall between the waves.
      const seen = await pings(m)
      await until(async () => await pings(m) >= seen + 2, 'two more health checks', 5000)
      const wave = await Promise.all(Array.from({ length: PER_WAVE }, () => RespConn.open(f.port)))
      const replies = await Promise.all(wave.map((c, i) =>
        c.call([['HELLO', 3], ['CLIENT', 'ID'], ['HSET', `r3:${w}:${i}`, 'f', 'v'],
          ['HGETALL', `r3:${w}:${i}`]])))
      replies.forEach(([hello, id, , map]) => {
        const helloId = hello instanceof Map ? hello.get('id') : undefined
        if (typeof id === 'number' && helloId === id) ids.push(id)
        else bad.push(`HELLO id ${String(helloId)}, CLIENT ID ${String(id)}`)
        if (!(map instanceof Map) || map.get('f') !== 'v') bad.push(`HGETALL ${String(map)}`)
      })
      conns.push(...wave)
    }
    const checks = await pings(m) - first
    tt.comment(`${checks} health checks while ${conns.length} clients connected`)
    tt.ok(checks >= 2 * WAVES, 'health checks ran between the waves')
    tt.same(bad, [], 'HELLO 3 gave a map whose id is the CLIENT ID; HGETALL a map')
    tt.equal(new Set(ids).size, WAVES * PER_WAVE, 'every connection has an id of its own')
    // Client-side caching: the server pushes an invalidation that answers no request.
    const [reader, writer] = conns as [RespConn, RespConn]
    tt.same(await reader.call([['CLIENT', 'TRACKING', 'on'], ['GET', 'r3:tracked']]),
      ['OK', null])
    tt.equal(await writer.command('SET', 'r3:tracked', 'x'), 'OK')
    const push = await untilValue(() => reader.pushes.find((p) => p.kind === 'invalidate'),
      'the invalidation push')
    tt.same(push.items, ['invalidate', ['r3:tracked']], 'the invalidation reached the client')
    tt.equal(await reader.command('GET', 'r3:tracked'), 'x', 'and replies go on after it')
    tt.same(f.all('divergence'), [], 'no divergence')
    tt.notOk(f.find('unprotected'), 'never unprotected')
    tt.same(await converge(a.port, b.port), [], 'both copies identical')
    const [na, nb] = await Promise.all([accepted(a.port), accepted(b.port)])
    tt.equal(na, nb, `both copies accepted as many connections (${na}, ${nb})`)
    tt.equal(f.front.status().protected, true, 'the front is protected')
    for (const c of [m, ...conns]) c.close()
  })
