// Replies that legitimately differ between two correct Redis copies (iteration order of a
// hashtable, which each process seeds at random; clocks; process facts; the command table;
// random reads) are not compared with protocol: resp: the backup's is dropped, the client
// gets the primary's. Against a hash of 10k fields and a set of 10k members: no divergence,
// and where the primary's answer is fixed for the process, the client gets its very bytes.

import t from 'tap'
import { until } from '../helpers/until.js'
import { haveRedis, redisPair } from '../helpers/cluster.js'
import { converge } from '../helpers/redis-load.js'
import { RespConn, type Arg, type RespValue } from '../helpers/resp.js'
import { untilValue } from '../helpers/until.js'

const skip = haveRedis() ? false : 'redis-server not installed'

const FIELDS = 10000
const KEYS = 200

// Fixed for a process while the data does not change: the client must get the primary's bytes.
const FIXED: Arg[][] = [
  ['KEYS', '*'],
  ['SCAN', 0, 'COUNT', 50],
  ['HGETALL', 'big:h'],
  ['HKEYS', 'big:h'],
  ['HVALS', 'big:h'],
  ['SMEMBERS', 'big:s'],
  ['SSCAN', 'big:s', 0, 'COUNT', 100],
  ['HSCAN', 'big:h', 0, 'COUNT', 100],
  ['ZSCAN', 'z', 0],
  ['COMMAND', 'DOCS'],
  ['COMMAND'],
  ['COMMAND', 'LIST'],
  ['COMMAND', 'INFO', 'get', 'set'],
]

// Different at every call (clocks, random picks, process facts): only their shape is known.
const VARYING: Array<[Arg[], (v: RespValue) => boolean]> = [
  [['TIME'], (v) => Array.isArray(v) && v.length === 2],
  [['INFO'], (v) => typeof v === 'string' && v.includes('redis_version')],
  [['INFO', 'stats'], (v) => typeof v === 'string' && v.includes('total_connections')],
  [['CLIENT', 'ID'], (v) => typeof v === 'number'],
  [['CLIENT', 'INFO'], (v) => typeof v === 'string' && v.includes('id=')],
  [['CLIENT', 'LIST'], (v) => typeof v === 'string' && v.includes('id=')],
  [['RANDOMKEY'], (v) => typeof v === 'string'],
  [['SRANDMEMBER', 'big:s', 5], (v) => Array.isArray(v) && v.length === 5],
  [['HRANDFIELD', 'big:h', 3], (v) => Array.isArray(v) && v.length === 3],
  [['ZRANDMEMBER', 'z', 2], (v) => Array.isArray(v) && v.length === 2],
  [['TTL', 'e'], (v) => typeof v === 'number' && v > 0],
  [['PTTL', 'e'], (v) => typeof v === 'number' && v > 0],
  [['OBJECT', 'IDLETIME', 'k:1'], (v) => typeof v === 'number'],
  [['LASTSAVE'], (v) => typeof v === 'number'],
  [['MEMORY', 'USAGE', 'big:h'], (v) => typeof v === 'number'],
  [['ROLE'], (v) => Array.isArray(v) && v[0] === 'master'],
]

// Both copies get the data through the front: 10k-field hash, 10k-member set, a zset, keys.
async function fill (port: number): Promise<void> {
  const w = await RespConn.open(port)
  const cmds: Arg[][] = []
  for (let i = 0; i < FIELDS; i += 100) {
    const n = Array.from({ length: 100 }, (_, k) => i + k)
    cmds.push(['HSET', 'big:h', ...n.flatMap((k) => [`f:${k}`, `v:${k}`])])
    cmds.push(['SADD', 'big:s', ...n.map((k) => `m:${k}`)])
  }
  for (let i = 0; i < KEYS; i++) cmds.push(['SET', `k:${i}`, i])
  // n exists before the INCRs between the uncompared commands, which leave the key set alone.
  cmds.push(['ZADD', 'z', 1, 'a', 2, 'b', 3, 'c'], ['SET', 'e', 'x', 'EX', 100000], ['SET', 'n', 0])
  await w.call(cmds, 30000)
  w.close()
}

const bytes = (c: RespConn): string[] => c.raws.map((r) => r.toString('latin1'))

async function fixed (c: RespConn): Promise<string[]> {
  c.drain()
  await c.call(FIXED, 30000)
  return bytes(c)
}

// The primary's answers once they stop changing. A dict being resized is rehashed a step at
// each lookup, which reorders it: the command table after start, for one.
async function settled (c: RespConn): Promise<string[]> {
  let last = await fixed(c)
  return untilValue(async () => {
    const now = await fixed(c)
    const same = now.every((v, i) => v === last[i])
    last = now
    return same && now
  }, 'the primary\'s answers to settle')
}

t.test('uncompared replies: no divergence, the primary\'s bytes', { skip }, async (tt) => {
  const { a, b, f } = await redisPair(tt, 'protocol: resp\noutput_commit: ack')
  await fill(f.port)
  // The backup has applied everything (so it accepted the filler's connection) before the
  // direct connections below open: both copies see them at the same point.
  tt.same(await converge(a.port, b.port), [], 'both copies filled alike')
  const direct = await RespConn.open(a.port, { keepRaw: true })
  const other = await RespConn.open(b.port, { keepRaw: true })
  const q = await RespConn.open(f.port, { keepRaw: true })
  tt.equal(f.front.status().primary, 'a')
  const before = await settled(direct)
  // One pipeline through the front, with INCRs (compared) between the uncompared commands.
  const through = FIXED.flatMap((cmd) => [cmd, ['INCR', 'n']])
  const got = await q.call(through, 30000)
  const raw = bytes(q).filter((_, i) => i % 2 === 0)
  const after = await fixed(direct)
  tt.same(after, before, 'the primary answers the same before and after')
  FIXED.forEach((cmd, i) => {
    tt.ok(raw[i] === before[i], `${cmd.join(' ')}: the primary's bytes (${raw[i]?.length} B)`)
  })
  tt.same(got.filter((_, i) => i % 2 === 1), FIXED.map((_, i) => i + 1), 'INCRs in between')
  const backup = await fixed(other)
  const differs = ['HGETALL', 'SMEMBERS'].filter((name) => {
    const i = FIXED.findIndex((cmd) => cmd[0] === name)
    return backup[i] !== before[i]
  })
  tt.same(differs, ['HGETALL', 'SMEMBERS'], 'the backup\'s own answers differ: the test means it')
  q.drain()
  const varying = await q.call(VARYING.map(([cmd]) => cmd), 30000)
  VARYING.forEach(([cmd, ok], i) => {
    tt.ok(ok(varying[i] ?? null), `${cmd.join(' ')}: a reply of the right shape`)
  })
  // The backup answers at its own pace (ack mode releases once it holds the input).
  const want = FIXED.length + VARYING.length
  await until(() => f.front.counters.uncompared_replies >= want, 'the backup\'s replies')
  tt.pass(`${f.front.counters.uncompared_replies} backup replies not compared`)
  tt.same(f.all('divergence'), [], 'no divergence')
  tt.notOk(f.find('unprotected'), 'never unprotected')
  tt.same(await converge(a.port, b.port), [], 'both copies identical')
  tt.equal(f.front.status().protected, true, 'the front is protected')
  for (const c of [direct, other, q]) c.close()
})
