// Front behaviour beyond the failover itself: backup loss, divergence, restart from the
// arbiter's state, bounded memory, connection limits. Real demo-server processes.

import t from 'tap'
import type { Test } from 'tap'
import net from 'node:net'
import { Client, TestFront, demoPair, demoServer, frontYaml } from '../helpers/cluster.js'
import { until } from '../helpers/until.js'
import { listenLocal } from '../helpers/ports.js'

t.test('backup loss with on_backup_loss: continue', async (tt) => {
  const { b, f } = await demoPair(tt, 'on_backup_loss: continue')
  const c = await Client.open(f.port)
  c.send('INCR x\n')
  await c.waitLines(1)
  b.kill('SIGKILL')
  await f.waitEvent('unprotected')
  const down = await f.waitEvent('replica_down', (e) => e.replica === 'b')
  tt.ok(down.reason, 'says why')
  c.send('INCR x\nINCR x\n')
  tt.same(await c.waitLines(3), ['1', '2', '3'], 'served by the primary alone')
  tt.equal(f.role('b'), 'stale')
  tt.equal(f.front.status().protected, false)
  c.close()
})

t.test('backup loss with on_backup_loss: block holds output', async (tt) => {
  const { b, f } = await demoPair(tt, 'on_backup_loss: block')
  const c = await Client.open(f.port)
  c.send('INCR x\n')
  tt.same(await c.waitLines(1), ['1'])
  b.kill('SIGKILL')
  const ev = await f.waitEvent('unprotected')
  tt.equal(ev.on_backup_loss, 'block')
  c.send('INCR x\n')
  // The primary answered (its reply is held in the front) but the client got nothing.
  await until(() => f.front.status().output_held_bytes > 0, 'the reply to be held')
  tt.same(c.lines, ['1'], 'nothing released while unprotected')
  c.close()
})

t.test('divergence in match mode: the client gets the primary, the backup is stale', async (tt) => {
  const { f } = await demoPair(tt, 'output_commit: match', { divergeAfterB: 5 })
  const c = await Client.open(f.port)
  for (let i = 0; i < 10; i++) c.send('INCR d\n')
  const oneToTen = Array.from({ length: 10 }, (_, i) => String(i + 1))
  tt.same(await c.waitLines(10), oneToTen, "the primary's answers")
  const ev = await f.waitEvent('divergence')
  tt.match(ev, { replica: 'b', conn: 1, offset: 10 })
  tt.type(ev.primary_hex, 'string')
  tt.type(ev.backup_hex, 'string')
  tt.equal(f.role('b'), 'stale')
  await f.waitEvent('unprotected')
  c.close()
})

t.test('divergence is detected in ack mode too', async (tt) => {
  const { f } = await demoPair(tt, 'output_commit: ack', { divergeAfterB: 2 })
  const c = await Client.open(f.port)
  c.send('SET k v\nGET k\nGET k\nGET k\n')
  tt.same(await c.waitLines(4), ['OK', 'v', 'v', 'v'])
  await f.waitEvent('divergence', (e) => e.replica === 'b')
  tt.equal(f.role('b'), 'stale')
  c.close()
})

t.test('a restarted front serves from the promoted replica, never the stale one', async (tt) => {
  const a = await demoServer(tt)
  const b = await demoServer(tt)
  const yaml = frontYaml(tt, [{ name: 'a', port: a.port }, { name: 'b', port: b.port }])
  const f1 = await new TestFront().start(tt, yaml)
  const c1 = await Client.open(f1.port)
  c1.send('INCR r\nINCR r\n')
  await c1.waitLines(2)
  a.kill('SIGKILL')
  await f1.waitEvent('failover')
  c1.send('INCR r\n')
  tt.same(await c1.waitLines(3), ['1', '2', '3'])
  c1.close()
  await f1.front.close()

  // The old primary's server is back (empty: it lost its state), but it is stale.
  const f2 = await new TestFront().start(tt, yaml)
  const loaded = await f2.waitEvent('state_loaded')
  tt.match(loaded, { primary: 'b', epoch: 2, stale: ['a'] })
  tt.equal(f2.role('a'), 'stale')
  tt.equal(f2.front.status().primary, 'b')
  const c2 = await Client.open(f2.port)
  c2.send('INCR r\n')
  tt.same(await c2.waitLines(1), ['4'], 'state continues from the promoted replica')
  c2.close()
})

t.test('a client beyond limits.max_connections is closed at once', async (tt) => {
  const { f } = await demoPair(tt, 'limits: { max_connections: 2 }')
  const c1 = await Client.open(f.port)
  const c2 = await Client.open(f.port)
  await until(() => f.front.status().connections === 2, 'two connections')
  const c3 = await Client.open(f.port)
  await until(() => c3.ended || c3.closed, 'the third to be closed')
  await f.waitEvent('connection_rejected', (e) => e.reason === 'max_connections')
  c1.send('PING\n')
  tt.same(await c1.waitLines(1), ['PONG'], 'the others are served')
  c1.close()
  c2.close()
})

