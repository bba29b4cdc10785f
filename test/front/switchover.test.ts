// Planned switchover: hold input, wait for the backup to be in sync, move the epoch, swap
// roles, resume; under pipelined load nothing is lost and the system stays protected.

import t from 'tap'
import type { FailoverInfo } from '../../lib/front/front.js'
import { Client, demoPair, driveIncr, expectCounts } from '../helpers/cluster.js'
import { until } from '../helpers/until.js'

t.test('a switchover under pipelined load loses nothing and stays protected', async (tt) => {
  const { f } = await demoPair(tt, 'output_commit: ack')
  const clients = await Promise.all(Array.from({ length: 8 }, () => Client.open(f.port)))
  const COUNT = 400
  const switches: Array<Promise<FailoverInfo>> = []
  await driveIncr(clients, {
    count: COUNT,
    keys: clients.map((_, i) => `s${i}`),
    ms: 30000,
    onProgress: (total) => {
      // Two switchovers mid-load: a → b, then b → a.
      if (switches.length === 0 && total > clients.length * 100) {
        switches.push(f.front.switchover())
      }
      const second = switches.length === 1 && total > clients.length * 250
      if (second && f.front.status().primary === 'b') switches.push(f.front.switchover('a'))
    }
  })
  const [one, two] = await Promise.all(switches)
  tt.match(one, { from: 'a', to: 'b', epoch: 2, reason: 'switchover' })
  tt.match(two, { from: 'b', to: 'a', epoch: 3 })
  expectCounts(tt, clients, COUNT)
  const st = f.front.status()
  tt.equal(st.primary, 'a')
  tt.equal(st.protected, true, 'still protected')
  tt.same(st.replicas.map((r) => r.role), ['primary', 'backup'])
  tt.notOk(f.find('divergence'))
  tt.notOk(f.find('unprotected'), 'never unprotected')
  for (const c of clients) c.close()
})

t.test('switchover is refused when no backup is in sync, and service goes on', async (tt) => {
  const { b, f } = await demoPair(tt)
  const c = await Client.open(f.port)
  c.send('INCR z\n')
  await c.waitLines(1)
  b.kill('SIGSTOP')
  tt.teardown(() => b.kill('SIGCONT'))
  c.send('INCR z\n') // the stopped backup never answers this one
  await until(() => c.lines.length === 2, 'the primary to answer')
  const refused = f.front.switchover()
  // A client that connects while input is held waits, and is served once it resumes.
  const late = await Client.open(f.port)
  late.send('PING\n')
  await tt.rejects(refused, { code: 'ERR_FTPROXY_NOT_IN_SYNC' })
  tt.equal(f.front.status().primary, 'a')
  c.send('INCR z\n')
  tt.same(await c.waitLines(3), ['1', '2', '3'], 'input resumed after the refusal')
  tt.same(await late.waitLines(1), ['PONG'], 'the client that came during the hold is served')
  late.close()
  b.kill('SIGKILL')
  await until(() => f.role('b') !== 'backup', 'b out of service')
  await tt.rejects(f.front.switchover(), { code: 'ERR_FTPROXY_NOT_IN_SYNC' }, 'no backup at all')
  c.close()
})
