// protocol: line orders the demo server's connections: 20 clients INCR one shared key (the
// `nc` sessions of issue 10, pipelined) and both demo servers count alike. Each INCR's reply
// is the counter after it: every value 1..N is told exactly once, each client's values rise,
// there is no divergence, and both servers end at N.

import t from 'tap'
import { Client, demoPair, driveIncr } from '../helpers/cluster.js'
import { until } from '../helpers/until.js'

const CLIENTS = 20
const COUNT = 500 // INCRs per client

// Asks a demo server directly.
async function get (port: number, key: string): Promise<string | undefined> {
  const c = await Client.open(port)
  c.send(`GET ${key}\n`)
  const [v] = await c.waitLines(1)
  c.close()
  return v
}

t.test('protocol: line: 20 clients INCR one key, no divergence', async (tt) => {
  const { a, b, f } = await demoPair(tt, 'protocol: line\noutput_commit: ack')
  const clients = await Promise.all(Array.from({ length: CLIENTS }, () => Client.open(f.port)))
  const started = Date.now()
  await driveIncr(clients, { count: COUNT, burst: 4, keys: clients.map(() => 'shared') })
  const total = CLIENTS * COUNT
  tt.comment(`${total} INCRs in ${Date.now() - started}ms, ${f.front.counters.turns} turns`)
  const values = clients.flatMap((c) => c.lines.map(Number))
  tt.same(values.sort((x, y) => x - y), Array.from({ length: total }, (_, i) => i + 1),
    `every value 1..${total} told once`)
  clients.forEach((c, i) => {
    const own = c.lines.map(Number)
    tt.ok(own.every((v, k) => k === 0 || v > (own[k - 1] ?? 0)), `client ${i}: values rise`)
    tt.equal(c.closed, false, `client ${i} kept its connection`)
  })
  tt.ok(f.front.counters.turns > 0, 'the replicas were fed in turns')
  tt.same(f.all('divergence'), [], 'no divergence')
  tt.notOk(f.find('unprotected'), 'never unprotected')
  tt.equal(await get(a.port, 'shared'), String(total), 'the primary holds N')
  await until(async () => await get(b.port, 'shared') === String(total), 'the backup at N')
  tt.equal(f.role('b'), 'backup', 'the backup is in service')
  for (const c of clients) c.close()
})
