// Stall detection against real servers: a replica that leaves service takes every debt
// towards its bytes along, so a healthy primary is never judged stalled for them.

import t from 'tap'
import type { Test } from 'tap'
import net from 'node:net'
import { Client, TestFront } from '../helpers/cluster.js'
import { listenLocal } from '../helpers/ports.js'

// A line server answering `ok` to every line. As the backup: one byte more (`!`) after its
// first answer to `x` (it runs ahead of the primary on that connection), and `ko` to `y` (a
// divergence on another connection, which takes it out of service).
async function lineServer (t: Test, backup: boolean): Promise<number> {
  let aheadOnce = backup
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    let rest = ''
    s.on('data', (d: Buffer) => {
      const lines = (rest + d.toString()).split('\n')
      rest = lines.pop() ?? ''
      for (const line of lines) {
        if (backup && line === 'y') s.write('ko\n')
        else if (line === 'x' && aheadOnce) s.write('ok\n!')
        else s.write('ok\n')
        if (line === 'x') aheadOnce = false
      }
    })
    s.on('end', () => s.end())
    s.on('error', () => {})
  })
  t.teardown(() => server.close())
  return listenLocal(server)
}

t.test('a backup ahead by one byte, then diverged: the primary is not blamed', async (t) => {
  const [pa, pb] = [await lineServer(t, false), await lineServer(t, true)]
  const stall = 300
  const f = await new TestFront().start(t, 'listen: 127.0.0.1:0\n' +
    `state_dir: ${JSON.stringify(t.testdir({}))}\n` +
    'health_check: { interval: 100ms, timeout: 100ms, fall: 2, rise: 1 }\n' +
    `timeouts: { connect: 1s, stall: ${stall}ms, linger: 1s }\n` +
    `replicas:\n  - name: a\n    address: 127.0.0.1:${pa}\n` +
    `  - name: b\n    address: 127.0.0.1:${pb}\n`)
  const one = await Client.open(f.port)
  one.send('x\n')
  t.same(await one.waitLines(1), ['ok'])
  const two = await Client.open(f.port)
  two.send('y\n')
  t.same(await two.waitLines(1), ['ok'], 'the primary answers')
  await f.waitEvent('divergence', (e) => e.replica === 'b')
  t.equal(f.role('b'), 'stale')
  // Connection one stays quiet: the primary never produces the byte the backup ran ahead
  // with. Keep asking on connection two for five stall periods: the primary answers every
  // time and keeps its role.
  const until = Date.now() + 5 * stall
  for (let i = 2; Date.now() < until; i++) {
    two.send('y\n')
    t.equal((await two.waitLines(i)).length, i, `answer ${i}`)
  }
  t.equal(f.role('a'), 'primary')
  t.notOk(f.find('replica_down', (e) => e.replica === 'a'), 'the primary was never taken down')
  t.notOk(f.find('serving_stopped'))
  one.close()
  two.close()
})
