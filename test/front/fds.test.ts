// The front under a low open-files limit (a real process under `ulimit -n`): it takes no
// more clients than its descriptors can hold, and healthy replicas keep their roles.

import t from 'tap'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { Client } from '../helpers/cluster.js'
import { freePorts } from '../helpers/ports.js'
import { Cli } from '../helpers/proc.js'
import { until } from '../helpers/until.js'

const NOFILE = 200
// (NOFILE - reserve (64 + 4 per replica)) / (1 + 2 replicas)
const FITS = Math.floor((NOFILE - 64 - 8) / 3)

t.test('max_connections is lowered to what the open-files limit can hold', async (t) => {
  const dir = t.testdir({})
  const [port, pa, pb] = await freePorts(3)
  const file = path.join(dir, 'ftproxy.yaml')
  writeFileSync(file, [
    `listen: 127.0.0.1:${port}`,
    `state_dir: ${JSON.stringify(path.join(dir, 'state'))}`,
    'replicas:',
    `  - { name: a, address: "127.0.0.1:${pa}", command: [ftproxy, demo-server, -p, "${pa}"] }`,
    `  - { name: b, address: "127.0.0.1:${pb}", command: [ftproxy, demo-server, -p, "${pb}"] }`,
    'health_check: { interval: 200ms, timeout: 200ms, fall: 2, rise: 1 }',
    'log: { level: info, format: json }',
    'admin: { listen: 127.0.0.1:0 }',
    '',
  ].join('\n'))
  const front = new Cli(t, ['run', '--config', file], { nofile: NOFILE })
  const lowered = await front.waitEvent('max_connections_lowered')
  t.match(lowered, { configured: 10000, effective: FITS, nofile: NOFILE, per_client: 3 })
  await front.waitEvent('listening')
  const clients: Client[] = []
  t.teardown(() => { for (const c of clients) c.close() })
  for (let i = 0; i < FITS + 20; i++) clients.push(await Client.open(port as number))
  await until(() => front.all('connection_rejected').length === 20, '20 clients rejected')
  const out = (c: Client): boolean => c.ended || c.closed
  await until(() => clients.filter(out).length === 20, 'the 20 to see it')
  const served = clients.filter((c) => !out(c))
  t.equal(served.length, FITS, 'the clients that fit are served')
  for (const c of served) c.send('INCR n\n')
  await until(() => served.every((c) => c.lines.length === 1), 'every served client answered')
  t.same(served.map((c) => Number(c.lines[0])).sort((x, y) => x - y),
    Array.from({ length: FITS }, (_, i) => i + 1), 'one shared counter, each increment once')
  t.notOk(front.find('replica_role'), 'no replica changed role')
  t.notOk(front.find('replica_down'))
  front.proc.kill('SIGTERM')
  t.equal((await front.exited).code, 0)
})
