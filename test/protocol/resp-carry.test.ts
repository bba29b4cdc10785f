// What a Redis connection carries to a fresh server connection at a re-seed's cut
// (RespSession.carry): the requests that recreate its session (AUTH, HELLO 3, SELECT,
// CLIENT SETNAME...), only the last accepted of each kind, each one request with one reply;
// or why it cannot go on there. Pure unit tests on the session and its readers, and one check
// against a real redis-server that the replay puts a fresh connection in the same session.

import t from 'tap'
import type { Test } from 'tap'
import { protocolFor } from '../../lib/protocol/index.js'
import { RespSession } from '../../lib/protocol/resp-session.js'
import type { Carry, ReplyReader, Session } from '../../lib/protocol/types.js'
import { haveRedis, redisServer } from '../helpers/cluster.js'
import { RespConn, RespError, type RespValue } from '../helpers/resp.js'
import { until } from '../helpers/until.js'

const resp = protocolFor('resp')

function cmd (...args: string[]): string {
  return `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a, 'latin1')}\r\n${a}\r\n`)
    .join('')
}

const OK = '+OK\r\n'
const ERR = '-ERR refused\r\n'
const HELLO3 = '%1\r\n$5\r\nproto\r\n:3\r\n'
const HELLO2 = '*2\r\n$5\r\nproto\r\n:2\r\n'

/** A session with one reader: `requests` framed, then `replies` read, then its carry. */
function carryOf (requests: string, replies: string): Carry {
  const s = resp.session()
  const r = s.reader()
  s.request(Buffer.from(requests, 'latin1'))
  r.push(Buffer.from(replies, 'latin1'))
  return s.carry?.() ?? { refused: 'none' }
}

/** The replay of a carry (the test fails if it was refused). */
function replayOf (t: Test, c: Carry): string {
  if ('refused' in c) {
    t.fail(`refused: ${c.refused}`)
    return ''
  }
  return c.replay.toString('latin1')
}

/** How a fresh session frames a replay: replies owed by each request, and bytes framed. */
function framing (replay: Buffer): { replies: number[], size: number } {
  const reqs = resp.session().request(replay)
  return { replies: reqs.map((q) => q.replies), size: reqs.reduce((n, q) => n + q.size, 0) }
}

t.test('a default connection carries nothing', async (t) => {
  t.same(resp.session().carry?.(), { replay: Buffer.alloc(0) }, 'a new one')
  const c = carryOf(cmd('SET', 'k', 'v') + cmd('GET', 'k') + cmd('PING'),
    `${OK}$1\r\nv\r\n+PONG\r\n`)
  t.same(c, { replay: Buffer.alloc(0) }, 'after data commands')
  // Not pristine any more, but nothing differs from a new connection.
  t.equal(replayOf(t, carryOf(cmd('SELECT', '0') + cmd('INFO'), `${OK}$0\r\n\r\n`)), '',
    'SELECT 0')
  t.equal(replayOf(t, carryOf(cmd('CLIENT', 'SETNAME', 'a') + cmd('CLIENT', 'SETNAME', ''),
    OK + OK)), '', 'a name set, then cleared')
})

t.test('SELECT: the last accepted one, as one request with one reply', async (t) => {
  const c = carryOf(cmd('SELECT', '3') + cmd('SET', 'k', 'v') + cmd('GET', 'k'),
    `${OK}${OK}$1\r\nv\r\n`)
  const replay = replayOf(t, c)
  t.equal(replay, cmd('SELECT', '3'))
  const b = Buffer.from(replay, 'latin1')
  t.same(framing(b), { replies: [1], size: b.length }, 'a fresh session frames one request')
  t.equal(replayOf(t, carryOf(cmd('SELECT', '1') + cmd('SELECT', '2'), OK + OK)),
    cmd('SELECT', '2'), 'only the last')
  // Collapsing keeps the last *accepted* one: SELECT 99 was refused and left db 3.
  t.equal(replayOf(t, carryOf(cmd('SELECT', '3') + cmd('SELECT', '99'), OK + ERR)),
    cmd('SELECT', '3'), 'a refused SELECT changes nothing')
  t.equal(replayOf(t, carryOf('SELECT 5\r\n', OK)), cmd('SELECT', '5'),
    'an inline request is replayed as multibulk')
  // A long pipeline keeps one.
  const n = 20000
  const many = Array.from({ length: n }, (_, i) => cmd('SELECT', String(i % 16))).join('')
  t.equal(replayOf(t, carryOf(many, OK.repeat(n))), cmd('SELECT', String((n - 1) % 16)),
    `${n} SELECTs keep one`)
})

