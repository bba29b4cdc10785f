// An agent replica is re-seeded through the same command as a direct one: the command is
// told the agents' addresses (FTPROXY_RESEED_*_AGENT), and here a wrapper maps them to the
// servers behind them for the shipped Redis recipe. After a divergence forced on the backup,
// it joins again through a new session at its agent, and stays in sync under load.

import { writeFileSync } from 'node:fs'
import path from 'node:path'
import t from 'tap'
import { ROOT, TestFront, agentInProcess, haveRedis, redisServer } from '../helpers/cluster.js'
import { converge, runMix } from '../helpers/redis-load.js'
import { RespConn } from '../helpers/resp.js'
import { until } from '../helpers/until.js'

const skip = haveRedis() ? false : 'redis-server not installed'

t.test('a diverged agent replica is re-seeded and joins again', { skip }, async (t) => {
  const dir = t.testdir({})
  // A full sync writes the target's snapshot in its directory: not the working tree.
  const extra = ['--dir', dir, '--rdb-del-sync-files', 'yes']
  const [ra, rb] = await Promise.all([redisServer(t, extra), redisServer(t, extra)])
  const [agentA, agentB] = await Promise.all([
    agentInProcess(t, ra.port), agentInProcess(t, rb.port),
  ])
  const wrapper = path.join(dir, 'reseed.sh')
  // Each agent's host would know its own server; the test knows both.
  writeFileSync(wrapper, [
    '#!/bin/sh',
    `addr () { case "$1" in 127.0.0.1:${agentA.port}) echo 127.0.0.1:${ra.port};; ` +
      `127.0.0.1:${agentB.port}) echo 127.0.0.1:${rb.port};; esac; }`,
    'FTPROXY_RESEED_SOURCE_ADDRESS=$(addr "$FTPROXY_RESEED_SOURCE_AGENT")',
    'FTPROXY_RESEED_TARGET_ADDRESS=$(addr "$FTPROXY_RESEED_TARGET_AGENT")',
    'export FTPROXY_RESEED_SOURCE_ADDRESS FTPROXY_RESEED_TARGET_ADDRESS',
    `exec ${JSON.stringify(path.join(ROOT, 'config/reseed-redis.sh'))}`,
    '',
  ].join('\n'), { mode: 0o755 })
  const yaml = `listen: 127.0.0.1:0\nstate_dir: ${JSON.stringify(path.join(dir, 'state'))}\n` +
    'protocol: resp\nhealth_check: { interval: 100ms, timeout: 100ms, rise: 1 }\n' +
    `reseed: { command: [${JSON.stringify(wrapper)}], timeout: 30s }\n` +
    `replicas:\n  - name: a\n    agent: 127.0.0.1:${agentA.port}\n` +
    `  - name: b\n    agent: 127.0.0.1:${agentB.port}\n`
  const f = await new TestFront().start(t, yaml)
  await f.waitEvent('protected')
  const c = await RespConn.open(f.port)
  t.teardown(() => c.close())
  t.equal(await c.command('SET', 'k', 'v1'), 'OK')
  const direct = await RespConn.open(rb.port)
  // b acknowledged the SET when it had it, and may run it a moment later: after that, then.
  await until(async () => await direct.command('GET', 'k') === 'v1', 'b to run the SET')
  await direct.command('SET', 'k', 'tampered')
  direct.close()
  t.equal(await c.command('GET', 'k'), 'v1')
  await f.waitEvent('divergence', (e) => e.replica === 'b')
  const done = await f.waitEvent('reseeded', (e) => e.replica === 'b', 30000)
  t.equal(done.reattached, 1, 'the client\'s connection reattached')
  await until(() => f.front.status().protected, 'protected again')

  const run = await runMix(f.port, {
    conns: 10, requests: 2000, burst: 20, window: 100, seed: 5, ms: 40000,
  })
  t.equal(run.tally.acked, run.tally.sent, 'every request answered')
  t.same(run.tally.bad, [], 'every reply right')
  t.equal(f.all('divergence').length, 1, 'no divergence after the re-seed')
  t.equal(await c.command('GET', 'k'), 'v1', 'the reattached connection goes on')
  t.same(await converge(ra.port, rb.port), [], 'both copies identical')
  for (const x of run.conns) x.close()
})
