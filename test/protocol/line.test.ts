// The line protocol (the demo server's) and raw: framing split at every byte, blank lines,
// QUIT, the line limit, and replies counted line by line. Also protocolFor and the resp
// control dialect (PING, and CLIENT LIST parsed for the barrier).

import t from 'tap'
import { MAX_LINE } from '../../lib/demo-server.js'
import { protocolFor } from '../../lib/protocol/index.js'
import type { Request, Session } from '../../lib/protocol/types.js'

const line = protocolFor('line')

type Row = [name: string, size: number, replies: number]

function frame (chunks: Array<string | Buffer>, s: Session = line.session()):
{ rows: Row[], fallback: string | null } {
  const rows: Row[] = []
  const row = (r: Request): Row => [r.name, r.size, r.replies]
  for (const c of chunks) rows.push(...s.request(Buffer.from(c)).map(row))
  return { rows, fallback: s.fallback }
}

t.test('protocolFor names the three modules', async (t) => {
  for (const name of ['raw', 'line', 'resp'] as const) t.equal(protocolFor(name).name, name)
  t.same([protocolFor('raw').serial, protocolFor('line').serial, protocolFor('resp').serial],
    [false, true, true])
  t.equal(protocolFor('line').control, null)
  t.equal(protocolFor('raw').control, null)
})

t.test('raw frames nothing', async (t) => {
  const s = protocolFor('raw').session()
  const r = s.reader()
  t.same(s.request(Buffer.from('SET a b\r\n*x\r\n')), [])
  t.same(r.push(Buffer.from('+OK\r\n')), [])
  t.equal(s.fallback, null)
  t.equal(r.error, null)
})

t.test('lines split at every byte frame the same requests', async (t) => {
  const input = 'SET k v\nINCR n\r\n\n \t \r\nget k\nPING\r\n' + 'x'.repeat(200) + '\n'
  const whole = frame([input])
  t.same(whole, {
    rows: [['set', 8, 1], ['incr', 8, 1], ['', 1, 0], ['', 5, 0], ['get', 6, 1],
      ['ping', 6, 1], ['', 201, 1]],
    fallback: null,
  }, 'blank lines owe no reply; a very long verb has no name')
  const data = Buffer.from(input)
  for (let k = 0; k <= data.length; k++) {
    const split = frame([data.subarray(0, k), data.subarray(k)])
    if (JSON.stringify(split) !== JSON.stringify(whole)) t.fail(`split at ${k}`, { split })
  }
  t.same(frame([...data].map((b) => Buffer.from([b]))), whole, 'byte by byte')
})

t.test('QUIT closes: what follows owes nothing', async (t) => {
  const s = line.session()
  t.same(frame(['INCR a\nQUIT \t\r\nINCR a\n'], s).rows,
    [['incr', 7, 1], ['quit', 8, 1], ['', 7, 0]])
  t.same(frame(['more\n'], s).rows, [['', 5, 0]])
  t.same(frame(['QUIT now\nINCR a\n']).rows, [['quit', 9, 1], ['incr', 7, 1]],
    'QUIT with an argument is an error, not a close')
})

t.test('a line over the demo server limit falls back', async (t) => {
  const x = (n: number): string => 'x'.repeat(n)
  t.same(frame([`${x(MAX_LINE)}\r\n`]).fallback, null, 'MAX_LINE bytes and \\r\\n: accepted')
  t.same(frame([`${x(MAX_LINE)}\n`]).fallback, null)
  t.ok(frame([`${x(MAX_LINE + 1)}\n`]).fallback, 'one byte more: refused')
  t.ok(frame([`${x(MAX_LINE)}\r\r\n`]).fallback, 'only one \\r is stripped')
  const s = line.session()
  const partial = frame(['PING\n', x(MAX_LINE + 2)], s)
  t.same(partial.rows, [['ping', 5, 1]], 'what came before stands')
  t.ok(partial.fallback, 'refused before its newline comes')
  t.same(s.request(Buffer.from('PING\n')), [], 'nothing framed after')
})