t.test('AUTH, HELLO, CLIENT SETNAME: recreated in an order a fresh connection takes', async (t) => {
  const reqs = cmd('CLIENT', 'SETNAME', 'app') + cmd('SELECT', '2') + cmd('HELLO', '3') +
    cmd('AUTH', 'pw')
  const want = cmd('AUTH', 'pw') + cmd('HELLO', '3') + cmd('SELECT', '2') +
    cmd('CLIENT', 'SETNAME', 'app')
  const replay = replayOf(t, carryOf(reqs, OK + OK + HELLO3 + OK))
  t.equal(replay, want, 'AUTH first, then HELLO, SELECT, the name')
  const b = Buffer.from(replay, 'latin1')
  t.same(framing(b), { replies: [1, 1, 1, 1], size: b.length }, 'one reply each')

  t.equal(replayOf(t, carryOf(cmd('HELLO', '3', 'AUTH', 'u', 'pw', 'SETNAME', 'n'), HELLO3)),
    cmd('AUTH', 'u', 'pw') + cmd('HELLO', '3') + cmd('CLIENT', 'SETNAME', 'n'),
    'HELLO with its options, rebuilt')
  t.equal(replayOf(t, carryOf(cmd('HELLO', '3', 'auth', 'u', 'bad'), '-WRONGPASS no\r\n')), '',
    'a refused HELLO changes nothing')
  t.equal(replayOf(t, carryOf(cmd('HELLO', '3') + cmd('HELLO', '2'), HELLO3 + HELLO2)), '',
    'HELLO 3 then HELLO 2: RESP2, the default')
  t.equal(replayOf(t, carryOf(cmd('HELLO', '3', 'SETNAME'), ERR)), '', 'a syntax error')
  t.equal(replayOf(t, carryOf(cmd('HELLO'), HELLO2)), '', 'HELLO alone changes nothing')
  t.equal(replayOf(t, carryOf(cmd('AUTH', 'u', 'pw') + cmd('AUTH', 'u', 'bad'),
    OK + '-WRONGPASS invalid\r\n')), cmd('AUTH', 'u', 'pw'), 'a failed AUTH keeps the login')
  t.equal(replayOf(t, carryOf(cmd('AUTH', 'a') + cmd('HELLO', '2', 'AUTH', 'u', 'b'),
    OK + HELLO2)), cmd('AUTH', 'u', 'b'), 'the last login, by HELLO')
  t.equal(replayOf(t, carryOf(cmd('CLIENT', 'NO-EVICT', 'on') + cmd('READONLY'), OK + OK)),
    cmd('CLIENT', 'NO-EVICT', 'on') + cmd('READONLY'), 'NO-EVICT and READONLY')
  t.equal(replayOf(t, carryOf(cmd('READONLY') + cmd('READWRITE'), OK + OK)), '', 'READWRITE')
  t.equal(replayOf(t, carryOf(cmd('READONLY'), '-ERR This instance has cluster support ' +
    'disabled\r\n')), '', 'READONLY refused (no cluster)')
  // RESET: a new connection's session, but NO-EVICT (Redis 7.0 keeps it).
  const all = cmd('AUTH', 'pw') + cmd('HELLO', '3') + cmd('SELECT', '4') +
    cmd('CLIENT', 'SETNAME', 'x') + cmd('CLIENT', 'NO-EVICT', 'ON') + cmd('WATCH', 'k') +
    cmd('CLIENT', 'TRACKING', 'on') + cmd('RESET')
  t.equal(replayOf(t, carryOf(all, OK + HELLO3 + OK + OK + OK + OK + OK + '+RESET\r\n')),
    cmd('CLIENT', 'NO-EVICT', 'on'), 'RESET')
})

/** The reason a carry was refused ('' when it was not). */
function refusal (c: Carry): string {
  return 'refused' in c ? c.refused : ''
}

