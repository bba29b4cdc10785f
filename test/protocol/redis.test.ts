// The resp module against a real redis-server: realistic pipelines (MULTI/EXEC, pub/sub in
// RESP2 and RESP3 with messages from another connection, HELLO 3, every RESP3 type through
// DEBUG PROTOCOL, a blocked BLPOP, MONITOR). Every request must get exactly its count of
// marks, every mark must end where an independent parse says a reply ends, and pushed
// messages must be marked as such.

import t from 'tap'
import type { Test } from 'tap'
import net from 'node:net'
import { spawn } from 'node:child_process'
import { protocolFor } from '../../lib/protocol/index.js'
import type { ReplyReader, Request, Session } from '../../lib/protocol/types.js'
import { haveRedis } from '../helpers/cluster.js'
import { freePort } from '../helpers/ports.js'
import { until } from '../helpers/until.js'

const skip = haveRedis() ? false : 'redis-server not installed'

function cmd (...args: string[]): string {
  return `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')
}

/** redis-server with DEBUG enabled (for DEBUG PROTOCOL's RESP3 types). */
async function redis (t: Test): Promise<number> {
  const port = await freePort()
  const proc = spawn('redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--protected-mode', 'no', '--enable-debug-command', 'yes',
  ], { stdio: 'ignore' })
  t.teardown(() => { proc.kill('SIGKILL') })
  await until(() => new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  }), 'redis-server listening')
  return port
}

interface Mark { end: number, request: Request | null, compare: boolean }

/** A connection whose input is framed by a session and whose output by its reader. */
class Conn {
  readonly session: Session = protocolFor('resp').session()
  readonly reader: ReplyReader = this.session.reader()
  readonly requests: Request[] = []
  readonly marks: Mark[] = []
  private chunks: Buffer[] = []
  private received = 0
  closed = false

  private constructor (readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      for (const m of this.reader.push(d)) this.marks.push({ ...m, end: this.received + m.end })
      this.received += d.length
      this.chunks.push(d)
    })
    socket.on('close', () => { this.closed = true })
  }

  static async open (port: number): Promise<Conn> {
    const socket = net.connect(port, '127.0.0.1')
    await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject))
    return new Conn(socket)
  }

  get output (): Buffer {
    return Buffer.concat(this.chunks)
  }

  /** Sends the requests, cut into a few chunks at odd places, as a client might. */
  send (...requests: string[]): void {
    const data = Buffer.from(requests.join(''))
    for (let i = 0; i < data.length; i += 37) {
      const chunk = data.subarray(i, i + 37)
      this.requests.push(...this.session.request(chunk))
      this.socket.write(chunk)
    }
  }

  answered (req: Request): number {
    return this.marks.filter((m) => m.request === req).length
  }

  /** Waits until every request so far has all its replies. */
  async settle (what: string): Promise<void> {
    await until(() => this.requests.every((r) => this.answered(r) >= r.replies) ||
      this.reader.error !== null, what)
  }

  pushes (): string[] {
    return this.marks.filter((m) => m.request === null).map((m) => this.text(m))
  }

  /** The bytes of a mark, from the end of the previous one. */
  text (m: Mark): string {
    const i = this.marks.indexOf(m)
    const from = i > 0 ? (this.marks[i - 1] as Mark).end : 0
    return this.output.toString('latin1', from, m.end)
  }

  /** The reply texts of each request with this name. */
  replies (name: string): string[] {
    return this.marks.filter((m) => m.request?.name === name).map((m) => this.text(m))
  }
}

// An independent, whole-buffer RESP parser: where each top-level value ends (an attribute
// and the value after it count as one).
function valueEnds (buf: Buffer): number[] {
  const ends: number[] = []
  let pos = 0
  while (pos < buf.length) {
    pos = skipValue(buf, pos)
    ends.push(pos)
  }
  return ends
}

function skipValue (buf: Buffer, pos: number): number {
  const type = String.fromCharCode(buf[pos] as number)
  const eol = buf.indexOf('\r\n', pos)
  const n = Number(buf.toString('latin1', pos + 1, eol))
  let next = eol + 2
  if ('$=!'.includes(type)) return n < 0 ? next : next + n + 2
  if (!'*~>%|'.includes(type) || n < 0) return next
  const count = '%|'.includes(type) ? 2 * n : n
  for (let i = 0; i < count; i++) next = skipValue(buf, next)
  return type === '|' ? skipValue(buf, next) : next
}

/** The checks every connection must pass once settled. */
function check (t: Test, c: Conn, name: string): void {
  t.equal(c.reader.error, null, `${name}: output framed`)
  t.equal(c.session.fallback, null, `${name}: input framed`)
  const counts = c.requests.map((r) => [r.name, c.answered(r)])
  t.same(counts, c.requests.map((r) => [r.name, r.replies]), `${name}: each request's count`)
  const markEnds = [...new Set(c.marks.map((m) => m.end))]
  t.same(markEnds, valueEnds(c.output), `${name}: marks end where replies end`)
}

