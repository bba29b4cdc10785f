// Connections open at a re-seed's cut, with Redis (open_connections: reattach): those whose
// session the fresh server connection can take on (SELECT, CLIENT SETNAME, HELLO 3) go on,
// protected by the new backup, which then really serves them after a failover; those it
// cannot (inside MULTI, subscribed, blocked) are closed cleanly, after every reply they were
// owed.

import t from 'tap'
import { haveRedis } from '../helpers/cluster.js'
import { RespConn } from '../helpers/resp.js'
import { until } from '../helpers/until.js'
import { inSyncAgain, pidOf, supervisedRedis } from '../helpers/redis-supervised.js'

const skip = haveRedis() ? false : 'redis-server not installed'

t.test('reattach carries sessions over, and closes what cannot be', { skip }, async (t) => {
  const { f } = await supervisedRedis(t)
  const open = async (): Promise<RespConn> => {
    const c = await RespConn.open(f.port)
    t.teardown(() => c.close())
    return c
  }
  const plain = await open()
  const db3 = await open()
  const named = await open()
  const resp3 = await open()
  const multi = await open()
  const sub = await open()
  const blocked = await open()
  t.equal(await plain.command('SET', 'p', '1'), 'OK')
  t.equal(await db3.command('SELECT', '3'), 'OK')
  t.equal(await db3.command('SET', 'in3', 'x'), 'OK')
  t.equal(await named.command('CLIENT', 'SETNAME', 'app'), 'OK')
  await resp3.command('HELLO', '3')
  t.equal(await multi.command('MULTI'), 'OK')
  t.equal(await multi.command('INCR', 'm'), 'QUEUED')
  await sub.command('SUBSCRIBE', 'ch')
  blocked.send([['BLPOP', 'nothing', '0']])

  process.kill(pidOf(f, 'b'), 'SIGKILL')
  const ev = await f.waitEvent('reseeded', (e) => e.replica === 'b', 30000)
  await inSyncAgain(f, 'b')
  t.equal(ev.closed, 3, 'MULTI, subscribed and blocked connections closed at the cut')
  await until(() => multi.ended && sub.ended && blocked.ended, 'the three got their end')
  t.equal(multi.error, null, 'closed cleanly (FIN), not reset')

  // The four others go on, compared against the new backup.
  t.equal(await db3.command('SET', 'in3b', 'y'), 'OK')
  t.equal(await named.command('CLIENT', 'GETNAME'), 'app')
  t.same(await resp3.command('HGETALL', 'nohash'), new Map(), 'RESP3 map reply')
  t.equal(await plain.command('INCR', 'p'), 2)
  t.same(f.all('divergence'), [], 'no divergence: each session was carried over')

  // ... and the new backup really serves them once the primary is gone.
  process.kill(pidOf(f, 'a'), 'SIGKILL')
  await f.waitEvent('failover', (e) => e.from === 'a', 15000)
  t.equal(await db3.command('GET', 'in3'), 'x', 'db 3 on the promoted copy')
  t.equal(await db3.command('GET', 'in3b'), 'y')
  t.equal(await named.command('CLIENT', 'GETNAME'), 'app', 'the name on the promoted copy')
  t.equal(await plain.command('INCR', 'p'), 3, 'nothing lost, nothing twice')
  for (const c of [plain, db3, named, resp3]) t.equal(c.closed, false, 'kept its connection')
})
