// The front itself stopped (SIGSTOP) under load, then continued: the time it was not running
// is held against no replica. A real front process, real demo servers, real signals.

import t from 'tap'
import type { Test } from 'tap'
import net from 'node:net'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { Client } from '../helpers/cluster.js'
import { freePorts, listenLocal } from '../helpers/ports.js'
import { Cli } from '../helpers/proc.js'
import { until } from '../helpers/until.js'

// Answers every line with `ok`, after `delay` ms: a backup that runs behind the primary
// always owes it some output, so there is a stall debt whenever the front is stopped.
async function lineServer (t: Test, delay: number): Promise<number> {
  const server = net.createServer((s) => {
    let rest = ''
    s.on('data', (d: Buffer) => {
      const lines = (rest + d.toString()).split('\n')
      rest = lines.pop() ?? ''
      const reply = 'ok\n'.repeat(lines.length)
      if (delay === 0) s.write(reply)
      else setTimeout(() => { if (!s.destroyed) s.write(reply) }, delay)
    })
    s.on('error', () => {})
  })
  t.teardown(() => server.close())
  return listenLocal(server)
}

t.test('SIGSTOP of the front under load: no replica is blamed for the pause', async (t) => {
  const dir = t.testdir({})
  const [port] = await freePorts(1)
  const [pa, pb] = [await lineServer(t, 0), await lineServer(t, 30)]
  const file = path.join(dir, 'ftproxy.yaml')
  writeFileSync(file, [
    `listen: 127.0.0.1:${port}`,
    `state_dir: ${JSON.stringify(path.join(dir, 'state'))}`,
    'replicas:',
    `  - { name: a, address: "127.0.0.1:${pa}" }`,
    `  - { name: b, address: "127.0.0.1:${pb}" }`,
    'health_check: { interval: 200ms, timeout: 200ms, fall: 2, rise: 1 }',
    'timeouts: { connect: 1s, stall: 500ms, linger: 1s }',
    'log: { level: info, format: json }',
    'admin: { listen: 127.0.0.1:0 }',
    '',
  ].join('\n'))
  const front = new Cli(t, ['run', '--config', file])
  await front.waitEvent('listening')
  const clients = await Promise.all(Array.from({ length: 4 }, () => Client.open(port as number)))
  t.teardown(() => { for (const c of clients) c.close() })
  // Every client keeps 16 requests in flight.
  const sent = clients.map(() => 0)
  const pump = setInterval(() => {
    clients.forEach((c, i) => {
      const inFlight = (sent[i] ?? 0) - c.lines.length
      for (let k = inFlight; k < 16; k++) { c.send('x\n'); sent[i] = (sent[i] ?? 0) + 1 }
    })
  }, 2)
  t.teardown(() => clearInterval(pump))
  for (let round = 1; round <= 3; round++) {
    const before = clients.map((c) => c.lines.length)
    await until(() => clients.every((c, i) => c.lines.length > (before[i] ?? 0) + 50), 'load')
    front.proc.kill('SIGSTOP') // 4× timeouts.stall, then on again
    const stoppedAt = Date.now()
    await until(() => Date.now() - stoppedAt >= 2000, 'the front to stay stopped for 2 s', 5000)
    front.proc.kill('SIGCONT')
    const after = clients.map((c) => c.lines.length)
    await until(() => clients.every((c, i) => c.lines.length > (after[i] ?? 0) + 50),
      `round ${round}: the clients to be served again`)
  }
  clearInterval(pump)
  t.notOk(front.find('replica_role'), 'no replica changed role')
  t.notOk(front.find('replica_down'), 'no replica was taken down')
  t.ok(front.find('front_paused'), 'the front saw its own pause')
  // One answer per request: nothing lost or repeated.
  await until(() => clients.every((c, i) => c.lines.length === sent[i]), 'every answer')
  t.ok(clients.every((c) => c.lines.every((l) => l === 'ok')), 'every answer is ok')
  front.proc.kill('SIGTERM')
  t.equal((await front.exited).code, 0)
})