t.test('replies: one line each, split anywhere', async (t) => {
  const output = 'OK\n1\n(nil)\nPONG\n'
  const run = (chunks: Buffer[]): unknown => {
    const s = line.session()
    const r = s.reader()
    s.request(Buffer.from('SET k v\nINCR n\n\nGET x\nPING\n'))
    const marks: unknown[] = []
    let base = 0
    for (const c of chunks) {
      for (const m of r.push(c)) marks.push([base + m.end, m.request?.name, m.compare])
      base += c.length
    }
    return { marks, error: r.error }
  }
  const data = Buffer.from(output)
  const whole = run([data])
  t.same(whole, {
    marks: [[3, 'set', true], [5, 'incr', true], [11, 'get', true], [16, 'ping', true]],
    error: null,
  })
  for (let k = 0; k <= data.length; k++) {
    t.same(run([data.subarray(0, k), data.subarray(k)]), whole, `split at ${k}`)
  }
  const s = line.session()
  const r = s.reader()
  s.request(Buffer.from('PING\n'))
  t.same(r.push(Buffer.from('PONG\nextra\n')).length, 1)
  t.match(r.error, /no request/, 'a line no request asked for')
  const s2 = line.session()
  const r2 = s2.reader()
  s2.request(Buffer.from('x'.repeat(MAX_LINE + 2)))
  r2.push(Buffer.from('ERR line too long\n'))
  t.match(r2.error, /fell back/, 'after a fallback the reader says why')
})

t.test('resp control dialect', async (t) => {
  const control = protocolFor('resp').control
  if (control === null) throw new Error('resp has a control dialect')
  t.equal(control.probe.toString(), '*1\r\n$4\r\nPING\r\n')
  t.ok(control.healthy(Buffer.from('+PONG\r\n')))
  t.notOk(control.healthy(Buffer.from('-LOADING Redis is loading\r\n')))
  t.notOk(control.healthy(Buffer.from('+PONG\r\n+PONG\r\n')))
  t.ok(control.healthy(Buffer.from('-NOAUTH Authentication required.\r\n')),
    'a server that wants AUTH is serving')
  t.equal(control.refused(Buffer.from('-NOPERM no\r\n')), 'NOPERM no')
  t.equal(control.refused(Buffer.from('$3\r\nabc\r\n')), null)
  t.equal(control.clients.toString(),
    '*4\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n$4\r\nTYPE\r\n$6\r\nnormal\r\n')
  const list = [
    'id=3 addr=127.0.0.1:40010 laddr=127.0.0.1:6379 fd=8 name= age=9 idle=0 flags=N db=0 ' +
      'sub=0 psub=0 ssub=0 multi=-1 qbuf=26 qbuf-free=20448 argv-mem=10 multi-mem=0 rbs=1024 ' +
      'rbp=0 obl=0 oll=0 omem=0 tot-mem=22298 events=r cmd=client|list user=default redir=-1 ' +
      'resp=2',
    'id=4 addr=127.0.0.1:40011 laddr=127.0.0.1:6379 fd=9 name=w age=5 idle=5 flags=b db=0 ' +
      'sub=0 psub=0 ssub=0 multi=-1 qbuf=14 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 ' +
      'obl=0 oll=0 omem=0 tot-mem=1 events=r cmd=blpop user=default redir=-1 resp=3',
    '',
  ].join('\n')
  const bulk = Buffer.from(`$${list.length}\r\n${list}\r\n`)
  t.same(control.client(bulk, '127.0.0.1:40011'), { blocked: true, unexecuted: 14 })
  t.same(control.client(bulk, '127.0.0.1:40010'), { blocked: false, unexecuted: 26 })
  t.equal(control.client(bulk, '127.0.0.1:4001'), null, 'an address is matched whole')
  t.equal(control.client(bulk, '127.0.0.1:6379'), null, 'laddr is not addr')
  const verbatim = Buffer.from(`=${list.length + 4}\r\ntxt:${list}\r\n`)
  t.same(control.client(verbatim, '127.0.0.1:40011'), { blocked: true, unexecuted: 14 },
    "RESP3's verbatim string")
  t.same(control.client(Buffer.from(list), '127.0.0.1:40010'), { blocked: false, unexecuted: 26 },
    'the text alone')
  t.equal(control.client(Buffer.from('-ERR no\r\n'), '127.0.0.1:40010'), null)
  // The control connection frames its own requests and replies like any connection.
  const s = protocolFor('resp').session()
  const r = s.reader()
  t.same(s.request(control.probe).map((q) => q.name), ['ping'])
  t.same(s.request(control.clients).map((q) => [q.name, q.compare]), [['client|list', false]])
  t.same(r.push(Buffer.concat([Buffer.from('+PONG\r\n'), bulk])).map((m) => m.end),
    [7, 7 + bulk.length])
})
