// Re-protection with the demo server: a replica whose server restarted (kill -9, the
// supervisor brings it back empty) is re-seeded from the other and joins as a backup, on
// the same client connections, under shared-key load; a second kill -9, now of the new
// primary, loses nothing either.

import t from 'tap'
import type { Test } from 'tap'
import { frontYaml, TestFront } from '../helpers/cluster.js'
import { freePorts } from '../helpers/ports.js'
import { SharedIncr } from '../helpers/shared-incr.js'
import { until } from '../helpers/until.js'

const RESEED = 'reseed: { command: [ftproxy, demo-reseed], timeout: 20s }\n'

async function supervisedPair (t: Test, extra = RESEED): Promise<TestFront> {
  const [pa, pb] = await freePorts(2)
  const replicas = [
    { name: 'a', port: pa as number, command: ['ftproxy', 'demo-server', '--port', String(pa)] },
    { name: 'b', port: pb as number, command: ['ftproxy', 'demo-server', '--port', String(pb)] },
  ]
  return await new TestFront().start(t, frontYaml(t, replicas, `protocol: line\n${extra}`))
}

function pidOf (f: TestFront, name: string): number {
  const pid = f.front.status().replicas.find((r) => r.name === name)?.pid
  if (pid === undefined) throw new Error(`${name} has no pid`)
  return pid
}

const protectedBy = (f: TestFront, backup: string): boolean => {
  const s = f.front.status()
  return s.protected && s.replicas.find((r) => r.name === backup)?.role === 'backup'
}

t.test('kill -9 of the primary, twice: re-seeded each time, nothing lost', async (t) => {
  const f = await supervisedPair(t)
  const load = await SharedIncr.open(f.port, 8)
  t.teardown(() => load.close())
  load.start()
  await until(() => load.replies > 500, 'load under way')

  for (const [victim, survivor] of [['a', 'b'], ['b', 'a']] as const) {
    const before = load.replies
    process.kill(pidOf(f, victim), 'SIGKILL')
    await f.waitEvent('failover', (e) => e.from === victim, 15000)
    await f.waitEvent('reseeded', (e) => e.replica === victim, 30000)
    await until(() => protectedBy(f, victim), `${victim} back as a backup`, 15000)
    t.equal(f.front.status().primary, survivor, `${survivor} serves`)
    await until(() => load.replies > before + 500, 'load goes on after the re-seed')
  }
  await load.stop()
  const totals = load.check(t)
  const last = f.front.status().reseed.last
  t.equal(last?.closed, 0, 'no connection closed at the cut (reattach)')
  t.equal(last?.reattached, 8, 'every client connection reattached')
  t.ok(totals.size === 3, 'three shared keys')
  t.equal(f.all('divergence').length, 0, 'no divergence')
  t.equal(f.front.status().protected, true, 'protected at the end')
})

t.test('open_connections: close ends every client cleanly at the cut', async (t) => {
  const f = await supervisedPair(t,
    'reseed: { command: [ftproxy, demo-reseed], timeout: 20s, open_connections: close }\n')
  const load = await SharedIncr.open(f.port, 4)
  t.teardown(() => load.close())
  load.start()
  await until(() => load.replies > 200, 'load under way')
  process.kill(pidOf(f, 'b'), 'SIGKILL')
  await f.waitEvent('reseeded', (e) => e.replica === 'b', 30000)
  await until(() => load.clients.every((c) => c.ended), 'every client ended')
  const last = f.front.status().reseed.last
  t.equal(last?.closed, 4, 'four connections closed at the cut')
  t.equal(last?.reattached, 0, 'none reattached')
  await load.stop()
  // Every reply a client got is of an INCR run exactly once, in one order with the others.
  load.check(t, true)
  t.ok(load.clients.every((c) => c.lines.length > 0), 'every client was served before')
  // New connections are protected by the new backup.
  const after = await SharedIncr.open(f.port, 2)
  t.teardown(() => after.close())
  after.start()
  await until(() => after.replies > 100, 'new clients served')
  await after.stop()
  t.equal(f.front.status().protected, true, 'protected')
  t.equal(f.all('divergence').length, 0, 'no divergence')
})