t.test('connections that cannot go on on a fresh server connection', async (t) => {
  const cases: Array<[string, string, string, string]> = [
    ['closed', cmd('SELECT', '1') + cmd('QUIT'), OK + OK, 'after QUIT'],
    ['fallback', cmd('CLIENT', 'REPLY', 'OFF'), '', 'CLIENT REPLY OFF'],
    ['fallback', cmd('CLIENT', 'REPLY', 'SKIP') + cmd('GET', 'k'), '', 'CLIENT REPLY SKIP'],
    ['fallback', '*1\r\n$x\r\n', '', 'a protocol error (a pristine connection)'],
    ['partial', cmd('GET', 'k').slice(0, 9), '', 'a request partly received'],
    ['partial', cmd('SELECT', '1') + 'SEL', OK, 'an inline request partly received'],
    ['blocked', cmd('BLPOP', 'q', '0'), '', 'a blocking command not answered'],
    ['blocked', cmd('SELECT', '1') + cmd('GET', 'k'), OK, 'a reply not read yet'],
    ['unframed', cmd('SELECT', '1'), '?garbage\r\n', 'replies that cannot be framed'],
    ['multi', cmd('MULTI') + cmd('SET', 'k', 'v'), `${OK}+QUEUED\r\n`, 'inside MULTI'],
    ['subscribed', cmd('SUBSCRIBE', 'c'), '*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n',
      'subscribed'],
    ['subscribed', cmd('PSUBSCRIBE', 'p*'), '*3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:1\r\n',
      'pattern-subscribed'],
    ['monitor', cmd('MONITOR'), OK, 'MONITOR'],
    ['watch', cmd('WATCH', 'k'), OK, 'WATCH'],
    ['watch', cmd('WATCH', 'k') + cmd('MULTI') + cmd('EXEC'), `${OK}${OK}-EXECABORT x\r\n`,
      'an aborted EXEC (kept: conservative)'],
    ['tracking', cmd('CLIENT', 'TRACKING', 'on'), OK, 'CLIENT TRACKING on'],
    ['asking', cmd('ASKING'), OK, 'ASKING applies to the next command'],
    ['uncertain', cmd('MULTI') + cmd('SELECT', '2') + cmd('EXEC'),
      `${OK}+QUEUED\r\n*1\r\n${OK}`, 'SELECT inside a transaction'],
    ['uncertain', cmd('SELECT', '2'), '|1\r\n+a\r\n+b\r\n+OK\r\n', 'an attribute before +OK'],
    ['uncertain', cmd('SELECT', 'x'.repeat(70000)), OK, 'an argument longer than read'],
  ]
  for (const [reason, requests, replies, what] of cases) {
    t.equal(refusal(carryOf(requests, replies)), reason, what)
  }
  const fine: Array<[string, string, string]> = [
    [cmd('WATCH', 'k') + cmd('UNWATCH'), OK + OK, 'UNWATCH'],
    [cmd('WATCH', 'k') + cmd('MULTI') + cmd('EXEC'), `${OK}${OK}*0\r\n`, 'EXEC'],
    [cmd('WATCH', 'k') + cmd('MULTI') + cmd('EXEC'), `${OK}${OK}*-1\r\n`, 'a failed EXEC'],
    [cmd('WATCH', 'k') + cmd('MULTI') + cmd('DISCARD'), OK + OK + OK, 'DISCARD'],
    [cmd('MULTI') + cmd('SELECT', '2') + cmd('DISCARD'), `${OK}+QUEUED\r\n${OK}`,
      'SELECT in a discarded transaction'],
    [cmd('MULTI') + cmd('SELECT', '2') + cmd('EXEC') + cmd('SELECT', '1'),
      `${OK}+QUEUED\r\n*1\r\n${OK}${OK}`, 'a SELECT after the transaction'],
    [cmd('CLIENT', 'TRACKING', 'on') + cmd('CLIENT', 'TRACKING', 'off'), OK + OK,
      'tracking turned off'],
    [cmd('CLIENT', 'TRACKING', 'on', 'BCAST', 'PREFIX'), ERR, 'tracking refused'],
    [cmd('SUBSCRIBE', 'c') + cmd('UNSUBSCRIBE'),
      '*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:0\r\n',
      'unsubscribed'],
    [cmd('SUBSCRIBE', 'c'), '-NOPERM no\r\n', 'a refused SUBSCRIBE'],
    [cmd('ASKING') + cmd('GET', 'k'), `${OK}$-1\r\n`, 'ASKING used'],
    [cmd('BLPOP', 'q', '0'), '*2\r\n$1\r\nq\r\n$1\r\nx\r\n', 'a blocking command answered'],
    [cmd('MONITOR') + cmd('RESET'), `${OK}+RESET\r\n`, 'MONITOR ended by RESET'],
  ]
  for (const [requests, replies, what] of fine) {
    t.equal(refusal(carryOf(requests, replies)), '', what)
  }
})

t.test('replicas: the first reply read decides, a disagreement is uncertain', async (t) => {
  const two = (a: string, b: string): Carry => {
    const s = resp.session()
    const [ra, rb] = [s.reader(), s.reader()]
    s.request(Buffer.from(cmd('SELECT', '3')))
    ra.push(Buffer.from(a))
    rb.push(Buffer.from(b))
    return s.carry?.() ?? { refused: 'none' }
  }
  t.equal(replayOf(t, two(OK, OK)), cmd('SELECT', '3'), 'both accept')
  t.equal(refusal(two(OK, ERR)), 'uncertain', 'one accepts, one refuses')
  t.equal(refusal(two(ERR, OK)), 'uncertain', 'one refuses, one accepts')
  t.equal(replayOf(t, two(OK, '')), cmd('SELECT', '3'), 'a replica that never answers (down)')
  t.equal(replayOf(t, two('', OK)), cmd('SELECT', '3'), 'the first reader down')
  t.equal(refusal(two('', '')), 'blocked', 'no reply at all')
})

