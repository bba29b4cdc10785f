// A direct, unsupervised Redis replica (protocol resp, known by its run_id) restarts while the
// front process is paused (SIGSTOP here; a VM pause or a long stall alike). When the front
// runs again its control connection sees the old server's close and reconnects at once, to
// the new, empty server: the run_id it finds there fails the replica
// (ERR_FTPROXY_SERVER_RESTARTED). The primary: a failover to b, which has the data. The
// backup: it is stale, and when a dies too nothing is served from b's empty copy.

import type { ChildProcess } from 'node:child_process'
import t from 'tap'
import { haveRedis } from '../helpers/cluster.js'
import { directRedis } from '../helpers/redis-direct.js'
import { RespConn } from '../helpers/resp.js'
import { until } from '../helpers/until.js'

for (const who of ['a', 'b'] as const) {
  t.test(`redis ${who} restarts while the front is paused: never served from empty`,
    { skip: haveRedis() ? false : 'redis-server not installed' }, async (t) => {
      const r = await directRedis(t, ['timeouts: { connect: 1s, stall: 1s, linger: 1s }'])
      const servers = { a: await r.start('a'), b: await r.start('b') }
      const f = await r.serve()

      f.proc.kill('SIGSTOP')
      t.teardown(() => { try { f.proc.kill('SIGCONT') } catch {} })
      const victim: ChildProcess = servers[who]
      victim.kill('SIGKILL')
      await until(() => victim.exitCode !== null || victim.signalCode !== null, `${who} gone`)
      servers[who] = await r.start(who) // empty, a new run_id, at the same address
      f.proc.kill('SIGCONT')

      const why = await f.waitEvent('replica_role', (e) => e.replica === who && e.to === 'stale')
      // Found another run_id; or, on a loaded machine, its reconnect did not succeed in time.
      t.match(why.reason, /ERR_FTPROXY_(SERVER_RESTARTED|CONTROL_CLOSED)/,
        `${who} is stale: its server restarted`)
      if (who === 'b') {
        servers.a.kill('SIGKILL')
        await f.waitEvent('serving_stopped', undefined, 10000)
        t.notOk(f.find('failover'), 'no failover to the emptied copy: serving stops')
        return
      }
      await f.waitEvent('failover', (e) => e.from === 'a' && e.to === 'b')
      const d = await RespConn.open(r.port)
      t.teardown(() => d.close())
      t.equal(await d.command('GET', 'k'), 'v', 'the value written before the restart, from b')
    })
}
