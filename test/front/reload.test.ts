// Reload (SIGHUP) against a running front: what it changes, and what it must leave alone.

import t from 'tap'
import net from 'node:net'
import { TestFront } from '../helpers/cluster.js'
import { listenLocal } from '../helpers/ports.js'
import { until } from '../helpers/until.js'

t.test('reloads that change nothing do not hold back health checks', async (t) => {
  const servers = [net.createServer(), net.createServer()]
  const [pa, pb] = await Promise.all(servers.map(listenLocal))
  t.teardown(() => { for (const s of servers) s.close() })
  const yaml = 'listen: 127.0.0.1:0\n' +
    `state_dir: ${JSON.stringify(t.testdir({}))}\n` +
    'health_check: { interval: 200ms, timeout: 100ms, fall: 2, rise: 1 }\n' +
    `replicas:\n  - name: a\n    address: 127.0.0.1:${pa}\n` +
    `  - name: b\n    address: 127.0.0.1:${pb}\n`
  const f = await new TestFront().start(t, yaml)
  t.equal(f.role('b'), 'backup')
  // A reload faster than the check interval, with nothing changed, the whole time.
  const hup = setInterval(() => f.front.reload(f.cfg), 50)
  t.teardown(() => clearInterval(hup))
  servers[1]?.close()
  await until(() => f.role('b') !== 'backup', 'the dead backup to leave service', 3000)
  t.equal(f.front.status().protected, false)
  const reloads = f.all('reload')
  t.ok(reloads.length > 5, `reloaded ${reloads.length} times meanwhile`)
  t.same(reloads.at(-1)?.applied, [], 'nothing was applied')
})
