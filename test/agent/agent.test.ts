// Replicas behind agents: front + agents (real processes) + demo servers, with a faulty relay
// on the log channel. Every byte each client gets is checked.

import t from 'tap'
import assert from 'node:assert'
import type { Test } from 'tap'
import {
  Client, TestFront, agentInProcess, agentProc, demoServer, driveIncr, expectCounts,
  type AgentProc, type Server,
} from '../helpers/cluster.js'
import { freePorts } from '../helpers/ports.js'
import { until } from '../helpers/until.js'
import { Relay } from '../helpers/relay.js'

type Pair<T> = [T, T]

function both<T, U> ([x, y]: Pair<T>, f: (v: T) => Promise<U>): Promise<Pair<U>> {
  return Promise.all([f(x), f(y)])
}

interface Setup {
  servers: Pair<Server>
  agents: Pair<AgentProc> | null
  relays: Pair<Relay>
  f: TestFront
}

// Two demo servers, an agent beside each (real processes, or in this process when no test
// needs to kill them), a relay in front of each agent, and a front.
async function setup (tt: Test, opts: { processes?: boolean } = {}): Promise<Setup> {
  const servers: Pair<Server> = [await demoServer(tt), await demoServer(tt)]
  const agents = opts.processes ? await both(servers, (s) => agentProc(tt, s.port)) : null
  const ports: Pair<number> = agents !== null
    ? [agents[0].port, agents[1].port]
    : await both(servers, async (s) => (await agentInProcess(tt, s.port)).port)
  const relays = await both(ports, (p) => Relay.start(tt, p))
  const dir = tt.testdir({})
  const yaml = `listen: 127.0.0.1:0\nstate_dir: ${JSON.stringify(dir)}\n` +
    'health_check: { interval: 100ms, timeout: 100ms, fall: 2, rise: 1 }\n' +
    'timeouts: { connect: 1s, stall: 2s, linger: 1s, heartbeat: 600ms }\n' +
    `replicas:\n  - name: a\n    agent: 127.0.0.1:${relays[0].port}\n` +
    `  - name: b\n    agent: 127.0.0.1:${relays[1].port}\n`
  const f = await new TestFront().start(tt, yaml)
  await f.waitEvent('channel_up', (e) => e.replica === 'a')
  await f.waitEvent('channel_up', (e) => e.replica === 'b')
  return { servers, agents, relays, f }
}

t.test('serving through agents, and SIGKILL of the primary server behind its agent', async (tt) => {
  const { servers, f } = await setup(tt)
  const clients = await Promise.all(Array.from({ length: 6 }, () => Client.open(f.port)))
  let killed = false
  await driveIncr(clients, {
    count: 200,
    onProgress: (done) => {
      if (!killed && done > 6 * 60) { killed = true; servers[0].kill('SIGKILL') }
    }
  })
  expectCounts(tt, clients, 200)
  tt.match(await f.waitEvent('failover'), { from: 'a', to: 'b', epoch: 2 })
  tt.notOk(f.find('divergence'))
  for (const c of clients) c.close()
})

t.test('SIGKILL of the primary\'s agent: heartbeats stop, failover', async (tt) => {
  const { agents, f } = await setup(tt, { processes: true })
  assert.ok(agents, 'agents as processes')
  const clients = await Promise.all(Array.from({ length: 4 }, () => Client.open(f.port)))
  let killed = false
  await driveIncr(clients, {
    count: 150,
    onProgress: (done) => {
      if (!killed && done > 4 * 40) { killed = true; agents[0].kill('SIGKILL') }
    }
  })
  expectCounts(tt, clients, 150)
  const ev = await f.waitEvent('failover')
  tt.match(ev, { from: 'a', to: 'b' })
  for (const c of clients) c.close()
})

t.test('a channel cut shorter than the heartbeat timeout loses nothing', async (tt) => {
  const { relays, f } = await setup(tt)
  const clients = await Promise.all(Array.from({ length: 4 }, () => Client.open(f.port)))
  let cuts = 0
  await driveIncr(clients, {
    count: 200,
    onProgress: (done) => {
      // Cut both channels, several times, mid-stream.
      if (cuts < 3 && done > 4 * 40 * (cuts + 1)) { cuts++; for (const r of relays) r.cut() }
    }
  })
  expectCounts(tt, clients, 200)
  tt.equal(cuts, 3)
  tt.notOk(f.find('failover'), 'no failover')
  tt.notOk(f.find('replica_down'), 'no replica down')
  tt.ok(f.all('channel_up').length >= 2 + 2 * 3, 'the channels came back after each cut')
  tt.equal(f.front.status().protected, true)
  for (const c of clients) c.close()
})