t.test('a pipeline cut anywhere, its replies cut anywhere: the same carry', async (t) => {
  const requests = Buffer.from(cmd('AUTH', 'u', 'pw') + 'HELLO 3 SETNAME a\r\n' +
    cmd('SELECT', '7') + cmd('SET', 'k', 'v') + cmd('SELECT', '99') +
    cmd('CLIENT', 'SETNAME', 'b') + cmd('WATCH', 'k') + cmd('UNWATCH'), 'latin1')
  const replies = Buffer.from(OK + HELLO3 + OK + OK + ERR + OK + OK + OK, 'latin1')
  const run = (at: number, rat: number): string => {
    const s = resp.session()
    const r = s.reader()
    s.request(requests.subarray(0, at))
    s.request(requests.subarray(at))
    r.push(replies.subarray(0, rat))
    r.push(replies.subarray(rat))
    return JSON.stringify(s.carry?.())
  }
  const want = JSON.stringify({
    replay: Buffer.from(cmd('AUTH', 'u', 'pw') + cmd('HELLO', '3') + cmd('SELECT', '7') +
      cmd('CLIENT', 'SETNAME', 'b'), 'latin1'),
  })
  let differ = 0
  for (let at = 0; at <= requests.length; at++) if (run(at, 0) !== want) differ++
  for (let at = 0; at <= replies.length; at++) if (run(0, at) !== want) differ++
  t.equal(differ, 0, `split at each of ${requests.length + replies.length + 2} positions`)
  const bytes = (s: Session, r: ReplyReader): string => {
    for (const b of requests) s.request(Buffer.from([b]))
    for (const b of replies) r.push(Buffer.from([b]))
    return JSON.stringify(s.carry?.())
  }
  const s = resp.session()
  t.equal(bytes(s, s.reader()), want, 'byte by byte')
})

t.test('a reader created after a RESP3 session reads RESP3 replies', async (t) => {
  const s = resp.session()
  const r = s.reader()
  s.request(Buffer.from(cmd('HELLO', '3')))
  r.push(Buffer.from(HELLO3))
  const late = s.reader() // a replica that joins, its connection put in RESP3 by the replay
  const fresh = resp.session().reader() // a RESP2 reading, for contrast
  s.request(Buffer.from(cmd('SUBSCRIBE', 'c') + cmd('LRANGE', 'l', '0', '-1')))
  const out = Buffer.from('>3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n' +
    '*2\r\n$7\r\nmessage\r\n$1\r\nx\r\n')
  const names = late.push(out).map((m) => m.request?.name ?? null)
  t.same(names, ['subscribe', 'lrange'], 'an array while subscribed is a reply in RESP3')
  t.equal(fresh.error, null)
})

const skip = haveRedis() ? false : 'redis-server not installed'

t.test('the replay on a real redis-server recreates the session', { skip }, async (t) => {
  const redis = await redisServer(t, ['--requirepass', 'secret'])
  const src = await RespConn.open(redis.port)
  t.teardown(() => src.close())
  const s = new RespSession()
  const r = s.reader()
  src.socket.on('data', (d: Buffer) => { r.push(d) })
  const send = (...words: string[]): Promise<RespValue> => {
    s.request(Buffer.from(cmd(...words), 'latin1'))
    return src.command(...words)
  }
  await send('AUTH', 'secret')
  await send('HELLO', '3')
  await send('SELECT', '3')
  await send('SET', 'k', 'in-3')
  await send('CLIENT', 'SETNAME', 'app')
  t.ok(await send('SELECT', '99') instanceof RespError, 'SELECT 99 refused')
  await until(() => r.settled() !== null, 'every reply read')
  const c = s.carry()
  if ('refused' in c) {
    t.fail(`refused: ${c.refused}`)
    return
  }
  const fresh = await RespConn.open(redis.port)
  t.teardown(() => fresh.close())
  const { replies } = framing(c.replay)
  fresh.sendRaw(c.replay, replies.length)
  await fresh.waitReplies(replies.length)
  t.equal(replies.length, 4, 'AUTH, HELLO, SELECT, SETNAME')
  t.notOk(fresh.drain().some((v) => v instanceof RespError), 'no replay request refused')
  const session = async (c: RespConn): Promise<string[]> => {
    const fields = new Map(String(await c.command('CLIENT', 'INFO')).trim().split(' ')
      .map((w) => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)]))
    return ['db', 'name', 'resp', 'user'].map((k) => `${k}=${fields.get(k) ?? '?'}`)
  }
  const want = ['db=3', 'name=app', 'resp=3', 'user=default']
  t.same(await session(src), want, 'the source connection')
  t.same(await session(fresh), want, 'the fresh connection, after the replay')
  t.equal(await fresh.command('GET', 'k'), 'in-3', 'GET reads the selected database')
})
