// The shared-key mix of redis-shared.test.ts with the primary redis SIGKILLed mid-load (once
// enough replies arrived, not after a timer). The backup takes over; then the survivor is
// asked directly: each shared counter holds exactly its acknowledged INCRs (plus at most those
// never answered, none if every connection survived), no list element is lost or popped
// twice, the transfers stayed atomic.

import t from 'tap'
import { haveRedis, redisPair } from '../helpers/cluster.js'
import { COUNTERS, checkMix, runMix } from '../helpers/redis-load.js'

const skip = haveRedis() ? false : 'redis-server not installed'

const CONNS = 50
const REQUESTS = 20000 // per connection: 1M in all
const KILL_AFTER = CONNS * REQUESTS / 3 // replies in all before the kill

t.test('SIGKILL of the primary redis under the shared-key mix', { skip }, async (tt) => {
  const { a, b, f } = await redisPair(tt, 'protocol: resp\noutput_commit: ack')
  let killedAt = 0
  const run = await runMix(f.port, {
    conns: CONNS,
    requests: REQUESTS,
    burst: 50,
    window: 200,
    seed: 20,
    ms: 55000,
    onProgress: (acked) => {
      if (killedAt > 0 || acked < KILL_AFTER) return
      killedAt = acked
      a.kill('SIGKILL')
    },
  })
  const { tally } = run
  const unanswered = tally.sent - tally.acked
  tt.comment(`${tally.acked}/${tally.sent} replies in ${run.ms}ms; primary killed after ` +
    `${killedAt}; ${unanswered} never answered, ${run.broken} connections broke`)
  tt.ok(killedAt > 0 && killedAt < tally.sent, 'the primary was killed mid-load')
  tt.equal(run.timedOut, null, 'the load finished within its deadline')
  tt.same(tally.bad, [], 'every reply has the shape its request expects')
  tt.equal(run.broken, 0, 'every connection survived the failover')
  const ev = await f.waitEvent('failover')
  tt.match(ev, { from: 'a', to: 'b' })
  tt.comment(`failover took ${String(ev.duration_ms)}ms (${String(ev.reason)})`)
  tt.equal(f.role('b'), 'primary')
  tt.same(f.all('divergence'), [], 'no divergence before or after')
  tt.notOk(f.find('splice_failed'), 'every connection spliced')
  let incrs = 0
  for (const v of tally.incr.values()) incrs += v.length
  tt.comment(`${incrs} INCRs acknowledged on ${COUNTERS} shared counters`)
  tt.same(await checkMix(b.port, tally), [],
    'the survivor holds every acknowledged write once, and nothing unacknowledged beyond ' +
    'the requests never answered')
  for (const c of run.conns) c.close()
})
