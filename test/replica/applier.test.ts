// Applier against real TCP servers on 127.0.0.1 port 0: entries in, bytes and events out.
// No fixed sleeps: every wait is on an event or a poll with a deadline.

import t from 'tap'
import assert from 'node:assert'
import type { Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import net from 'node:net'
import { InputLog, type Entry } from '../../lib/front/log.js'
import { Applier, type ApplierOptions } from '../../lib/replica/applier.js'
import { FD_PRELUDE, distUrl, runUnderLimit } from '../helpers/child.js'
import { until } from '../helpers/until.js'
import { listenLocal } from '../helpers/ports.js'

// One accepted connection, as the server saw it.
interface Peer {
  socket: net.Socket
  bytes: Buffer[]
  received: number
  /** bytes received when the applier's FIN arrived (-1: not yet) */
  endAt: number
  closed: boolean
  text (): string
}

interface ServerOpts {
  /** write back what it reads */
  echo?: boolean
  /** end its side once the client ended (a well-behaved server) */
  endOnEnd?: boolean
  pauseOnConnect?: boolean
  onPeer?: (p: Peer) => void
}

interface TestServer {
  port: number
  peers: Peer[]
  /** peers[i]; fails the test when there is none. */
  peer (i: number): Peer
}

async function server (t: Test, opts: ServerOpts = {}): Promise<TestServer> {
  const peers: Peer[] = []
  const serverOpts = { allowHalfOpen: true, pauseOnConnect: opts.pauseOnConnect ?? false }
  const srv = net.createServer(serverOpts, (socket) => {
    const p: Peer = {
      socket,
      bytes: [],
      received: 0,
      endAt: -1,
      closed: false,
      text: () => Buffer.concat(p.bytes).toString(),
    }
    peers.push(p)
    socket.on('data', (d: Buffer) => {
      p.bytes.push(d)
      p.received += d.length
      if (opts.echo) socket.write(d)
    })
    socket.on('end', () => {
      p.endAt = p.received
      if (opts.endOnEnd) socket.end()
    })
    socket.on('error', () => {})
    socket.on('close', () => { p.closed = true })
    opts.onPeer?.(p)
  })
  await listenLocal(srv)
  t.teardown(() => {
    for (const p of peers) p.socket.destroy()
    return new Promise<void>((resolve) => srv.close(() => resolve()))
  })
  const peer = (i: number): Peer => {
    const p = peers[i]
    assert.ok(p, `peer ${i} accepted`)
    return p
  }
  return { port: (srv.address() as net.AddressInfo).port, peers, peer }
}

// Everything an applier emitted, in order.
class Recorder {
  /** acked seqs, in ack order */
  readonly acks: number[] = []
  /** acked seqs per connection, in ack order */
  readonly byConn = new Map<number, number[]>()
  /** seqs acked more than once (must stay empty) */
  readonly dups: number[] = []
  private readonly ackedSet = new Set<number>()
  readonly output = new Map<number, Buffer[]>()
  readonly ends: Array<[number, Error | null]> = []
  readonly closed: number[] = []
  readonly failed: Error[] = []
  events = 0

  constructor (a: Applier) {
    a.on('ack', (e: Entry) => {
      this.events++
      if (this.ackedSet.has(e.seq)) this.dups.push(e.seq)
      this.ackedSet.add(e.seq)
      this.acks.push(e.seq)
      const list = this.byConn.get(e.conn) ?? []
      list.push(e.seq)
      this.byConn.set(e.conn, list)
    })
    a.on('output', (conn, data) => {
      this.events++
      const list = this.output.get(conn) ?? []
      list.push(data)
      this.output.set(conn, list)
    })
    a.on('output_end', (conn, err) => { this.events++; this.ends.push([conn, err]) })
    a.on('closed', (conn) => { this.events++; this.closed.push(conn) })
    a.on('failed', (err) => { this.events++; this.failed.push(err) })
  }

  out (conn: number): string {
    return Buffer.concat(this.output.get(conn) ?? []).toString()
  }

  /** Was the entry with this seq acked? */
  has (seq: number): boolean {
    return this.ackedSet.has(seq)
  }

  /** Acked seqs of `conn`, in ack order. */
  of (conn: number): number[] {
    return this.byConn.get(conn) ?? []
  }

  /** Was every one of these acked? */
  all (entries: Entry[]): boolean {
    return entries.every((e) => this.ackedSet.has(e.seq))
  }
}

// Every seq of the log acked exactly once, each connection's acks in its own seq order, and
// nothing left unacked.
function allAcked (t: Test, a: Applier, rec: Recorder, log: InputLog): void {
  t.same([...rec.acks].sort((x, y) => x - y), Array.from({ length: log.lastSeq }, (_, i) => i + 1),
    'every seq acked')
  t.same(rec.dups, [], 'no seq acked twice')
  for (const [conn, seqs] of rec.byConn) {
    t.same(seqs, [...seqs].sort((x, y) => x - y), `conn ${conn}: acks in its seq order`)
  }
  t.equal(a.unacked, 0, 'unacked is 0')
}

function applier (
  t: Test, port: number, opts: Partial<ApplierOptions> = {}
): { a: Applier, rec: Recorder } {
  const address = { host: '127.0.0.1', port }
  const a = new Applier({ address, connectTimeout: 2000, linger: 5000, ...opts })
  const rec = new Recorder(a)
  t.teardown(() => a.close())
  return { a, rec }
}

// A port nothing listens on: the kernel just handed it out and it was closed again.
async function deadPort (): Promise<number> {
  const s = net.createServer()
  await listenLocal(s)
  const { port } = s.address() as net.AddressInfo
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

t.test('OPEN, DATA, EOF against an echo server', async (t) => {
  const srv = await server(t, { echo: true, endOnEnd: true })
  const { a, rec } = applier(t, srv.port)
  const log = new InputLog()
  const entries = [
    log.append('OPEN', 1),
    log.append('DATA', 1, Buffer.from('hello ')),
    log.append('DATA', 1, Buffer.from('world')),
    log.append('EOF', 1),
  ]
  const seen: Entry[] = []
  a.on('ack', (e) => seen.push(e))
  for (const e of entries) a.apply(e)
  t.equal(a.sent, 4, 'sent is the last seq handed over')
  t.equal(a.unacked, 4, 'unacked counts what was handed over')
  await until(() => rec.closed.includes(1), 'the app socket to close')
  await until(() => a.unacked === 0, 'every entry acked')
  t.equal(rec.out(1), 'hello world', 'output events carry the echoed bytes')
  t.same(rec.acks, [1, 2, 3, 4], 'each entry acked once, in seq order')
  t.ok(seen.length === 4 && seen.every((e, i) => e === entries[i]),
    'the ack carries the entry handed over')
  t.same(rec.ends, [[1, null]], 'output_end once, without error')
  t.same(rec.failed, [])
  t.equal(srv.peers.length, 1)
  t.equal(srv.peer(0).text(), 'hello world')
  t.equal(srv.peer(0).endAt, 11, 'the half-close came after every byte')
  t.equal(a.connections, 0, 'the closed connection is forgotten')
})

t.test('connections are opened one at a time, in seq order', async (t) => {
  const N = 20
  const order: string[] = []
  const srv = await server(t, {
    onPeer: (p) => {
      // The first line each connection sends is its conn id: accept order must be OPEN order.
      let buf = ''
      p.socket.on('data', (d: Buffer) => {
        if (buf.includes('\n')) return
        buf += d.toString()
        if (buf.includes('\n')) order[srv.peers.indexOf(p)] = buf.slice(0, buf.indexOf('\n'))
      })
    },
  })
  const { a, rec } = applier(t, srv.port)
  const log = new InputLog()
  // Conn ids are not in seq order, and data for earlier conns is interleaved with later OPENs.
  const ids = Array.from({ length: N }, (_, i) => 100 + ((i * 7) % N))
  ids.forEach((id, i) => {
    a.apply(log.append('OPEN', id))
    a.apply(log.append('DATA', id, Buffer.from(`${id}\n`)))
    const prev = ids[i - 1]
    if (prev !== undefined) a.apply(log.append('DATA', prev, Buffer.from('more\n')))
  })
  t.ok(a.connections <= 1, 'only one connect in flight when everything was applied at once')
  await until(() => a.unacked === 0, 'every entry acked')
  await until(() => order.filter(Boolean).length === N &&
    srv.peers.every((p, i) => p.received >= `${ids[i]}\n`.length + (i < N - 1 ? 5 : 0)),
  'every id and follow-up')
  t.same(order, ids.map(String), 'accept order == OPEN order')
  ids.slice(0, -1).forEach((id, i) => {
    t.equal(srv.peers[i]?.text(), `${id}\nmore\n`, `conn ${id} got its own bytes in order`)
  })
  t.equal(a.connections, N)
  allAcked(t, a, rec, log)
  for (const id of ids) {
    const [open] = log.held(id)
    assert.ok(open, `conn ${id}: entries held`)
    t.equal(rec.of(id)[0], open.seq, `conn ${id}: its OPEN acked first`)
  }
})

t.test('EOF is a half-close after all data; output still flows after it', async (t) => {
  const srv = await server(t, {
    onPeer: (p) => p.socket.on('end', () => {
      // Answer after the client's EOF with a summary, then close: a request/response server.
      p.socket.end(`got ${p.received}\n`)
    }),
  })
  const { a, rec } = applier(t, srv.port)
  const log = new InputLog()
  a.apply(log.append('OPEN', 5))
  const chunk = Buffer.alloc(256 * 1024, 0x78)
  const total = 16 * chunk.length
  for (let i = 0; i < 16; i++) a.apply(log.append('DATA', 5, chunk))
  const eof = log.append('EOF', 5)
  a.apply(eof)
  await until(() => rec.ends.length === 1, 'output_end', 10000)
  t.equal(srv.peer(0).endAt, total, 'the server read every byte before the FIN')
  t.equal(rec.out(5), `got ${total}\n`, 'the answer written after EOF arrived')
  t.same(rec.ends, [[5, null]])
  await until(() => rec.has(eof.seq), 'EOF acked')
  allAcked(t, a, rec, log)
  await until(() => rec.closed.includes(5), 'closed once both sides ended')
})

t.test('CLOSE with a server that never closes: destroyed after linger', async (t) => {
  const srv = await server(t)
  const linger = 300
  const { a, rec } = applier(t, srv.port, { linger })
  const log = new InputLog()
  a.apply(log.append('OPEN', 1))
  a.apply(log.append('DATA', 1, Buffer.from('last words')))
  const close = log.append('CLOSE', 1)
  await until(() => rec.has(2), 'DATA acked')
  t.same(rec.acks, [1, 2])
  const t0 = Date.now()
  a.apply(close)
  await until(() => (srv.peers[0]?.endAt ?? -1) >= 0, 'the half-close to reach the server')
  t.equal(srv.peer(0).endAt, 10, 'after every byte, as a FIN (not a reset)')
  t.equal(rec.closed.length, 0, 'not destroyed while the server may still be working')
  await until(() => rec.closed.includes(1), 'closed after linger', linger + 5000)
  const waited = Date.now() - t0
  t.ok(waited >= linger - 20, `destroyed after linger (${waited}ms >= ${linger}ms)`)
  t.ok(rec.has(close.seq), 'CLOSE acked')
  allAcked(t, a, rec, log)
  t.same(rec.ends, [[1, null]], 'output_end reported when the socket went')
  t.equal(a.connections, 0)
})

t.test('CLOSE with a server that closes: destroyed at once, not after linger', async (t) => {
  const srv = await server(t, { endOnEnd: true })
  const linger = 60000
  const { a, rec } = applier(t, srv.port, { linger })
  const log = new InputLog()
  a.apply(log.append('OPEN', 1))
  a.apply(log.append('DATA', 1, Buffer.from('bye')))
  const t0 = Date.now()
  a.apply(log.append('CLOSE', 1))
  await until(() => rec.closed.includes(1), 'closed', 10000)
  t.ok(Date.now() - t0 < linger, 'well before linger')
  t.equal(srv.peer(0).text(), 'bye')
  await until(() => a.unacked === 0, 'every entry acked')
  allAcked(t, a, rec, log)
})

// The client is gone: a server that closes promptly should not keep the app socket for
// `linger` just because the front had paused that connection's output (backpressure).
t.test('CLOSE on a paused connection: destroyed once the server closed, ' +
  'not after linger', async (t) => {
// It answers the client's last request, then closes when the client ends.
  const srv = await server(t, {
    endOnEnd: true,
    onPeer: (p) => p.socket.on('data', () => p.socket.write('answer')),
  })
  const linger = 3000
  const { a, rec } = applier(t, srv.port, { linger })
  const log = new InputLog()
  a.apply(log.append('OPEN', 1))
  await until(() => rec.has(1), 'connected')
  a.pause(1)
  a.apply(log.append('DATA', 1, Buffer.from('request')))
  await until(() => srv.peers[0]?.received === 7 && srv.peers[0].socket.writableLength === 0,
    'the answer sent')
  const t0 = Date.now()
  a.apply(log.append('CLOSE', 1))
  await until(() => rec.closed.includes(1), 'closed', linger + 5000)
  t.ok(Date.now() - t0 < linger, `closed after ${Date.now() - t0}ms, before linger (${linger}ms)`)
  t.same(rec.ends, [[1, null]], 'the server\'s FIN was seen')
  allAcked(t, a, rec, log)
})

t.test('EOF then CLOSE, and entries for a conn that is gone, are acked', async (t) => {
  const srv = await server(t, { endOnEnd: true })
  const { a, rec } = applier(t, srv.port)
  const log = new InputLog()
  a.apply(log.append('OPEN', 1))
  a.apply(log.append('EOF', 1))
  a.apply(log.append('CLOSE', 1))
  await until(() => rec.closed.includes(1), 'closed')
  a.apply(log.append('DATA', 1, Buffer.from('late')))
  a.apply(log.append('EOF', 1))
  a.apply(log.append('CLOSE', 1))
  a.apply(log.append('DATA', 99, Buffer.from('never opened')))
  t.equal(a.unacked, 0, 'entries for a gone or unknown conn are acked at once')
  allAcked(t, a, rec, log)
  t.equal(srv.peer(0).received, 0, 'nothing written after the conn was gone')
})

t.test('connect refused: failed, and nothing after', async (t) => {
  const port = await deadPort()
  const { a, rec } = applier(t, port)
  const log = new InputLog()
  a.apply(log.append('OPEN', 1))
  a.apply(log.append('DATA', 1, Buffer.from('x')))
  a.apply(log.append('OPEN', 2))
  await until(() => rec.failed.length > 0, 'failed')
  t.equal(rec.failed.length, 1)
  t.equal((rec.failed[0] as NodeJS.ErrnoException).code, 'ECONNREFUSED')
  t.same(rec.acks, [], 'nothing acked')
  t.equal(a.unacked, 3, 'what was handed over stays unacked')
  t.equal(a.connections, 0)
  const before = rec.events
  a.apply(log.append('OPEN', 3))
  t.equal(a.sent, 3, 'a stopped applier takes no more entries')
  t.equal(rec.events, before)
})

// A listener that never accepts, with a backlog of 0: once one connection sits in its accept
// queue, Linux drops further SYNs, so a connect neither completes nor is refused. Loopback
// only, no timing assumption beyond the connect timeout itself.
function hasPython (): boolean {
  try {
    return spawnSync('python3', ['-c', 'pass'], { timeout: 10000 }).status === 0
  } catch {
    return false
  }
}

t.test('connect timeout: failed with ERR_FTPROXY_CONNECT_TIMEOUT', {
  skip: process.platform !== 'linux'
    ? 'needs Linux accept-queue overflow behaviour'
    : !hasPython() ? 'needs python3 for a non-accepting listener' : false,
}, async (t) => {
  const py = 'import socket,sys\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\n' +
    'print(s.getsockname()[1],flush=True)\nsys.stdin.read()\n'
  const proc = spawn('python3', ['-c', py], { stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(() => { proc.kill('SIGKILL') })
  const port = await new Promise<number>((resolve, reject) => {
    let buf = ''
    proc.stdout.on('data', (d: Buffer) => {
      buf += d.toString()
      if (buf.includes('\n')) resolve(Number(buf.trim()))
    })
    proc.once('exit', (code) => reject(new Error(`python exited ${code}`)))
  })
  // Fill the accept queue.
  const filler = net.connect({ host: '127.0.0.1', port })
  t.teardown(() => { filler.destroy() })
  filler.on('error', () => {})
  await new Promise((resolve) => filler.once('connect', resolve))
  const { a, rec } = applier(t, port, { connectTimeout: 200 })
  const log = new InputLog()
  const t0 = Date.now()
  a.apply(log.append('OPEN', 1))
  a.apply(log.append('DATA', 1, Buffer.from('x')))
  await until(() => rec.failed.length > 0, 'failed', 5000)
  t.equal((rec.failed[0] as NodeJS.ErrnoException).code, 'ERR_FTPROXY_CONNECT_TIMEOUT')
  t.ok(Date.now() - t0 >= 190, 'after the connect timeout')
  t.same(rec.acks, [])
  t.equal(a.unacked, 2)
  t.equal(a.connections, 0)
})

t.test('close() stops all events', async (t) => {
  const srv = await server(t, { echo: true })
  const { a, rec } = applier(t, srv.port)
  const log = new InputLog()
  a.apply(log.append('OPEN', 1))
  a.apply(log.append('DATA', 1, Buffer.from('ping')))
  a.apply(log.append('OPEN', 2))
  await until(() => rec.out(1) === 'ping' && a.unacked === 0, 'echo and acks')
  t.same(rec.of(1), [1, 2])
  t.same(rec.of(2), [3])
  const before = rec.events
  a.close()
  t.equal(a.connections, 0)
  // The server writes and closes after the applier let go; nothing may come out of it.
  for (const p of srv.peers) {
    p.socket.write('late')
    p.socket.end()
  }
  a.apply(log.append('DATA', 2, Buffer.from('after close')))
  await until(() => srv.peers.every((p) => p.closed), 'the server to see every connection closed')
  // One more turn of the loop for any queued callbacks.
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(rec.events, before, 'no event after close()')
  t.equal(srv.peer(1).received, 0, 'nothing written after close()')
  a.close()
  t.pass('close() twice is harmless')
})

t.test('close() while connecting: no failed event', async (t) => {
  const port = await deadPort()
  const { a, rec } = applier(t, port)
  // A second applier to the same dead port tells when the refusal has surely come back.
  const { a: witness, rec: wrec } = applier(t, port)
  const log = new InputLog()
  const open = log.append('OPEN', 1)
  a.apply(open)
  witness.apply(open)
  a.close()
  await until(() => wrec.failed.length > 0, 'the witness to fail')
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(rec.events, 0, 'the closed applier said nothing')
  t.equal(witness.connections, 0)
})

t.test('close() while connecting leaves no connect timer behind', async (t) => {
  const port = await deadPort()
  const count = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length
  const base = count()
  const a = new Applier({
    address: { host: '127.0.0.1', port }, connectTimeout: 60000, linger: 5000,
  })
  a.apply(new InputLog().append('OPEN', 1))
  t.equal(count(), base + 1, 'a connect timer runs while connecting')
  a.close()
  t.equal(count(), base, 'close() cleared it')
})

t.test('pause and resume a connection\'s output', async (t) => {
  const srv = await server(t, { echo: true })
  const { a, rec } = applier(t, srv.port)
  const log = new InputLog()
  a.apply(log.append('OPEN', 1))
  a.apply(log.append('DATA', 1, Buffer.from('one')))
  await until(() => rec.out(1) === 'one', 'first echo')
  a.pause(1)
  a.apply(log.append('DATA', 1, Buffer.from('two')))
  await until(() => srv.peers[0]?.received === 6, 'the server got it')
  // The echo is in our socket's buffer, not emitted, while paused. Wait for the server to
  // have flushed it, then for one loop turn.
  await until(() => srv.peers[0]?.socket.writableLength === 0, 'the server flushed')
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(rec.out(1), 'one', 'no output while paused')
  a.resume(1)
  await until(() => rec.out(1) === 'onetwo', 'output after resume')
  a.pause(42)
  a.resume(42)
  t.pass('pause/resume of an unknown conn is a no-op')
})

t.test('a reset by the server: output_end with the error, then closed', async (t) => {
  const srv = await server(t)
  const { a, rec } = applier(t, srv.port)
  const log = new InputLog()
  a.apply(log.append('OPEN', 1))
  await until(() => srv.peers.length === 1, 'accepted')
  srv.peer(0).socket.resetAndDestroy()
  await until(() => rec.closed.includes(1), 'closed')
  t.equal(rec.ends.length, 1)
  t.equal(rec.ends[0]?.[0], 1)
  t.equal((rec.ends[0]?.[1] as NodeJS.ErrnoException | null | undefined)?.code, 'ECONNRESET')
  a.apply(log.append('DATA', 1, Buffer.from('to nowhere')))
  t.equal(a.unacked, 0, 'entries for the dead conn are acked')
  allAcked(t, a, rec, log)
})

// Writes queued on a socket that the server resets must still be confirmed (the app socket's
// 'close' handler says so: "do not hold the log"). A big first write keeps the socket busy, so
// the second is buffered in the stream when the reset comes.
t.test('writes pending when the server resets are still acked', async (t) => {
  const srv = await server(t, { pauseOnConnect: true })
  const { a, rec } = applier(t, srv.port)
  const log = new InputLog()
  a.apply(log.append('OPEN', 1))
  await until(() => srv.peers.length === 1 && rec.has(1), 'connected')
  a.apply(log.append('DATA', 1, Buffer.alloc(32 * 1024 * 1024)))
  a.apply(log.append('DATA', 1, Buffer.from('queued')))
  t.same(rec.acks, [1], 'the writes are still pending')
  srv.peer(0).socket.resetAndDestroy()
  await until(() => rec.closed.includes(1), 'closed')
  a.apply(log.append('EOF', 1))
  await until(() => a.unacked === 0, 'every entry acked', 3000)
  allAcked(t, a, rec, log)
})

// settle(): an entry that has nothing to write (CLOSE or DATA after EOF: the socket is no
// longer writable) settles at once, but must not be acked ahead of the connection's earlier
// entries still being written. The server does not read at first, so the big DATA and the
// EOF (FIN after it) stay pending while the later entries settle.
t.test('acks of one connection come in its seq order ' +
  'when a later entry settles early', async (t) => {
  const srv = await server(t, { pauseOnConnect: true, endOnEnd: true })
  const { a, rec } = applier(t, srv.port, { linger: 60000 })
  const log = new InputLog()
  const open = log.append('OPEN', 1)
  a.apply(open)
  await until(() => srv.peers.length === 1 && rec.has(open.seq), 'connected')
  const big = Buffer.alloc(32 * 1024 * 1024, 0x61)
  const entries = [
    log.append('DATA', 1, big),
    log.append('EOF', 1),
    log.append('DATA', 1, Buffer.from('after EOF')),
    log.append('CLOSE', 1),
  ]
  for (const e of entries) a.apply(e)
  t.same(rec.acks, [open.seq], 'the entries after the big DATA settled early but are not acked yet')
  t.equal(a.unacked, 4)
  await new Promise((resolve) => setImmediate(resolve))
  t.same(rec.acks, [open.seq], 'still not acked a loop turn later')
  // Now let the server read: everything drains and is acked in order.
  srv.peer(0).socket.resume()
  await until(() => a.unacked === 0, 'every entry acked', 15000)
  t.same(rec.of(1), [open, ...entries].map((e) => e.seq), 'acked in the connection\'s seq order')
  allAcked(t, a, rec, log)
  await until(() => (srv.peers[0]?.endAt ?? -1) >= 0, 'the FIN at the server')
  t.equal(srv.peer(0).endAt, big.length,
    'the server got every byte of the DATA before the FIN, none after')
  await until(() => rec.closed.includes(1), 'closed once the server closed')
})

// The log releases per connection: a server that stops reading one client must not pin the
// acks of every other client. Conn 1's server never reads while we write far more than the
// loopback socket buffers hold; conn 2, opened after, is still acked.
t.test('a connection whose server stops reading ' +
  'does not hold back other connections\' acks', async (t) => {
  let first: Peer | undefined
  const srv = await server(t, {
    onPeer: (p) => {
      if (!first) {
        first = p
        p.socket.pause()
      }
    },
  })
  const { a, rec } = applier(t, srv.port)
  const log = new InputLog()
  a.apply(log.append('OPEN', 1))
  await until(() => srv.peers.length === 1 && rec.has(1), 'conn 1 connected')
  const chunk = Buffer.alloc(1024 * 1024, 0x62)
  const stuck: Entry[] = []
  for (let i = 0; i < 32; i++) {
    const e = log.append('DATA', 1, chunk)
    stuck.push(e)
    a.apply(e)
  }
  const open2 = log.append('OPEN', 2)
  const data2 = log.append('DATA', 2, Buffer.from('hello'))
  a.apply(open2)
  a.apply(data2)
  await until(() => rec.has(data2.seq), 'conn 2\'s DATA acked', 10000)
  t.same(rec.of(2), [open2.seq, data2.seq], 'conn 2 acked in full')
  const last = stuck.at(-1)
  assert.ok(last, 'DATA for conn 1')
  t.notOk(rec.has(last.seq), 'conn 1 still has unacked DATA (its server is not reading)')
  t.ok(a.unacked > 0, `unacked ${a.unacked} > 0 while conn 1 is stuck`)
  t.same(rec.of(1), [...rec.of(1)].sort((x, y) => x - y), 'conn 1\'s acks so far are in its order')
  await until(() => srv.peers[1]?.text() === 'hello', 'conn 2\'s bytes at the server')
  // Once the server reads again, conn 1 catches up.
  first!.socket.resume()
  await until(() => a.unacked === 0, 'every entry acked', 15000)
  // An ack means the bytes reached our socket (the kernel), not the server: wait for them.
  await until(() => first!.received === 32 * chunk.length,
    'conn 1\'s server to get every byte', 15000)
  allAcked(t, a, rec, log)
})

// ---- the front out of its own descriptors -------------------------------------------------

// The Applier as built (dist/), in a child whose descriptor limit is low.
// a: the front's direct replica (it listens for conn_failed); b: an Applier nobody asked for
// conn_failed (the agent's): the old 'failed'; c: a replica named by host name, whose
// lookup is what runs out of descriptors.
const APPLIER_SCRIPT = `
import { Applier } from '${distUrl('replica/applier.js')}'
import { InputLog } from '${distUrl('front/log.js')}'
${FD_PRELUDE}
const port = Number(process.env.PORT)
const opts = (host) => ({ address: { host, port }, connectTimeout: 5000, linger: 5000 })
function record (a, handleConnFailed) {
  const r = { acks: [], failed: [], connFailed: [], ends: [], closed: [] }
  a.on('ack', (e) => r.acks.push([e.conn, e.seq]))
  a.on('failed', (err) => r.failed.push(err.code))
  a.on('output_end', (conn) => r.ends.push(conn))
  a.on('closed', (conn) => r.closed.push(conn))
  if (handleConnFailed) a.on('conn_failed', (conn, err) => r.connFailed.push([conn, err.code]))
  return r
}
const log = new InputLog()
const a = new Applier(opts('127.0.0.1'))
const ra = record(a, true)
a.apply(log.append('OPEN', 1))
a.apply(log.append('DATA', 1, Buffer.from('one\\n')))
await until(() => ra.acks.length === 2, 'conn 1 served')
// As the front would: what it logs while it hears of the failure, and its CLOSE after.
a.on('conn_failed', (conn) => {
  a.apply(log.append('EOF', conn))
  setImmediate(() => a.apply(log.append('CLOSE', conn)))
})
fill()
a.apply(log.append('OPEN', 2))
a.apply(log.append('DATA', 2, Buffer.from('lost\\n')))
a.apply(log.append('DATA', 1, Buffer.from('two\\n')))
await until(() => ra.failed.length > 0 || ra.acks.length === 7, 'every entry acked')
if (ra.failed.length > 0) { // the old behaviour: report it at once
  console.log(JSON.stringify({ a: ra, b: record(a, false), c: record(a, false), last: 7 }))
  process.exit(0)
}
const b = new Applier(opts('127.0.0.1'))
const rb = record(b, false)
b.apply(new InputLog().append('OPEN', 1))
const c = new Applier(opts('localhost'))
const rc = record(c, true)
c.apply(new InputLog().append('OPEN', 1))
await until(() => rb.failed.length > 0 && rc.connFailed.length + rc.failed.length > 0,
  'b and c to report')
free()
a.apply(log.append('OPEN', 3))
a.apply(log.append('DATA', 3, Buffer.from('three\\n')))
await until(() => ra.acks.length === log.lastSeq, 'conn 3 served')
const unacked = a.unacked
for (const x of [a, b, c]) x.close()
console.log(JSON.stringify({ a: ra, b: rb, c: rc, unacked, last: log.lastSeq }))
`

t.test('out of descriptors: conn_failed for that connection only; the replica serves ' +
  'the others, and new ones once descriptors are free', {
  skip: process.platform === 'win32' ? 'needs sh and ulimit' : false,
}, async (t) => {
  const srv = await server(t)
  const res = await runUnderLimit(t, 64, APPLIER_SCRIPT,
    { built: ['replica/applier', 'util/fds', 'front/log'], env: { PORT: String(srv.port) } })
  if (!res) return
  interface Rec {
    acks: Array<[number, number]>
    failed: string[]
    connFailed: Array<[number, string]>
    ends: number[]
    closed: number[]
  }
  const { a, b, c } = res as unknown as { a: Rec, b: Rec, c: Rec }
  t.same(a.failed, [], 'the replica is not failed')
  if (a.failed.length > 0) return
  t.same(a.connFailed, [[2, 'EMFILE']], 'conn_failed once, for the connection it could not open')
  t.same(a.acks.map(([, seq]) => seq).sort((x, y) => x - y),
    Array.from({ length: res.last as number }, (_, i) => i + 1), 'every entry acked once')
  t.same(a.acks.filter(([conn]) => conn === 2).map(([, seq]) => seq), [3, 4, 6, 7],
    'conn 2: OPEN, DATA, EOF, CLOSE acked unwritten, in its order')
  t.equal(res.unacked, 0)
  t.notOk(a.ends.includes(2) || a.closed.includes(2), 'no output_end or closed for conn 2')
  await until(() => srv.peers.length === 2 && srv.peer(1).text() === 'three\n',
    'conn 3 served after descriptors were freed')
  t.equal(srv.peer(0).text(), 'one\ntwo\n', 'conn 1 kept its order across the failed OPEN')
  t.ok(srv.peers.every((p) => !p.text().includes('lost')), 'conn 2\'s bytes went nowhere')
  t.same(b.failed, ['EMFILE'], 'an Applier with no conn_failed listener still fails (agent)')
  t.same(b.connFailed, [])
  t.same(c.failed, [], 'a host name whose lookup ran out of descriptors: not failed')
  t.equal(c.connFailed.length, 1, `conn_failed (${c.connFailed[0]?.[1]})`)
})
