// Backpressure against real sockets: a client in backpressure that goes away is noticed
// and forgotten, whatever state its connection is in.

import t from 'tap'
import type { Test } from 'tap'
import net from 'node:net'
import { TestFront } from '../helpers/cluster.js'
import { listenLocal } from '../helpers/ports.js'
import { until } from '../helpers/until.js'

// Takes connections but reads nothing until told to: the front's writes to it stop
// completing, so the client's input is held back (paused) with no output pending for it.
async function stalledServer (t: Test): Promise<{ port: number, start: () => void }> {
  const sockets: net.Socket[] = []
  let reading = false
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => {
    sockets.push(s)
    s.on('data', () => {})
    s.on('end', () => s.end())
    s.on('error', () => {})
    if (reading) s.resume()
  })
  t.teardown(() => { for (const s of sockets) s.destroy(); server.close() })
  const start = (): void => {
    reading = true
    for (const s of sockets) s.resume()
  }
  return { port: await listenLocal(server), start }
}

t.test('a client reset while its input is paused is noticed and forgotten', async (t) => {
  const [a, b] = [await stalledServer(t), await stalledServer(t)]
  const f = await new TestFront().start(t, 'listen: 127.0.0.1:0\n' +
    `state_dir: ${JSON.stringify(t.testdir({}))}\n` +
    'limits: { max_lag: 64KiB }\n' +
    `replicas:\n  - name: a\n    address: 127.0.0.1:${a.port}\n` +
    `  - name: b\n    address: 127.0.0.1:${b.port}\n`)
  const client = net.connect({ port: f.port, host: '127.0.0.1' })
  client.on('error', () => {})
  await new Promise((resolve) => client.once('connect', resolve))
  const chunk = Buffer.alloc(64 * 1024, 'q')
  const pump = setInterval(() => { for (let i = 0; i < 16; i++) client.write(chunk) }, 5)
  t.teardown(() => clearInterval(pump))
  // The servers' buffers fill, acks stop, the front stops reading the client.
  await until(() => client.writableLength > 4 * 1024 * 1024, 'the client to be held back')
  clearInterval(pump)
  t.notOk(f.find('connection_closed'))
  client.resetAndDestroy()
  const gone = await f.waitEvent('connection_closed', () => true, 5000)
  t.equal(gone.conn, 1, 'the reset was noticed while the connection was paused')
  a.start()
  b.start()
  await until(() => f.front.status().connections === 0, 'the connection to be forgotten', 10_000)
  t.equal(f.front.status().log_bytes, 0, 'its input is freed')
  t.equal(f.role('a'), 'primary')
  t.equal(f.role('b'), 'backup')
})

// Echoes every byte and honours backpressure (pipe), like most servers.
async function echoServer (t: Test): Promise<number> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {})
    s.pipe(s)
  })
  t.teardown(() => server.close())
  return listenLocal(server)
}

t.test('clients that never read share limits.max_memory, not max_lag each', async (t) => {
  const [pa, pb] = [await echoServer(t), await echoServer(t)]
  const budget = 3 * 1024 * 1024
  const f = await new TestFront().start(t, 'listen: 127.0.0.1:0\n' +
    `state_dir: ${JSON.stringify(t.testdir({}))}\n` +
    'limits: { max_lag: 8MiB, max_memory: 3MiB }\n' +
    `replicas:\n  - name: a\n    address: 127.0.0.1:${pa}\n` +
    `  - name: b\n    address: 127.0.0.1:${pb}\n`)
  const clients = await Promise.all(Array.from({ length: 6 }, async () => {
    const c = net.connect({ port: f.port, host: '127.0.0.1' })
    c.on('error', () => {})
    await new Promise((resolve) => c.once('connect', resolve))
    c.pause() // never reads
    return c
  }))
  t.teardown(() => { for (const c of clients) c.destroy() })
  await until(() => f.front.status().connections === 6, 'six connections')
  // Input, the client socket's buffer, held output, the backup's output ahead: four buffers.
  t.equal(f.front.status().lag_cap_bytes, Math.floor(budget / (4 * 6)))
  const chunk = Buffer.alloc(64 * 1024, 'm')
  for (const c of clients) for (let i = 0; i < 256; i++) c.write(chunk) // 16 MiB each
  // Everything fills up until the front holds every client back: what it buffers stops
  // growing (the same for ten polls in a row).
  let last = -1
  let same = 0
  await until(() => {
    const now = f.front.status().buffered_bytes
    same = now > 0 && now === last ? same + 1 : 0
    last = now
    return same >= 10
  }, 'the front to hold every client back', 20_000)
  const s = f.front.status()
  t.ok(s.buffered_bytes <= 2 * budget, `buffered ${s.buffered_bytes} for a budget of ${budget}`)
  t.ok(s.log_bytes + s.output_held_bytes <= budget, 'input and output held fit the budget')
  t.equal(f.role('a'), 'primary')
  t.equal(f.role('b'), 'backup', 'no replica was taken for stalled')
})
