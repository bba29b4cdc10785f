// The resp module's request side: framing exactly as Redis 7.0 frames input (chunks cut at
// any byte, pipelines, inline lines with quotes, the protocol errors and their limits), and
// the session rules that say how many replies a request owes, whether it blocks, and whether
// its replies are compared.

import t from 'tap'
import { protocolFor } from '../../lib/protocol/index.js'
import { splitArgs, string2ll } from '../../lib/protocol/resp-parse.js'
import type { Request, Session } from '../../lib/protocol/types.js'

const resp = protocolFor('resp')

function cmd (...args: string[]): string {
  return `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')
}

type Row = [name: string, size: number, replies: number, blocking: boolean, compare: boolean]

const row = (r: Request): Row => [r.name, r.size, r.replies, r.blocking, r.compare]

/** Frames the chunks on one session: its requests as rows, and its fallback. */
function frame (chunks: Array<string | Buffer>, s: Session = resp.session()):
{ rows: Row[], fallback: string | null } {
  const rows: Row[] = []
  for (const c of chunks) rows.push(...s.request(Buffer.from(c)).map(row))
  return { rows, fallback: s.fallback }
}

/** The rows of each request, one request per string, sent in one chunk. */
function rowsOf (...requests: string[]): Row[] {
  return frame([requests.join('')]).rows
}

type Verdict = [name: string, replies: number, blocking: boolean, compare: boolean]

/** The last request's verdict (its size aside), after `before`. */
function one (request: string, before: string[] = []): Verdict {
  const rows = rowsOf(...before, request)
  const [name, , replies, blocking, compare] = rows[rows.length - 1] as Row
  return [name, replies, blocking, compare]
}

const PIPELINE = [
  cmd('SET', 'k', 'v'),
  cmd('INCR', 'counter'),
  'PING\r\n',
  'set "a b" \'c d\'\n',
  '\r\n', // blank: skipped, no reply
  cmd('GET', 'x'.repeat(300)),
  '*0\r\n', // no command: skipped, no reply
  cmd('BLPOP', 'q', '0'),
  cmd('MULTI'),
  cmd('KEYS', '*'),
  cmd('EXEC'),
  cmd('SUBSCRIBE', 'a', 'b'),
  '  UNSUBSCRIBE  \r\n',
  cmd('SET', 'big', 'v'.repeat(70000)),
].join('')

t.test('a pipeline split at every byte frames the same requests', async (t) => {
  const whole = frame([PIPELINE])
  t.equal(whole.fallback, null)
  t.same(whole.rows.map((r) => r[0]), [
    'set', 'incr', 'ping', 'set', '', 'get', '', 'blpop', 'multi', 'keys', 'exec',
    'subscribe', 'unsubscribe', 'set',
  ])
  t.same(whole.rows.map((r) => r[2]), [1, 1, 1, 1, 0, 1, 0, 1, 1, 1, 1, 2, 2, 1])
  t.equal(whole.rows.reduce((n, r) => n + r[1], 0), Buffer.byteLength(PIPELINE),
    'sizes cover every byte')
  const data = Buffer.from(PIPELINE)
  let same = 0
  for (let k = 0; k <= data.length; k += k < 2000 ? 1 : 997) {
    const split = frame([data.subarray(0, k), data.subarray(k)])
    if (JSON.stringify(split) === JSON.stringify(whole)) same++
    else t.fail(`split at ${k} differs`, { got: split })
  }
  t.ok(same > 2000, `${same} splits agree`)
  const bytes = [...data].map((b) => Buffer.from([b]))
  t.same(frame(bytes), whole, 'one byte at a time')
})

t.test('a trailing partial request is completed by later input', async (t) => {
  const s = resp.session()
  const text = cmd('SET', 'k', 'value')
  t.same(s.request(Buffer.from(text + text.slice(0, 9))).map(row),
    [['set', text.length, 1, false, true]])
  t.same(s.request(Buffer.from(text.slice(9))).map(row), [['set', text.length, 1, false, true]])
  t.same(s.request(Buffer.from('GE')).map(row), [])
  t.same(s.request(Buffer.from('T k\r\n')).map(row), [['get', 7, 1, false, true]])
})

t.test('inline lines: words and quotes as Redis splits them', async (t) => {
  t.same(splitArgs('  set  k   v '), ['set', 'k', 'v'])
  t.same(splitArgs('set "a b" \'c d\''), ['set', 'a b', 'c d'])
  t.same(splitArgs('x "\\x41\\n\\t\\"q\\\\" \'it\\\'s\''), ['x', 'A\n\t"q\\', "it's"])
  t.same(splitArgs('a"b c"d'), null, 'a closing quote must be followed by a blank')
  t.same(splitArgs('ab"c d" e'), ['abc d', 'e'], 'a quote may open inside a word')
  t.same(splitArgs('set "unterminated'), null)
  t.same(splitArgs("set 'unterminated"), null)
  t.same(splitArgs(' \t\v\f'), [])
  t.same(splitArgs('"\\x4"'), ['x4'], 'not a hex escape: the backslash is dropped')
  t.same(one('GET "a b"\n'), ['get', 1, false, true])
  t.same(one('get k\r\n'), ['get', 1, false, true], '\\r\\n or \\n')
  t.same(one(' \t \r\n'), ['', 0, false, true], 'a blank line: skipped, no reply')
})

t.test("string2ll: the numbers Redis's parser accepts", async (t) => {
  const n = (s: string): number | null => string2ll(Buffer.from(s), s.length)
  t.equal(n('0'), 0)
  t.equal(n('42'), 42)
  t.equal(n('-7'), -7)
  for (const bad of ['', '-', '-0', '01', '+1', ' 1', '1 ', '1x', '9223372036854775808',
    '-9223372036854775809', '123456789012345678901']) {
    t.equal(n(bad), null, JSON.stringify(bad))
  }
  t.equal(n('9223372036854775807'), 2 ** 63, 'int64 max (as a double)')
  t.equal(n('-9223372036854775808'), -(2 ** 63), 'int64 min')
})

t.test('input Redis refuses makes the session fall back, without guessing', async (t) => {
  const bad: Array<[string, string]> = [
    ['*x\r\n', 'count not a number'],
    ['*1\r\n$-5\r\n', 'negative bulk length'],
    ['*-0\r\n', '-0 is no number to Redis'],
    ['*01\r\n', 'leading zero'],
    ['*3000000000\r\n', 'more arguments than INT_MAX'],
    ['*1\r\n$536870913\r\n', 'an argument over proto-max-bulk-len (512 MiB)'],
    ['*1\r\n+PING\r\n', "an argument without '$'"],
    ['*12345678901234567890123', 'a count line too long to be a number'],
    ['GET "a\r\n', 'unbalanced quotes'],
    ['GET "a"b\r\n', 'a closing quote followed by a letter'],
    ['GET a\0b\r\n', 'a NUL in an inline line (Redis never finds its end)'],
    ['x'.repeat(64 * 1024 + 1), 'an inline line over 64 KiB, no newline yet'],
    ['x'.repeat(64 * 1024 + 1) + '\n', 'an inline line over 64 KiB (refused or not by timing)'],
    ['POST / HTTP/1.1\r\n', 'HTTP: Redis closes without a reply'],
    [cmd('host:', 'x'), 'HTTP header as a command'],
    [cmd('CLIENT', 'REPLY', 'OFF'), 'replies cannot be counted'],
    [cmd('client', 'reply', 'skip'), 'replies cannot be counted'],
    [cmd('SYNC'), 'a replication stream'],
    [cmd('MULTI') + cmd('SUBSCRIBE', 'a'), 'pub/sub inside MULTI'],
    [cmd('MULTI') + cmd('HELLO', '3'), 'HELLO inside MULTI'],
  ]
  for (const [input, why] of bad) {
    const before = cmd('PING')
    const s = resp.session()
    const { rows, fallback } = frame([before + input], s)
    t.ok(fallback, `${why}: falls back (${fallback})`)
    t.same(rows[0], ['ping', before.length, 1, false, true], `${why}: what came before stands`)
    t.same(s.request(Buffer.from(cmd('PING'))), [], `${why}: nothing is framed after`)
  }
  // The same inputs cut into single bytes fall back too, and never throw.
  for (const [input, why] of bad) {
    const { fallback } = frame([...Buffer.from(input)].map((b) => Buffer.from([b])))
    t.ok(fallback, `${why}, byte by byte`)
  }
})

t.test('limits: what Redis still accepts is framed', async (t) => {
  const line = `SET ${'x'.repeat(64 * 1024 - 5)}\r\n` // 64 KiB before the \n
  t.same(frame([line]), { rows: [['set', line.length, 1, false, true]], fallback: null },
    'an inline line of 64 KiB (its \\r included)')
  t.same(frame(['*2147483647\r\n$4\r\nPING\r\n']), { rows: [], fallback: null },
    'INT_MAX arguments: waits for them')
  t.same(frame(['*1\r\n$536870912\r\n']), { rows: [], fallback: null }, 'a 512 MiB argument')
  t.same(rowsOf('*-1\r\n', '*-5\r\n', '*0\r\n', '\n'), [
    ['', 5, 0, false, true], ['', 5, 0, false, true],
    ['', 4, 0, false, true], ['', 1, 0, false, true],
  ], 'empty and negative counts: skipped without a reply, as Redis does')
  // Redis skips the byte after a length line's \r and the two after a payload unchecked.
  t.same(rowsOf('*1\rX$4\r\nPINGzz'), [['ping', 14, 1, false, true]])
})

t.test('a 100 MB argument is skipped by count, not copied or rescanned', async (t) => {
  const s = resp.session()
  const size = 100 * 1024 * 1024
  const head = Buffer.from(`*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$${size}\r\n`)
  const piece = Buffer.alloc(64 * 1024, 0x61)
  const started = process.hrtime.bigint()
  t.same(s.request(head), [])
  for (let sent = 0; sent < size; sent += piece.length) t.same(s.request(piece).length, 0)
  const done = s.request(Buffer.from('\r\n'))
  const ms = Number(process.hrtime.bigint() - started) / 1e6
  t.same(done.map(row), [['set', head.length + size + 2, 1, false, true]])
  t.ok(ms < 5000, `framed in ${ms.toFixed(0)} ms`)
})

t.test('QUIT: Redis runs nothing after it, so later input owes nothing', async (t) => {
  const s = resp.session()
  t.same(frame([cmd('QUIT') + cmd('SET', 'a', 'b')], s).rows, [
    ['quit', 14, 1, false, true], ['', cmd('SET', 'a', 'b').length, 0, false, true],
  ])
  t.same(s.request(Buffer.from('*x garbage')).map(row), [['', 10, 0, false, true]])
  t.equal(s.fallback, null)
})

t.test('names: lower case, container commands with their subcommand', async (t) => {
  t.equal(one(cmd('Client', 'ID'))[0], 'client|id')
  t.equal(one('config GET maxmemory\r\n')[0], 'config|get')
  t.equal(one(cmd('COMMAND'))[0], 'command')
  t.equal(one(cmd('OBJECT', 'IdleTime', 'k'))[0], 'object|idletime')
  t.equal(one(cmd('x'.repeat(100)))[0], '', 'too long to be a command')
})

t.test('MULTI: queued commands reply once, never block; EXEC compares all or none', async (t) => {
  const multi = cmd('MULTI')
  const incr = cmd('INCR', 'a')
  const blpop = cmd('BLPOP', 'q', '0')
  t.same(rowsOf(multi, incr, blpop, cmd('EXEC')), [
    ['multi', multi.length, 1, false, true],
    ['incr', incr.length, 1, false, true],
    ['blpop', blpop.length, 1, false, true],
    ['exec', 14, 1, false, true],
  ], 'BLPOP inside MULTI does not block')
  t.same(one(cmd('EXEC'), [multi, cmd('SET', 'a', 'b'), cmd('TIME')]),
    ['exec', 1, false, false], 'one uncompared command: EXEC is not compared')
  t.same(one(cmd('TIME'), [multi]), ['time', 1, false, true], '+QUEUED is compared')
  t.same(one(cmd('EXEC'), [multi, cmd('KEYS', '*'), cmd('DISCARD'), multi, cmd('GET', 'a')]),
    ['exec', 1, false, true], 'DISCARD ends the transaction and its verdict')
  t.same(one(cmd('EXEC'), [multi, multi, cmd('WATCH', 'k'), cmd('GET', 'a')]),
    ['exec', 1, false, true], 'MULTI and WATCH inside MULTI: one error each, not queued')
  t.same(one(cmd('BLPOP', 'q', '0'), [multi, cmd('EXEC')]), ['blpop', 1, true, true],
    'after EXEC, blocking again')
  t.same(one(cmd('BLPOP', 'q', '0'), [multi, cmd('EXEC', 'x')]), ['blpop', 1, false, true],
    'EXEC with an argument is an error: still inside MULTI')
  t.same(one(cmd('EXEC')), ['exec', 1, false, true], 'EXEC without MULTI: an error')
  t.same(one(cmd('BLPOP', 'q', '0'), [multi, cmd('RESET')]), ['blpop', 1, true, true],
    'RESET ends MULTI')
})

t.test('blocking commands', async (t) => {
  const blocking = [
    cmd('BLPOP', 'a', '0'), cmd('brpop', 'a', 'b', '1'), cmd('BRPOPLPUSH', 'a', 'b', '0'),
    cmd('BLMOVE', 'a', 'b', 'LEFT', 'RIGHT', '0'), cmd('BLMPOP', '0', '1', 'a', 'LEFT'),
    cmd('BZPOPMIN', 'z', '0'), cmd('BZPOPMAX', 'z', '0'), cmd('BZMPOP', '0', '1', 'z', 'MIN'),
    cmd('WAIT', '1', '0'), cmd('WAITAOF', '1', '0', '0'),
    cmd('XREAD', 'BLOCK', '0', 'STREAMS', 's', '$'),
    cmd('xread', 'COUNT', '5', 'block', '100', 'STREAMS', 's', '0'),
    cmd('XREADGROUP', 'GROUP', 'g', 'c', 'BLOCK', '0', 'STREAMS', 's', '>'),
    'XREADGROUP GROUP g c COUNT 1 NOACK BLOCK 10 STREAMS s >\r\n',
  ]
  for (const c of blocking) t.equal(one(c)[2], true, JSON.stringify(c.slice(0, 40)))
  const not = [
    cmd('LPOP', 'a'), cmd('XREAD', 'STREAMS', 's', '0'),
    cmd('XREAD', 'COUNT', '1', 'STREAMS', 'block', '0'),
    cmd('XREADGROUP', 'GROUP', 'BLOCK', 'BLOCK', 'STREAMS', 's', '>'),
    cmd('XREAD', 'COUNT', 'BLOCK', 'STREAMS', 's', '0'),
  ]
  for (const c of not) t.equal(one(c)[2], false, JSON.stringify(c.slice(0, 40)))
  t.equal(one(cmd('BLPOP', 'a', '0'), [cmd('MONITOR')])[2], false,
    'a MONITOR connection is refused keyspace commands')
})

t.test('the uncompared table', async (t) => {
  const uncompared = [
    cmd('KEYS', '*'), cmd('SCAN', '0'), cmd('SSCAN', 's', '0'), cmd('HSCAN', 'h', '0'),
    cmd('ZSCAN', 'z', '0'), cmd('SMEMBERS', 's'), cmd('SINTER', 'a', 'b'), cmd('SUNION', 'a'),
    cmd('SDIFF', 'a', 'b'), cmd('HGETALL', 'h'), cmd('HKEYS', 'h'), cmd('HVALS', 'h'),
    cmd('DUMP', 'k'), cmd('TIME'), cmd('TTL', 'k'), cmd('PTTL', 'k'), cmd('EXPIRETIME', 'k'),
    cmd('PEXPIRETIME', 'k'), cmd('OBJECT', 'IDLETIME', 'k'), cmd('OBJECT', 'freq', 'k'),
    cmd('LASTSAVE'), cmd('INFO'), cmd('INFO', 'server'), cmd('CLIENT', 'ID'),
    cmd('CLIENT', 'LIST'), cmd('CLIENT', 'INFO'), cmd('CLIENT', 'TRACKINGINFO'),
    cmd('MEMORY', 'USAGE', 'k'), cmd('MEMORY', 'STATS'), cmd('ROLE'), cmd('DEBUG', 'OBJECT', 'k'),
    cmd('COMMAND'), cmd('COMMAND', 'DOCS'), cmd('COMMAND', 'INFO', 'get'), cmd('COMMAND', 'LIST'),
    cmd('COMMAND', 'COUNT'), cmd('RANDOMKEY'), cmd('SRANDMEMBER', 's'), cmd('HRANDFIELD', 'h'),
    cmd('ZRANDMEMBER', 'z'), cmd('HELLO'), cmd('HELLO', '3'), cmd('CONFIG', 'GET', '*'),
    cmd('LATENCY', 'LATEST'), cmd('SLOWLOG', 'GET'), cmd('PUBSUB', 'CHANNELS'),
    cmd('PUBSUB', 'SHARDCHANNELS'), cmd('ACL', 'LOG'), cmd('ACL', 'GENPASS'),
    cmd('CLUSTER', 'INFO'), cmd('FUNCTION', 'LIST'), cmd('FUNCTION', 'STATS'), cmd('LOLWUT'),
    cmd('XINFO', 'CONSUMERS', 's', 'g'), cmd('XINFO', 'STREAM', 's', 'FULL'),
    cmd('XPENDING', 's', 'g', '-', '+', '10'), cmd('BGSAVE'), cmd('WAIT', '0', '0'),
    cmd('MODULE', 'LIST'), cmd('UNSUBSCRIBE'), cmd('SUNSUBSCRIBE'),
  ]
  for (const c of uncompared) t.equal(one(c)[3], false, JSON.stringify(c))
  const compared = [
    cmd('GET', 'k'), cmd('SET', 'k', 'v'), cmd('INCR', 'k'), cmd('SPOP', 's'),
    cmd('EVAL', 'return 1', '0'), cmd('FCALL', 'f', '0'), cmd('DBSIZE'), cmd('CLIENT', 'GETNAME'),
    cmd('OBJECT', 'ENCODING', 'k'), cmd('XINFO', 'STREAM', 's'), cmd('XPENDING', 's', 'g'),
    cmd('XADD', 's', '*', 'f', 'v'), cmd('SINTERCARD', '2', 'a', 'b'),
    cmd('SINTERSTORE', 'd', 'a'), cmd('PUBSUB', 'NUMSUB', 'a'), cmd('PING'),
    cmd('PUNSUBSCRIBE'), cmd('UNSUBSCRIBE', 'a'), cmd('ZRANGE', 'z', '0', '-1'),
  ]
  for (const c of compared) t.equal(one(c)[3], true, JSON.stringify(c))
})

t.test('SUBSCRIBE and UNSUBSCRIBE: one reply per channel, tracked per kind', async (t) => {
  const sub = cmd('SUBSCRIBE', 'a', 'b', 'c')
  t.same(one(sub), ['subscribe', 3, false, true])
  t.equal(one(cmd('SUBSCRIBE', 'a', 'a'))[1], 2, 'a repeated channel is confirmed twice')
  t.equal(one(cmd('UNSUBSCRIBE'))[1], 1, 'none to drop: one confirmation')
  t.equal(one(cmd('UNSUBSCRIBE'), [sub])[1], 3, 'no argument: one per channel')
  t.equal(one(cmd('UNSUBSCRIBE'), [sub, cmd('SUBSCRIBE', 'a', 'd')])[1], 4)
  t.equal(one(cmd('UNSUBSCRIBE'), [sub, cmd('UNSUBSCRIBE', 'a', 'x')])[1], 2)
  t.equal(one(cmd('UNSUBSCRIBE', 'x', 'y'), [sub])[1], 2, 'with arguments: one per argument')
  t.equal(one(cmd('PUNSUBSCRIBE'), [sub])[1], 1, 'patterns are counted apart')
  t.equal(one(cmd('PUNSUBSCRIBE'), [sub, cmd('PSUBSCRIBE', 'p*', 'q*')])[1], 2)
  t.equal(one(cmd('SUNSUBSCRIBE'), [sub, cmd('SSUBSCRIBE', 's1')])[1], 1)
  t.equal(one(cmd('UNSUBSCRIBE'), [sub, cmd('UNSUBSCRIBE')])[1], 1, 'all dropped already')
  t.equal(one(cmd('UNSUBSCRIBE'), [sub, cmd('RESET')])[1], 1, 'RESET drops them all')
  t.equal(one(cmd('SUBSCRIBE'))[1], 1, 'no channel: one arity error')
  t.same(one(cmd('GET', 'k'), [sub]), ['get', 1, false, true],
    'RESP2 subscribed: other commands are refused with one error')
  t.same(one(cmd('BLPOP', 'q', '0'), [sub]), ['blpop', 1, false, true],
    'refused, so not blocking either')
  t.same(one(cmd('BLPOP', 'q', '0'), [cmd('HELLO', '3'), sub]), ['blpop', 1, true, true],
    'RESP3 subscribed: every command runs')
  t.same(one(cmd('MULTI'), [sub]), ['multi', 1, false, true])
  t.same(one(cmd('BLPOP', 'q', '0'), [sub, cmd('MULTI')]), ['blpop', 1, false, true],
    'MULTI is refused while subscribed: BLPOP is refused too, not queued')
})

t.test('CLIENT REPLY ON, HELLO, MONITOR, RESET', async (t) => {
  t.same(one(cmd('CLIENT', 'REPLY', 'ON')), ['client|reply', 1, false, true])
  t.same(frame([cmd('CLIENT', 'REPLY', 'OFF', 'x')]).fallback, null, 'wrong arity: an error')
  t.same(one(cmd('HELLO', '3')), ['hello', 1, false, false])
  t.same(rowsOf(cmd('MONITOR'), cmd('MONITOR'), cmd('PING')).map((r) => r[2]), [1, 0, 1],
    'a second MONITOR answers nothing')
  t.same(rowsOf(cmd('MONITOR'), cmd('RESET'), cmd('MONITOR')).map((r) => r[2]), [1, 1, 1],
    'RESET ends MONITOR')
  t.same(one(cmd('MONITOR'), [cmd('MULTI')]), ['monitor', 1, false, true],
    'MONITOR inside MULTI is only queued')
})

t.test('shareable: plain data commands, until the connection does anything else', async (t) => {
  const s = resp.session()
  const shareable = (...requests: string[]): boolean[] =>
    s.request(Buffer.from(requests.join(''))).map((r) => r.shareable === true)
  t.same(shareable(cmd('INCR', 'k'), cmd('LPUSH', 'q', 'v'), cmd('GET', 'k')), [true, true, true])
  t.same(shareable(cmd('TIME')), [false], 'an uncompared read is not on the list')
  t.same(shareable(cmd('GET', 'k')), [false], 'and the connection has left the lane for good')
  const other = resp.session()
  const more = other.request(Buffer.from(cmd('SELECT', '1') + cmd('INCR', 'k')))
  t.same(more.map((r) => r.shareable === true), [false, false], 'SELECT changes the session')
  const multi = resp.session()
  const queued = multi.request(Buffer.from(cmd('MULTI') + cmd('INCR', 'k') + cmd('EXEC')))
  t.same(queued.map((r) => r.shareable === true), [false, false, false], 'MULTI: none')
  const blocking = resp.session()
  const b = blocking.request(Buffer.from(cmd('BLPOP', 'q', '0')))
  t.same(b.map((r) => r.shareable === true), [false], 'a blocking command: no')
})

t.test('closesOthers: CLIENT KILL, and an EXEC that runs one', async (t) => {
  const closes = (...requests: string[]): boolean[] => resp.session()
    .request(Buffer.from(requests.join(''))).map((r) => r.closesOthers === true)
  t.same(closes(cmd('CLIENT', 'KILL', 'TYPE', 'normal'), cmd('CLIENT', 'ID')), [true, false])
  t.same(closes(cmd('MULTI'), cmd('CLIENT', 'KILL', 'ID', '7'), cmd('EXEC')),
    [false, false, true], 'queued, it closes nothing; EXEC runs it')
  t.same(closes(cmd('MULTI'), cmd('INCR', 'k'), cmd('EXEC'), cmd('MULTI'), cmd('EXEC')),
    [false, false, false, false, false])
})