t.test('a blackhole longer than the heartbeat timeout fails over', async (tt) => {
  const { relays, f } = await setup(tt)
  const clients = await Promise.all(Array.from({ length: 4 }, () => Client.open(f.port)))
  let holed = false
  await driveIncr(clients, {
    count: 150,
    onProgress: (done) => {
      if (!holed && done > 4 * 40) { holed = true; relays[0].blackhole() }
    }
  })
  expectCounts(tt, clients, 150)
  const ev = await f.waitEvent('failover')
  tt.match(ev, { from: 'a', to: 'b' })
  tt.match(String(ev.reason), /heard/)
  for (const c of clients) c.close()
})

t.test('a connection that ends while the channel is cut still ends for its client', async (tt) => {
  const { relays, f } = await setup(tt)
  for (let i = 0; i < 10; i++) {
    const c = await Client.open(f.port)
    c.send(`SET q${i} v\nQUIT\n`)
    if (i % 2 === 0) await until(() => c.lines.length > 0, 'the first reply')
    for (const r of relays) r.cut()
    await until(() => c.ended || c.closed, `client ${i} to be ended by the server's close`)
    tt.same(c.lines, ['OK', 'OK'], `client ${i}: both replies, then the end`)
    c.close()
  }
  await until(() => f.front.status().connections === 0, 'the front to forget every connection')
  tt.notOk(f.find('replica_down'), 'no replica down')
  tt.notOk(f.find('divergence'), 'no divergence')
})

t.test('idle channels stay up: heartbeats are answered', async (tt) => {
  const { f } = await setup(tt)
  const ups = f.all('channel_up').length
  // Several heartbeat timeouts (600ms) of silence from clients.
  const until3s = Date.now() + 3000
  await until(() => Date.now() > until3s || f.find('replica_down'), 'three idle seconds', 5000)
  tt.notOk(f.find('replica_down'), 'no replica taken for dead')
  tt.equal(f.all('channel_up').length, ups, 'no reconnect needed')
})

t.test('a slow channel (every chunk delayed) loses nothing and fails nothing', async (tt) => {
  const { relays, f } = await setup(tt)
  for (const r of relays) r.delay(40)
  const clients = await Promise.all(Array.from({ length: 4 }, () => Client.open(f.port)))
  await driveIncr(clients, { count: 80 })
  expectCounts(tt, clients, 80)
  tt.notOk(f.find('replica_down'), 'no replica down')
  tt.equal(f.front.status().protected, true)
  for (const c of clients) c.close()
})

t.test('an agent replica down at start joins once its agent answers (no input yet)', async (tt) => {
  const [sa, sb] = [await demoServer(tt), await demoServer(tt)]
  const pa = (await agentInProcess(tt, sa.port)).port
  const [pb] = await freePorts(1)
  assert.ok(pb !== undefined)
  const yaml = `listen: 127.0.0.1:0\nstate_dir: ${JSON.stringify(tt.testdir({}))}\n` +
    'health_check: { interval: 100ms, timeout: 100ms, fall: 2, rise: 1 }\n' +
    'timeouts: { connect: 1s, stall: 2s, linger: 1s, heartbeat: 600ms }\n' +
    `replicas:\n  - name: a\n    agent: 127.0.0.1:${pa}\n` +
    `  - name: b\n    agent: 127.0.0.1:${pb}\n`
  const f = await new TestFront().start(tt, yaml)
  tt.equal(f.role('b'), 'down', 'its agent is not there yet')
  tt.equal(f.front.status().protected, false)
  await agentInProcess(tt, sb.port, '', pb)
  await until(() => f.role('b') === 'backup', 'b to join as a backup')
  tt.equal(f.front.status().protected, true)
  const c = await Client.open(f.port)
  c.send('INCR j\nINCR j\n')
  tt.same(await c.waitLines(2), ['1', '2'])
  await until(() => f.front.status().replicas.every((r) => r.lag_entries === 0), 'both to ack')
  c.close()
})
