// Serial delivery (turns) in the Applier, against a line server on 127.0.0.1 port 0 that
// answers each line after a delay of its own choosing. The server records the order in which
// it *read* lines across its connections: in serial mode it never reads a line while a reply
// is owed, whatever the timing, so the order it executes is the log's.

import t from 'tap'
import type { Test } from 'tap'
import net from 'node:net'
import { InputLog, type Entry } from '../../lib/front/log.js'
import { Applier } from '../../lib/replica/applier.js'
import { protocolFor } from '../../lib/protocol/index.js'
import type { ProtocolName } from '../../lib/protocol/types.js'
import { listenLocal } from '../helpers/ports.js'
import { until } from '../helpers/until.js'

interface LineServer {
  port: number
  /** Every line read, as `conn:line`, in the order read (conn: accept order from 1). */
  read: string[]
  /** Lines read while an earlier one (of any connection) was still unanswered. */
  overlaps: number
}

// Replies `ok <line>` after `delay(conn)` ms; connection 1 is the slow one.
async function lineServer (t: Test, delay: (conn: number) => number): Promise<LineServer> {
  const s: LineServer = { port: 0, read: [], overlaps: 0 }
  let owed = 0
  let accepted = 0
  const srv = net.createServer({ allowHalfOpen: true }, (socket) => {
    const conn = ++accepted
    let buf = ''
    socket.on('data', (d: Buffer) => {
      buf += d.toString()
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        if (owed > 0) s.overlaps++
        owed++
        s.read.push(`${conn}:${line}`)
        setTimeout(() => { owed--; socket.write(`ok ${line}\n`) }, delay(conn))
      }
    })
    socket.on('end', () => socket.end())
  })
  s.port = await listenLocal(srv)
  t.teardown(() => srv.close())
  return s
}

function applier (t: Test, server: LineServer, protocol: ProtocolName,
  holdBytes?: number): Applier {
  const address = { host: '127.0.0.1', port: server.port }
  const a = new Applier({
    address, connectTimeout: 1000, linger: 1000, protocol: protocolFor(protocol), holdBytes,
  })
  t.teardown(() => a.close())
  return a
}

/** Feeds `lines` round-robin over `conns` connections, one DATA entry per line. */
async function drive (t: Test, protocol: ProtocolName, server: LineServer, conns: number,
  lines: number): Promise<string[]> {
  const a = applier(t, server, protocol)
  const out = new Map<number, string>()
  a.on('output', (conn, data) => out.set(conn, (out.get(conn) ?? '') + data.toString()))
  const log = new InputLog()
  const apply = (type: Entry['type'], conn: number, data?: Buffer): void =>
    a.apply(log.append(type, conn, data))
  for (let c = 1; c <= conns; c++) apply('OPEN', c)
  const logged: string[] = []
  for (let i = 0; i < lines; i++) {
    const c = (i % conns) + 1
    apply('DATA', c, Buffer.from(`${i}\n`))
    logged.push(`${c}:${i}`)
  }
  const replies = (): number => [...out.values()].join('').split('\n').length - 1
  await until(() => replies() === lines, 'every line answered')
  return logged
}

t.test('line: the server reads every connection\'s lines in log order', async (t) => {
  const server = await lineServer(t, (conn) => conn === 1 ? 15 : 0)
  const logged = await drive(t, 'line', server, 4, 40)
  t.same(server.read, logged, 'read in log order')
  t.equal(server.overlaps, 0, 'never a line read while a reply was owed')
})

t.test('raw: the same load overlaps (the order is not controlled)', async (t) => {
  const server = await lineServer(t, (conn) => conn === 1 ? 15 : 0)
  await drive(t, 'raw', server, 4, 40)
  t.ok(server.overlaps > 0, `${server.overlaps} lines read while a reply was owed`)
})

t.test('line: a pipelined turn is one wait, not one per line', async (t) => {
  const server = await lineServer(t, () => 5)
  const a = applier(t, server, 'line')
  const turns: number[] = []
  a.on('turn', (ms) => turns.push(ms))
  let got = ''
  a.on('output', (_conn, data) => { got += data.toString() })
  const log = new InputLog()
  a.apply(log.append('OPEN', 1))
  a.apply(log.append('DATA', 1, Buffer.from('a\nb\nc\nd\npart')))
  a.apply(log.append('DATA', 1, Buffer.from('ial\n')))
  await until(() => got.split('\n').length === 6, 'five replies')
  t.equal(got, 'ok a\nok b\nok c\nok d\nok partial\n')
  t.equal(turns.length, 2, 'two turns: four lines and a partial one, then its end')
})

t.test('serial mode acknowledges entries as soon as they are held', async (t) => {
  const server = await lineServer(t, () => 200)
  const a = applier(t, server, 'line', 10)
  const acked: number[] = []
  a.on('ack', (e) => acked.push(e.seq))
  const log = new InputLog()
  a.apply(log.append('OPEN', 1))
  a.apply(log.append('DATA', 1, Buffer.from('one\n')))
  a.apply(log.append('DATA', 1, Buffer.from('two\n')))
  a.apply(log.append('DATA', 1, Buffer.from('three\n')))
  a.apply(log.append('DATA', 1, Buffer.from('4\n')))
  t.same(acked, [1, 2, 3], 'held within holdBytes: acknowledged at once, before any reply')
  t.equal(a.unacked, 2, 'the one beyond holdBytes waits for its write, and so does the next')
  t.equal(a.queued, 4, 'the four DATA entries wait for the connect and their turns')
  await until(() => acked.length === 5, 'the last ack')
  t.same(acked, [1, 2, 3, 4, 5], 'acks leave in log order')
  t.equal(a.queued, 0)
})

t.test('line: output that cannot be framed is reported once, and ordered raw', async (t) => {
  // A server that answers every line with two: the second answers no request.
  const srv = net.createServer((socket) => {
    socket.on('data', () => socket.write('one\ntwo\n'))
  })
  const port = await listenLocal(srv)
  t.teardown(() => srv.close())
  const a = applier(t, { port, read: [], overlaps: 0 }, 'line')
  const unframed: Array<[number, string]> = []
  a.on('unframed', (conn, reason) => unframed.push([conn, reason]))
  let got = ''
  a.on('output', (_conn, data) => { got += data.toString() })
  const log = new InputLog()
  a.apply(log.append('OPEN', 1))
  a.apply(log.append('DATA', 1, Buffer.from('x\n')))
  a.apply(log.append('DATA', 1, Buffer.from('y\n')))
  await until(() => got === 'one\ntwo\none\ntwo\n', 'both answers, all of them')
  t.equal(unframed.length, 1, 'reported once')
  t.equal(unframed[0]?.[0], 1)
})