t.test('a realistic RESP2 and RESP3 session against redis-server', { skip }, async (t) => {
  const port = await redis(t)
  const sub = await Conn.open(port)
  const pub = await Conn.open(port)
  sub.send(
    cmd('SET', 'k', '1'), cmd('INCR', 'k'), 'INCR k\r\n', '\r\n', cmd('GET', 'k'),
    cmd('MULTI'), cmd('INCR', 'k'), cmd('KEYS', '*'), cmd('BLPOP', 'none', '1'), cmd('EXEC'),
    cmd('MULTI'), cmd('NOSUCHCOMMAND'), cmd('EXEC'),
    cmd('DEL', 'l'), cmd('RPUSH', 'l', 'message', 'c1', 'x'), cmd('LRANGE', 'l', '0', '-1'),
    cmd('SUBSCRIBE', 'c1', 'c2', 'c1'), cmd('PSUBSCRIBE', 'p*'), cmd('PING'), cmd('GET', 'k')
  )
  await sub.settle('RESP2 subscribed')
  pub.send(cmd('PUBLISH', 'c1', 'one'), cmd('PUBLISH', 'px', 'two'), cmd('PUBLISH', 'c2', 'x'))
  await pub.settle('published')
  await until(() => sub.pushes().length === 3, 'three messages')
  sub.send(cmd('UNSUBSCRIBE'), cmd('PING'), cmd('PUNSUBSCRIBE'), cmd('LRANGE', 'l', '0', '-1'),
    cmd('HELLO', '3'), cmd('CLIENT', 'ID'), cmd('SUBSCRIBE', 'c3'), cmd('SSUBSCRIBE', 's1'),
    cmd('LRANGE', 'l', '0', '-1'), cmd('CLIENT', 'TRACKING', 'on'), cmd('GET', 'tracked'))
  await sub.settle('RESP3 subscribed')
  pub.send(cmd('PUBLISH', 'c3', 'three'), cmd('SPUBLISH', 's1', 'four'),
    cmd('SET', 'tracked', 'v'))
  await pub.settle('published in RESP3')
  await until(() => sub.pushes().length === 6, 'three more pushes')
  sub.send(...['attrib', 'bignum', 'map', 'set', 'verbatim', 'null', 'double', 'true', 'push']
    .map((type) => cmd('DEBUG', 'PROTOCOL', type)),
  cmd('UNSUBSCRIBE'), cmd('SUNSUBSCRIBE'), cmd('RESET'), cmd('LRANGE', 'l', '0', '-1'),
  cmd('QUIT'))
  await sub.settle('RESP3 types, RESET and QUIT')
  await until(() => sub.closed, 'QUIT closes')
  check(t, sub, 'subscriber')
  check(t, pub, 'publisher')
  // A value's words: its type lines and contents, without bulk lengths.
  const words = (text: string): string =>
    text.split('\r\n').filter((w) => w !== '' && !w.startsWith('$')).join(' ')
  t.same(sub.pushes().map(words), [
    '*3 message c1 one', '*4 pmessage p* px two', '*3 message c2 x',
    '>3 message c3 three', '>3 smessage s1 four', '>2 invalidate *1 tracked',
    '>2 server-cpu-usage :42', // DEBUG PROTOCOL push: a push, then the real reply
  ], 'every message, and only messages, pushed')
  t.same(sub.replies('lrange').map((r) => r.slice(0, 4)), ['*3\r\n', '*3\r\n', '*3\r\n', '*3\r\n'],
    'LRANGE answers with an array that reads like a message, whether subscribed or not')
  t.same(sub.replies('subscribe').length, 4)
  t.match(sub.replies('unsubscribe')[0], /^\*3\r\n\$11\r\nunsubscribe/)
  t.match(sub.replies('unsubscribe')[2], /^>3\r\n\$11\r\nunsubscribe/, 'in RESP3, a push')
  t.same(sub.requests.filter((r) => !r.compare).map((r) => r.name), [
    'exec', 'unsubscribe', 'hello', 'client|id', ...Array(9).fill('debug'), 'unsubscribe',
    'sunsubscribe',
  ], 'KEYS inside MULTI: +QUEUED is compared, EXEC is not')
})

t.test('a blocked BLPOP is answered once another connection pushes', { skip }, async (t) => {
  const port = await redis(t)
  const waiter = await Conn.open(port)
  const pusher = await Conn.open(port)
  waiter.send(cmd('PING'), cmd('BLPOP', 'q', '0'), cmd('INCR', 'after'))
  t.same(waiter.requests.map((r) => [r.name, r.blocking]),
    [['ping', false], ['blpop', true], ['incr', false]])
  await until(() => waiter.marks.length === 1, 'PING answered')
  pusher.send(cmd('LPUSH', 'q', 'item'))
  await waiter.settle('BLPOP answered')
  await pusher.settle('LPUSH answered')
  check(t, waiter, 'waiter')
  t.same(waiter.replies('blpop'), ['*2\r\n$1\r\nq\r\n$4\r\nitem\r\n'])
})

t.test('MONITOR: the feed is pushed, uncompared; replies still line up', { skip }, async (t) => {
  const port = await redis(t)
  const mon = await Conn.open(port)
  const other = await Conn.open(port)
  mon.send(cmd('MONITOR'))
  await mon.settle('MONITOR')
  other.send(cmd('SET', 'a', '1'), cmd('GET', 'a'))
  await other.settle('commands to see')
  await until(() => mon.marks.length === 3, 'two feed lines')
  mon.send(cmd('PING'), cmd('MONITOR'), cmd('GET', 'a'), cmd('RESET'), cmd('GET', 'a'))
  await mon.settle('PING, RESET, GET')
  check(t, mon, 'monitor')
  const feed = mon.marks.filter((m) => m.request === null)
  t.ok(feed.length >= 2, 'feed lines are pushes')
  t.ok(feed.every((m) => !m.compare), 'not compared')
  t.same(mon.replies('ping'), ['+PONG\r\n'])
  t.same(mon.replies('reset'), ['+RESET\r\n'])
  t.same(mon.replies('get'), ["-ERR Replica can't interact with the keyspace\r\n", '$1\r\n1\r\n'])
})
