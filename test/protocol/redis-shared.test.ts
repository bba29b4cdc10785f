// protocol: resp keeps two Redis copies in sync when clients share keys. 50 connections
// pipeline a mix on a few shared keys (INCR on counters, LPUSH/RPOP on lists, SADD/SREM on a
// set, HSET/HINCRBY on a hash, MULTI/EXEC transfers) through a front in ack mode: no
// divergence, the front stays protected throughout, every reply is what the data says, and
// the two copies end identical, key by key.

import t from 'tap'
import { haveRedis, redisPair } from '../helpers/cluster.js'
import { checkMix, converge, runMix } from '../helpers/redis-load.js'

const skip = haveRedis() ? false : 'redis-server not installed'

const CONNS = 50
const REQUESTS = 20000 // per connection: 1M in all
const BURST = 50
const WINDOW = 200

t.test('50 connections sharing keys through protocol: resp stay in sync', { skip }, async (tt) => {
  const { a, b, f } = await redisPair(tt, 'protocol: resp\noutput_commit: ack')
  let samples = 0
  let unprotected = 0
  const run = await runMix(f.port, {
    conns: CONNS,
    requests: REQUESTS,
    burst: BURST,
    window: WINDOW,
    seed: 10,
    ms: 55000,
    onTick: () => {
      samples++
      if (!f.front.status().protected) unprotected++
    },
  })
  const { tally } = run
  const rate = Math.round(tally.acked / (run.ms / 1000))
  tt.comment(`${tally.acked}/${tally.sent} replies on ${CONNS} connections in ${run.ms}ms ` +
    `(${rate} req/s); ${f.front.counters.turns} turns`)
  tt.equal(run.timedOut, null, 'the load finished within its deadline')
  tt.equal(run.broken, 0, 'no connection broke')
  tt.equal(tally.acked, tally.sent, 'every request answered')
  tt.same(tally.bad, [], 'every reply has the shape its request expects')
  tt.ok(samples > 0, `/status sampled ${samples} times during the load`)
  tt.equal(unprotected, 0, '/status said protected at every sample')
  tt.ok(f.front.counters.turns > 0, 'the replicas were fed in turns')
  tt.same(f.all('divergence'), [], 'no divergence')
  tt.notOk(f.find('unprotected'), 'never unprotected')
  tt.notOk(f.find('protocol_error'), 'every request framed')
  tt.same(await checkMix(a.port, tally), [], 'the primary holds exactly what clients were told')
  tt.same(await converge(a.port, b.port), [], 'both copies identical: DBSIZE and every key')
  tt.equal(f.role('b'), 'backup', 'the backup is still in service')
  tt.equal(f.front.status().protected, true, 'and the front protected')
  for (const c of run.conns) c.close()
})
