// Failover with direct replicas: real demo-server processes, SIGKILL / SIGSTOP mid-stream,
// every byte each client received checked.

import t from 'tap'
import {
  Client, TestFront, demoPair, demoServer, driveIncr, expectCounts, frontYaml,
} from '../helpers/cluster.js'

for (const mode of ['ack', 'match', 'none'] as const) {
  t.test(`SIGKILL of the primary mid-stream (${mode})`, async (tt) => {
    const a = await demoServer(tt)
    const b = await demoServer(tt)
    const replicas = [{ name: 'a', port: a.port }, { name: 'b', port: b.port }]
    const f = await new TestFront().start(tt, frontYaml(tt, replicas, `output_commit: ${mode}`))
    const clients = await Promise.all(Array.from({ length: 16 }, () => Client.open(f.port)))
    const keys = clients.map((_, i) => `k${i}`)
    let killed = false
    await driveIncr(clients, {
      keys,
      count: 400,
      burst: 8,
      onProgress: (done) => {
        if (!killed && done > 16 * 100) { killed = true; a.kill('SIGKILL') }
      }
    })
    tt.ok(killed, 'the primary was killed mid-stream')
    expectCounts(tt, clients, 400)
    const ev = await f.waitEvent('failover')
    tt.match(ev, { from: 'a', to: 'b', epoch: 2 })
    tt.type(ev.duration_ms, 'number')
    tt.equal(f.role('a'), 'stale')
    tt.equal(f.role('b'), 'primary')
    tt.ok(f.find('unprotected'), 'says it runs unprotected')
    tt.notOk(f.find('divergence'), 'no divergence')
    for (const c of clients) c.close()
  })
}

t.test('three replicas survive two kills in a row', async (tt) => {
  const servers = { a: await demoServer(tt), b: await demoServer(tt), c: await demoServer(tt) }
  const replicas = Object.entries(servers).map(([name, s]) => ({ name, port: s.port }))
  const f = await new TestFront().start(tt, frontYaml(tt, replicas))
  const clients = await Promise.all(Array.from({ length: 8 }, () => Client.open(f.port)))
  const keys = clients.map((_, i) => `k${i}`)
  let kills = 0
  await driveIncr(clients, {
    keys,
    count: 600,
    burst: 4,
    onProgress: (done) => {
      if (kills === 0 && done > 8 * 150) { kills++; servers.a.kill('SIGKILL') }
      if (kills === 1 && done > 8 * 350 && f.front.status().primary === 'b') {
        kills++
        servers.b.kill('SIGKILL')
      }
    }
  })
  tt.equal(kills, 2, 'two primaries killed')
  expectCounts(tt, clients, 600)
  const fos = f.all('failover')
  tt.match(fos, [{ from: 'a', to: 'b', epoch: 2 }, { from: 'b', to: 'c', epoch: 3 }])
  tt.equal(f.front.status().primary, 'c')
  for (const c of clients) c.close()
})

t.test('SIGSTOP of the primary: stall detection fails over', async (tt) => {
  const { a, f } = await demoPair(tt)
  const clients = await Promise.all(Array.from({ length: 4 }, () => Client.open(f.port)))
  let stopped = false
  await driveIncr(clients, {
    keys: clients.map((_, i) => `s${i}`),
    count: 300,
    burst: 4,
    onProgress: (done) => {
      if (!stopped && done > 4 * 80) { stopped = true; a.kill('SIGSTOP') }
    }
  })
  tt.teardown(() => a.kill('SIGCONT'))
  expectCounts(tt, clients, 300)
  const ev = await f.waitEvent('failover')
  tt.match(ev, { from: 'a', to: 'b' })
  tt.match(String(ev.reason), /stall/)
  for (const c of clients) c.close()
})

t.test('SIGSTOP of the backup: it is dropped and service goes on', async (tt) => {
  const { b, f } = await demoPair(tt, 'output_commit: match')
  const clients = await Promise.all(Array.from({ length: 4 }, () => Client.open(f.port)))
  let stopped = false
  await driveIncr(clients, {
    keys: clients.map((_, i) => `s${i}`),
    count: 300,
    burst: 4,
    onProgress: (done) => {
      if (!stopped && done > 4 * 80) { stopped = true; b.kill('SIGSTOP') }
    }
  })
  tt.teardown(() => b.kill('SIGCONT'))
  expectCounts(tt, clients, 300)
  const down = await f.waitEvent('replica_down', (e) => e.replica === 'b')
  tt.match(String(down.reason), /stall/)
  tt.notOk(f.find('failover'), 'no failover')
  tt.equal(f.role('b'), 'stale')
  tt.equal(f.front.status().primary, 'a')
  await f.waitEvent('unprotected')
  for (const c of clients) c.close()
})