t.test('a client that never reads: the front holds at most about max_lag', async (tt) => {
  const a = await demoServer(tt)
  const b = await demoServer(tt)
  const maxLag = 256 * 1024
  const replicas = [{ name: 'a', port: a.port }, { name: 'b', port: b.port }]
  const f = await new TestFront().start(tt, frontYaml(tt, replicas, 'limits: { max_lag: 256KiB }'))
  const c = await Client.open(f.port)
  c.socket.pause()
  const value = 'v'.repeat(60000)
  c.send(`SET big ${value}\n`)
  // Each GET returns 60 kB, each SET sends 30 kB: 4000 of each would be 240 MB of output the
  // client never reads and 120 MB of input the server could only take if output flowed.
  const gets = Buffer.from(`GET big\nSET pad ${'p'.repeat(30000)}\n`.repeat(100))
  let sent = 0
  let peak = { held: 0, log: 0 }
  // Records the most output and input the front held so far; returns the output held now.
  const sample = (): number => {
    const s = f.front.status()
    peak = { held: Math.max(peak.held, s.output_held_bytes), log: Math.max(peak.log, s.log_bytes) }
    return s.output_held_bytes
  }
  const deadline = Date.now() + 20000
  while (sent < 40 && Date.now() < deadline) {
    if (c.send(gets)) sent++
    else await drainedOrWaited(c, 1500)
    const held = sample()
    if (c.socket.writableLength > 0 && held >= maxLag) break
  }
  // Let it settle at the bound, sampling as it goes.
  await until(() => sample() >= maxLag, 'the output window to fill')
  for (let i = 0; i < 50; i++) {
    await new Promise((resolve) => setImmediate(resolve))
    sample()
  }
  tt.ok(peak.held <= maxLag + 256 * 1024, `output held stays near max_lag (peak ${peak.held})`)
  tt.ok(peak.log <= 2 * maxLag, `input held stays under 2 × max_lag (peak ${peak.log})`)
  tt.ok(sent < 40, `the client was made to wait (${sent} of 40 blocks taken)`)
  c.close()
})

// The client's socket drained, or ms passed without it (the front may hold it off for long).
function drainedOrWaited (c: Client, ms: number): Promise<unknown> {
  const drained = new Promise((resolve) => c.socket.once('drain', resolve))
  const waited = until(() => false, 'drain', ms).catch(() => {})
  return Promise.race([drained, waited])
}

// A server that never reads its first client connection and answers PING on the others: the
// same on every replica, so the replicas stay in step while writes to that connection pile
// up. (Connection 0 is the front's startup probe; periodic checks are off in this test.)
async function neverReadsFirst (tt: Test): Promise<number> {
  let n = 0
  const server = net.createServer({ pauseOnConnect: true }, (socket) => {
    if (n++ === 1) {
      socket.on('error', () => {})
      return
    }
    socket.resume()
    socket.on('data', (d) => {
      const pings = d.toString().match(/PING\n/g)?.length ?? 0
      for (let i = 0; i < pings; i++) socket.write('PONG\n')
    })
    socket.on('error', () => {})
  })
  await listenLocal(server)
  tt.teardown(() => { server.close(); server.unref() })
  return (server.address() as net.AddressInfo).port
}

t.test('ack mode: input left unread on one connection does not hold back others', async (tt) => {
  const a = await neverReadsFirst(tt)
  const b = await neverReadsFirst(tt)
  const replicas = [{ name: 'a', port: a }, { name: 'b', port: b }]
  const yaml = frontYaml(tt, replicas, 'output_commit: ack\nlimits: { max_lag: 1MiB }')
    .replace('interval: 200ms', 'interval: 10m')
  const f = await new TestFront().start(tt, yaml)
  const stuck = await Client.open(f.port)
  const block = Buffer.alloc(256 * 1024, 'x')
  let sent = 0
  // Until writes to both servers' first connection are stuck in the front, past the kernel.
  await until(() => {
    while (sent < 200 && stuck.socket.writableLength < 4 * block.length) {
      stuck.send(block)
      sent++
    }
    const st = f.front.status()
    return st.log_bytes >= 1024 * 1024 && st.replicas.every((r) => r.lag_entries > 0)
  }, 'input to back up', 20000)
  const other = await Client.open(f.port)
  other.send('PING\nPING\n')
  tt.same(await other.waitLines(2, 5000), ['PONG', 'PONG'], 'the other client is served')
  tt.equal(f.role('b'), 'backup', 'nothing was taken for a failure')
  tt.ok(f.front.status().replicas.every((r) => r.lag_entries > 0), 'connection 1 is still stuck')
  stuck.close()
  other.close()
})

t.test('a lagging backup that is dropped frees a primary paused for it', async (tt) => {
  const { b, f } = await demoPair(tt, 'output_commit: none\nlimits: { max_lag: 64KiB }')
  const c = await Client.open(f.port)
  c.send(`SET big ${'v'.repeat(60000)}\n`)
  await c.waitLines(1)
  b.kill('SIGSTOP')
  tt.teardown(() => b.kill('SIGCONT'))
  // 1.2 MB of output: the window fills while the stopped backup confirms nothing.
  c.send('GET big\n'.repeat(20))
  await f.waitEvent('replica_down', (e) => e.replica === 'b')
  await until(() => c.lines.length >= 21, 'every reply after the backup was dropped')
  tt.equal(c.lines.length, 21)
  tt.ok(c.lines.slice(1).every((l) => l.length === 60000), 'each reply whole')
  c.close()
})

t.test('a client that leaves mid-stream does not make the backup look diverged', async (tt) => {
  const { f } = await demoPair(tt, 'output_commit: match')
  const setup = await Client.open(f.port)
  setup.send(`SET big ${'v'.repeat(60000)}\n`)
  await setup.waitLines(1)
  for (let i = 0; i < 5; i++) {
    const c = await Client.open(f.port)
    c.send('GET big\n'.repeat(40))
    await until(() => c.text.length > 0, 'the stream to start')
    c.close()
  }
  await until(() => f.front.status().connections === 1, 'the front to forget closed connections')
  tt.notOk(f.find('divergence'), 'no divergence')
  tt.equal(f.role('b'), 'backup')
  setup.close()
})
