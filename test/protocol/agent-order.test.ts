// protocol: resp through agents: the front names the protocol in its HELLO, and each agent
// orders the log beside its server (turns and the control connection run in the agent).
// The shared-key mix on two agent replicas: no divergence, both copies identical, and the
// agents' servers saw no connection of ftproxy's own beyond one control connection each.

import t from 'tap'
import { TestFront, agentInProcess, haveRedis, redisServer } from '../helpers/cluster.js'
import { checkMix, converge, runMix } from '../helpers/redis-load.js'
import { RespConn } from '../helpers/resp.js'

const skip = haveRedis() ? false : 'redis-server not installed'
const CHECKS = 'health_check: { interval: 100ms, timeout: 100ms }'

/** The number of connections a redis-server has accepted since it started. */
async function accepted (port: number): Promise<number> {
  const c = await RespConn.open(port)
  const [info] = await c.call([['INFO', 'stats']])
  c.close()
  const m = /total_connections_received:(\d+)/.exec(String(info))
  return Number(m?.[1] ?? NaN)
}

t.test('resp through agents: shared keys stay in sync', { skip }, async (tt) => {
  const [ra, rb] = await Promise.all([redisServer(tt), redisServer(tt)])
  const [agentA, agentB] = await Promise.all([
    agentInProcess(tt, ra.port), agentInProcess(tt, rb.port),
  ])
  const dir = tt.testdir({})
  const yaml = `listen: 127.0.0.1:0\nstate_dir: ${JSON.stringify(dir)}\nprotocol: resp\n` +
    `timeouts: { heartbeat: 1s }\n${CHECKS}\n` +
    `replicas:\n  - name: a\n    agent: 127.0.0.1:${agentA.port}\n` +
    `  - name: b\n    agent: 127.0.0.1:${agentB.port}\n`
  const f = await new TestFront().start(tt, yaml)
  await f.waitEvent('channel_up', (e) => e.replica === 'a')
  await f.waitEvent('channel_up', (e) => e.replica === 'b')
  // Each agent opens its control connection and shared lane after its WELCOME, before any
  // client's server connection: one request answered through the front means both are open.
  const warm = await RespConn.open(f.port)
  tt.same(await warm.call([['PING']]), ['PONG'], 'a first request answered')
  warm.close()
  const before = await Promise.all([accepted(ra.port), accepted(rb.port)])
  const run = await runMix(f.port, {
    conns: 20, requests: 5000, burst: 20, window: 100, seed: 7, ms: 50000,
  })
  tt.comment(`${run.tally.acked} replies through agents in ${run.ms}ms`)
  tt.equal(run.timedOut, null, 'the load finished within its deadline')
  tt.equal(run.tally.acked, run.tally.sent, 'every request answered')
  tt.same(run.tally.bad, [], 'every reply has the shape its request expects')
  tt.same(f.all('divergence'), [], 'no divergence')
  tt.notOk(f.find('unprotected'), 'never unprotected')
  const after = await Promise.all([accepted(ra.port), accepted(rb.port)])
  tt.same(await checkMix(ra.port, run.tally), [], 'the primary holds what clients were told')
  tt.same(await converge(ra.port, rb.port), [], 'both copies identical')
  // Each count includes this test's own INFO connection (one per call) and the 20 clients'
  // server connections: the agents' health checks (every 200ms) opened none.
  tt.equal(after[0] - before[0], after[1] - before[1], 'both servers accepted as many')
  tt.equal(after[0] - before[0], 20 + 1, 'the clients\' connections, and one INFO call')
  for (const c of run.conns) c.close()
})

t.test('an agent with no front yet opens no connection per health check', { skip }, async (tt) => {
  const r = await redisServer(tt)
  const conn = await RespConn.open(r.port) // kept open: INFO on it adds no connection
  const total = async (): Promise<number> => {
    const [info] = await conn.call([['INFO', 'stats']])
    return Number(/total_connections_received:(\d+)/.exec(String(info))?.[1] ?? NaN)
  }
  await agentInProcess(tt, r.port) // health_check every 200ms
  const start = await total()
  // Ten check periods: with a TCP connect per check the count would grow by ten.
  const deadline = Date.now() + 2000
  let grew = 0
  while (Date.now() < deadline && grew < 3) {
    grew = (await total()) - start
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  tt.ok(grew < 3, `the server accepted ${grew} connections over ten check periods`)
  conn.close()
})
