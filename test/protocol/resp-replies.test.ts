// The resp module's reply side: every RESP2 and RESP3 type framed from chunks cut at any
// byte, nested aggregates and attributes, pushes told from replies (pub/sub in RESP2 and
// RESP3, tracking, the MONITOR feed), replies that owe fewer than counted, and garbage.

import t from 'tap'
import type { Test } from 'tap'
import { protocolFor } from '../../lib/protocol/index.js'

const resp = protocolFor('resp')

function cmd (...args: string[]): string {
  return `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')
}

/** A mark as [end offset in the whole output, the request's name or null, compare]. */
type M = [end: number, request: string | null, compare: boolean]

/**
 * Frames `requests` (one chunk) on a new session, then its replies in the given chunks.
 * Returns every mark with its offset in the whole output, and the reader's error.
 */
function read (
  requests: string, chunks: Array<string | Buffer>
): { marks: M[], error: string | null } {
  const s = resp.session()
  const r = s.reader()
  s.request(Buffer.from(requests))
  const marks: M[] = []
  let base = 0
  for (const c of chunks) {
    const b = Buffer.from(typeof c === 'string' ? Buffer.from(c, 'latin1') : c)
    for (const m of r.push(b)) marks.push([base + m.end, m.request?.name ?? null, m.compare])
    base += b.length
  }
  return { marks, error: r.error }
}

/** Checks that `output` framed whole, split at every byte, and byte by byte gives `want`. */
function splits (t: Test, requests: string, output: string, want: M[]): void {
  const whole = read(requests, [output])
  t.same(whole, { marks: want, error: null }, 'in one chunk')
  const data = Buffer.from(output, 'latin1')
  let differ = 0
  for (let k = 0; k <= data.length; k++) {
    const got = read(requests, [data.subarray(0, k), data.subarray(k)])
    if (JSON.stringify(got) !== JSON.stringify(whole)) differ++
  }
  t.equal(differ, 0, `split at each of ${data.length + 1} positions`)
  t.same(read(requests, [...data].map((b) => Buffer.from([b]))), whole, 'byte by byte')
}

/** Offsets just after each piece, as marks for the given names. */
function ends (pieces: string[], names: Array<string | null>, compare: boolean[] = []): M[] {
  let at = 0
  return pieces.map((p, i) => {
    at += Buffer.byteLength(p, 'latin1')
    return [at, names[i] ?? null, compare[i] ?? true]
  })
}

t.test('every RESP2 and RESP3 type, nested, split anywhere', async (t) => {
  const replies = [
    '+OK\r\n',
    '-ERR wrong\r\n',
    ':-42\r\n',
    '$5\r\nhe\r\no\r\n', // a payload may hold \r\n
    '$0\r\n\r\n',
    '$-1\r\n',
    '*-1\r\n',
    '*0\r\n',
    '_\r\n',
    ',3.14\r\n',
    ',-inf\r\n',
    '#t\r\n',
    '(3492890328409238509324850943850943825024385\r\n',
    '!21\r\nSYNTAX invalid syntax\r\n',
    '=15\r\ntxt:Some string\r\n',
    // A map of arrays of sets, with nulls, booleans and an empty map inside.
    '%2\r\n$1\r\na\r\n*2\r\n~2\r\n:1\r\n:2\r\n~1\r\n_\r\n+b\r\n*3\r\n#f\r\n%0\r\n$-1\r\n',
    // An attribute before the reply: part of it, not a reply of its own.
    '|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:2039123\r\n:9543892\r\n',
    // Attributes inside an aggregate are not elements of it.
    '*2\r\n|1\r\n+ttl\r\n:3600\r\n$1\r\nx\r\n|1\r\n+a\r\n+b\r\n:1\r\n',
    '~3\r\n*1\r\n*1\r\n*1\r\n:0\r\n%1\r\n+k\r\n|0\r\n+v\r\n>0\r\n',
  ]
  const requests = replies.map((_, i) => cmd('GET', `k${i}`)).join('')
  const pushes = replies.map(() => 'get')
  splits(t, requests, replies.join(''), ends(replies, pushes))
})

t.test('a 100 MB bulk reply is skipped by count, not copied or rescanned', async (t) => {
  const s = resp.session()
  const r = s.reader()
  s.request(Buffer.from(cmd('GET', 'big') + cmd('PING')))
  const size = 100 * 1024 * 1024
  const piece = Buffer.alloc(64 * 1024, 0x0d) // all \r: no line scan may stop early on them
  const started = process.hrtime.bigint()
  t.same(r.push(Buffer.from(`$${size}\r\n`)), [])
  let marks = 0
  for (let sent = 0; sent < size; sent += piece.length) marks += r.push(piece).length
  const tail = r.push(Buffer.from('\r\n+PONG\r\n'))
  const ms = Number(process.hrtime.bigint() - started) / 1e6
  t.equal(marks, 0)
  t.same(tail.map((m) => [m.end, m.request?.name]), [[2, 'get'], [9, 'ping']])
  t.ok(ms < 5000, `framed in ${ms.toFixed(0)} ms`)
})

t.test('a pipeline of replies: each mark is its request', async (t) => {
  const requests = cmd('SET', 'a', '1') + cmd('INCR', 'a') + 'KEYS *\r\n' + cmd('GET', 'a')
  const out = ['+OK\r\n', ':2\r\n', '*1\r\n$1\r\na\r\n', '$1\r\n2\r\n']
  splits(t, requests, out.join(''),
    ends(out, ['set', 'incr', 'keys', 'get'], [true, true, false, true]))
})

t.test('RESP2 pub/sub: messages are pushes only while subscribed', async (t) => {
  const requests = cmd('LRANGE', 'l', '0', '-1') + cmd('SUBSCRIBE', 'a', 'b') + cmd('PING') +
    cmd('UNSUBSCRIBE') + cmd('LRANGE', 'l', '0', '-1')
  const out = [
    // Not subscribed yet: an array that looks like a message is LRANGE's reply.
    '*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n',
    '*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n',
    '*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n', // a message between confirmations
    '*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n',
    '*4\r\n$8\r\npmessage\r\n$2\r\np*\r\n$2\r\npx\r\n$1\r\nm\r\n',
    '*2\r\n$4\r\npong\r\n$0\r\n\r\n', // PING while subscribed: one reply, an array
    '*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n',
    '*3\r\n$8\r\nsmessage\r\n$1\r\ns\r\n$1\r\nm\r\n',
    '*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n',
    // Not subscribed any more: LRANGE's reply again.
    '*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n',
  ]
  splits(t, requests, out.join(''), ends(out, [
    'lrange', 'subscribe', null, 'subscribe', null, 'ping', 'unsubscribe', null, 'unsubscribe',
    'lrange',
  ], [true, true, true, true, true, true, false, true, false, true]))
})

t.test('RESP3: pushes are out of band, but (un)subscribe confirmations answer', async (t) => {
  const requests = cmd('HELLO', '3') + cmd('SUBSCRIBE', 'a') + cmd('LRANGE', 'l', '0', '-1') +
    cmd('SSUBSCRIBE', 's') + cmd('GET', 'k') + cmd('HELLO', '2') + cmd('LRANGE', 'l', '0', '-1')
  const out = [
    '%1\r\n$5\r\nproto\r\n:3\r\n',
    '>3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n',
    '>3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nm\r\n',
    '*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n', // RESP3 subscribed: LRANGE runs
    '>2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n',
    '>3\r\n$10\r\nssubscribe\r\n$1\r\ns\r\n:1\r\n',
    '>3\r\n$9\r\nsubscribe\r\n$1\r\nz\r\n:2\r\n', // not asked for by GET: pushed
    '$1\r\nv\r\n',
    '*2\r\n$5\r\nproto\r\n:2\r\n', // HELLO 2: back to RESP2, still subscribed
    '*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nm\r\n',
  ]
  splits(t, requests, out.join(''), ends(out, [
    'hello', 'subscribe', null, 'lrange', null, 'ssubscribe', null, 'get', 'hello', null,
  ], [false, true, true, true, true, true, true, true, false, true]))
})

t.test('an error where several confirmations were owed: the rest are marked with it', async (t) => {
  const requests = cmd('SUBSCRIBE', 'a', 'b', 'c') + cmd('UNSUBSCRIBE') + cmd('PING')
  const err = '-NOPERM this user has no permissions to access one of the channels\r\n'
  // The session counted three channels for UNSUBSCRIBE, the server has none: one reply.
  const none = '*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n'
  const at1 = err.length
  const at2 = at1 + none.length
  const want: M[] = [
    [at1, 'subscribe', true], [at1, 'subscribe', true], [at1, 'subscribe', true],
    [at2, 'unsubscribe', false], [at2, 'unsubscribe', false], [at2, 'unsubscribe', false],
    [at2 + 7, 'ping', true],
  ]
  splits(t, requests, err + none + '+PONG\r\n', want)
})

t.test('UNSUBSCRIBE with no argument ends with its kind: patterns stay', async (t) => {
  const requests = cmd('SUBSCRIBE', 'a') + cmd('PSUBSCRIBE', 'p*') + cmd('UNSUBSCRIBE') +
    cmd('PING')
  const out = [
    '*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n',
    '*3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:2\r\n',
    '*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n',
    '*4\r\n$8\r\npmessage\r\n$2\r\np*\r\n$2\r\npq\r\n$1\r\nm\r\n', // still subscribed
    '*2\r\n$4\r\npong\r\n$0\r\n\r\n',
  ]
  splits(t, requests, out.join(''), ends(out,
    ['subscribe', 'psubscribe', 'unsubscribe', null, 'ping'], [true, true, false, true, true]))
})

t.test('MONITOR: the feed is pushed and uncompared; replies still answer', async (t) => {
  const requests = cmd('MONITOR') + cmd('PING') + cmd('RESET') + cmd('GET', 'k')
  const out = [
    '+OK\r\n',
    '+1700000000.123456 [0 127.0.0.1:50000] "set" "k" "v"\r\n',
    '+1700000000.223456 [0 lua] "get" "k"\r\n',
    '+PONG\r\n',
    '+1700000000.323456 [0 unix:/tmp/redis.sock] "ping"\r\n',
    '+RESET\r\n',
    '+1700000000.423456 [0 x] not a feed any more\r\n', // GET's reply, whatever it says
  ]
  splits(t, requests, out.join(''), ends(out,
    ['monitor', null, null, 'ping', null, 'reset', 'get'], [true, false, false, true, false]))
})

t.test('RESET ends RESP2 subscribed mode as the reply shows it', async (t) => {
  const requests = cmd('SUBSCRIBE', 'a') + cmd('RESET') + cmd('LRANGE', 'l', '0', '-1')
  const out = [
    '*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n', '+RESET\r\n',
    '*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n',
  ]
  splits(t, requests, out.join(''), ends(out, ['subscribe', 'reset', 'lrange']))
})

t.test('output that cannot be framed sets the error, never throws', async (t) => {
  const bad: Array<[string, string]> = [
    ['$?\r\n;4\r\nHell\r\n;0\r\n', 'a streamed string (Redis 7 never sends one)'],
    ['*?\r\n:1\r\n.\r\n', 'a streamed aggregate'],
    ['@foo\r\n', 'an unknown type'],
    ['$3\r\nabcXY', 'a payload not followed by CRLF'],
    ['+OK\rX', 'a line not ended by CRLF'],
    ['*-2\r\n', 'a negative length'],
    ['%-1\r\n', 'a null map'],
    ['$\r\n', 'an empty length'],
    ['$1x\r\n', 'a length with a letter'],
    ['$9999999999999999\r\n', 'a length of 16 digits'],
  ]
  for (const [out, why] of bad) {
    const whole = read(cmd('PING') + cmd('GET', 'k'), ['+PONG\r\n' + out])
    t.same(whole.marks, [[7, 'ping', true]], `${why}: the reply before it stands`)
    t.ok(whole.error, `${why}: ${whole.error}`)
    const bytes = read(cmd('GET', 'k'), [...Buffer.from(out)].map((b) => Buffer.from([b])))
    t.ok(bytes.error, `${why}, byte by byte`)
  }
  t.match(read(cmd('PING'), ['+PONG\r\n+PONG\r\n']),
    { marks: [[7, 'ping', true]], error: /no request/ }, 'a reply no request asked for')
  const s = resp.session()
  const r = s.reader()
  s.request(Buffer.from('*x\r\n'))
  t.same(r.push(Buffer.from('-ERR Protocol error: invalid multibulk length\r\n')), [])
  t.match(r.error, /fell back: protocol error/, 'after a fallback, the reader says why')
  t.same(r.push(Buffer.from('+OK\r\n')), [], 'and frames nothing more')
})

t.test('refused requests: once answered, the session believes the replies', async (t) => {
  const s = resp.session()
  const r = s.reader()
  const noperm = Buffer.from('-NOPERM this user has no permissions\r\n')
  t.same(s.request(Buffer.from(cmd('SUBSCRIBE', 'a', 'b'))).map((q) => q.replies), [2])
  // Pipelined before the refusal is read: still taken for subscribed (RESP2: GET refused).
  t.same(s.request(Buffer.from(cmd('BLPOP', 'q', '0'))).map((q) => q.blocking), [false])
  t.same(r.push(noperm).length, 2, 'the error, and the second confirmation marked with it')
  t.same(r.push(Buffer.from('*-1\r\n')).map((m) => m.request?.name), ['blpop'])
  t.same(s.request(Buffer.from(cmd('BLPOP', 'q', '0'))).map((q) => q.blocking), [true],
    'not subscribed after all: BLPOP blocks')
  t.same(s.request(Buffer.from(cmd('UNSUBSCRIBE'))).map((q) => q.replies), [1])
  const popped = '*2\r\n$1\r\nq\r\n$1\r\nv\r\n'
  t.same(r.push(Buffer.from(popped + '*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n')).length, 2)
  t.same(s.request(Buffer.from(cmd('HELLO', '3') + cmd('SUBSCRIBE', 'c'))).length, 2)
  t.same(r.push(Buffer.from('-NOPROTO unsupported protocol version\r\n' +
    '*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n')).length, 2)
  t.same(s.request(Buffer.from(cmd('BLPOP', 'q', '0'))).map((q) => q.blocking), [false],
    'HELLO 3 was refused: RESP2 subscribed refuses BLPOP')
  t.same(r.push(Buffer.from("-ERR Can't execute 'blpop'\r\n")).length, 1)
  t.same(s.request(Buffer.from(cmd('RESET') + cmd('MONITOR'))).length, 2)
  t.same(r.push(Buffer.from('+RESET\r\n' + noperm.toString())).length, 2)
  t.same(s.request(Buffer.from(cmd('MONITOR'))).map((q) => q.replies), [1],
    'MONITOR was refused: a second one answers')
})
