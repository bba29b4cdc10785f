// Re-protection with Redis: two supervised redis-server copies, re-seeded by the shipped
// config/reseed-redis.sh (Redis replication, promoted at the cut). Under the shared-key mix,
// kill -9 the primary, wait until protected again, kill -9 the new primary, wait again:
// every connection survives, and every acknowledged write is there, once. Then a divergence
// forced by writing to the backup directly heals by a re-seed.

import t from 'tap'
import { haveRedis } from '../helpers/cluster.js'
import { checkMix, converge, runMix } from '../helpers/redis-load.js'
import { inSyncAgain, pidOf, supervisedRedis } from '../helpers/redis-supervised.js'
import { RespConn } from '../helpers/resp.js'
import { until } from '../helpers/until.js'

const skip = haveRedis() ? false : 'redis-server not installed'

t.test('kill -9 of the primary redis, twice, under the shared-key mix', { skip }, async (t) => {
  const { f, ports } = await supervisedRedis(t)
  let acked = 0
  let done = false
  const kills = (async () => {
    for (const victim of ['a', 'b']) {
      const at = acked
      await until(() => acked > at + 20000, 'load before the kill', 30000)
      process.kill(pidOf(f, victim), 'SIGKILL')
      await f.waitEvent('reseeded', (e) => e.replica === victim, 30000)
      await inSyncAgain(f, victim)
    }
    const at = acked
    await until(() => acked > at + 20000, 'load after the last re-seed', 30000)
    done = true
  })()
  const run = await runMix(f.port, {
    conns: 20,
    requests: 1e7,
    burst: 20,
    window: 100,
    seed: 11,
    ms: 90000,
    onProgress: (n) => { acked = n },
    stop: () => done,
  })
  await kills
  const { tally } = run
  t.comment(`${tally.acked} replies; re-seeds: ${JSON.stringify(f.all('reseeded')
    .map((e) => ({ r: e.replica, pause_ms: e.pause_ms, ms: e.duration_ms })))}`)
  t.equal(run.timedOut, null, 'the load finished')
  t.same(tally.bad, [], 'every reply has the shape its request expects')
  t.equal(run.broken, 0, 'every connection survived both kills and both re-seeds')
  t.same(f.all('divergence'), [], 'no divergence')
  t.equal(f.all('reseeded').length, 2, 'two re-seeds')
  for (const e of f.all('reseeded')) t.equal(e.closed, 0, 'no connection closed at the cut')
  // The backup acknowledges an entry when it has it, and may run it a moment later.
  const [pa, pb] = ports as [number, number]
  t.same(await converge(pa, pb), [], 'both copies identical once the backup ran its last entries')
  for (const port of ports) {
    t.same(await checkMix(port, tally), [], `the copy on ${port} holds every acknowledged write`)
  }
  for (const c of run.conns) c.close()
})

t.test('a divergence (a write straight to the backup) heals by a re-seed', { skip }, async (t) => {
  const { f, ports } = await supervisedRedis(t)
  const c = await RespConn.open(f.port)
  t.teardown(() => c.close())
  await c.command('SET', 'k', 'v1')
  // Behind ftproxy's back: the backup's copy of k now differs.
  const direct = await RespConn.open(ports[1] as number)
  // b acknowledged the SET when it had it, and may run it a moment later: after that, then.
  await until(async () => await direct.command('GET', 'k') === 'v1', 'b to run the SET')
  await direct.command('SET', 'k', 'tampered')
  direct.close()
  t.equal(await c.command('GET', 'k'), 'v1', 'the client reads the primary')
  await f.waitEvent('divergence', (e) => e.replica === 'b')
  await f.waitEvent('reseeded', (e) => e.replica === 'b', 30000)
  await inSyncAgain(f, 'b')
  const check = await RespConn.open(ports[1] as number)
  t.equal(await check.command('GET', 'k'), 'v1', 'the backup holds the primary\'s value again')
  check.close()
  t.equal(await c.command('GET', 'k'), 'v1', 'the same connection goes on, protected')
  t.equal(f.front.status().replicas.find((r) => r.name === 'b')?.reseed.divergences, 1,
    '/status counts the divergence')
})
