// The control for the protocol: resp tests: with protocol: raw, ftproxy orders each
// connection's bytes but not the connections against each other, so 50 clients INCRing a
// few shared counters get different numbers from the two copies, and the backup is retired
// as diverged. The order the resp tests rely on comes from the protocol module.

import t from 'tap'
import { haveRedis, redisPair } from '../helpers/cluster.js'
import { checkMix, runMix } from '../helpers/redis-load.js'
import { RespConn } from '../helpers/resp.js'

const skip = haveRedis() ? false : 'redis-server not installed'

t.test('protocol: raw: shared counters diverge', { skip }, async (tt) => {
  const { a, f } = await redisPair(tt, 'protocol: raw\noutput_commit: ack')
  // Whether two copies interleave differently depends on timing: a loaded machine can feed
  // both the same way for a while. Load again (bounded) until they do.
  for (let round = 0; round < 5 && !f.find('divergence'); round++) {
    const run = await runMix(f.port, {
      conns: 50,
      requests: 2000,
      burst: 20,
      window: 100,
      seed: 70 + round,
      incrOnly: true,
      ms: 30000,
    })
    tt.comment(`round ${round}: ${run.tally.acked} INCRs in ${run.ms}ms`)
    tt.equal(run.timedOut, null, 'the load finished')
    tt.equal(run.broken, 0, 'no connection broke')
    tt.same(await checkMix(a.port, run.tally), [], 'the primary itself counted right')
    for (const c of run.conns) c.close()
    const flush = await RespConn.open(f.port) // through the front: both copies start over
    await flush.command('FLUSHALL')
    flush.close()
  }
  const ev = await f.waitEvent('divergence')
  tt.match(ev, { replica: 'b' }, 'the backup diverged')
  tt.equal(f.role('b'), 'stale', 'and was retired')
  tt.equal(f.front.counters.turns, 0, 'raw takes no turns')
})
