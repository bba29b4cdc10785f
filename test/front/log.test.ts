// InputLog: seq numbering, per-connection release, byte accounting, compaction.
// Pure, no timers.

import t from 'tap'
import { InputLog } from '../../lib/front/log.js'

const seqs = (es: Array<{ seq: number }>): number[] => es.map((e) => e.seq)

t.test('an empty log', async (t) => {
  const log = new InputLog()
  t.equal(log.lastSeq, 0)
  t.equal(log.length, 0)
  t.equal(log.bytes, 0)
  t.same(log.held(1), [])
  log.release(1, 10)
  log.forget(1)
  t.equal(log.length, 0, 'releasing or forgetting an unknown connection changes nothing')
})

t.test('seq numbering: 1, 2, 3 … in append order, with type, conn and data', async (t) => {
  const log = new InputLog()
  const data = Buffer.from('hello')
  const a = log.append('OPEN', 7)
  const b = log.append('DATA', 7, data)
  const c = log.append('EOF', 7)
  const d = log.append('CLOSE', 7)
  t.same(seqs([a, b, c, d]), [1, 2, 3, 4])
  t.same(a, { seq: 1, type: 'OPEN', conn: 7 })
  t.notOk('data' in a, 'entries without data have no data key')
  t.equal(b.data, data, "DATA keeps the caller's buffer (no copy)")
  t.equal(log.lastSeq, 4)
  t.equal(log.length, 4)
  t.equal(log.bytes, 5)
  t.same(log.held(7), [a, b, c, d])
})

t.test('release is per connection: one stuck connection pins only its own entries', async (t) => {
  const log = new InputLog()
  for (let i = 0; i < 30; i++) log.append('DATA', i % 3, Buffer.alloc(i + 1))
  const total = (30 * 31) / 2
  t.equal(log.bytes, total)
  // Connection 0 is stuck; 1 and 2 are fully acknowledged.
  log.release(1, 30)
  log.release(2, 30)
  t.same(seqs(log.held(1)), [])
  t.same(seqs(log.held(2)), [])
  t.same(seqs(log.held(0)), [1, 4, 7, 10, 13, 16, 19, 22, 25, 28])
  t.equal(log.length, 10)
  t.equal(log.bytes, [1, 4, 7, 10, 13, 16, 19, 22, 25, 28].reduce((s, n) => s + n, 0))
  log.release(0, 12)
  t.same(seqs(log.held(0)), [13, 16, 19, 22, 25, 28], 'releases up to and including the seq')
  log.release(0, 3)
  t.same(seqs(log.held(0)), [13, 16, 19, 22, 25, 28], 'releasing below the head is a no-op')
  const e = log.append('EOF', 0)
  t.equal(e.seq, 31, 'numbering goes on')
  log.forget(0)
  t.equal(log.length, 0)
  t.equal(log.bytes, 0)
  t.equal(log.lastSeq, 31, 'forgetting keeps the numbering')
})

t.test('held() keeps each connection apart, releases are per connection', async (t) => {
  const log = new InputLog()
  for (let i = 0; i < 12; i++) {
    const conn = i % 4
    if (conn === 0) log.append('OPEN', conn)
    else log.append('DATA', conn, Buffer.from('x'))
  }
  log.release(1, 5)
  t.same(seqs(log.held(1)), [6, 10])
  t.same(seqs(log.held(2)), [3, 7, 11])
  t.equal(log.length, 11)
})

t.test('a long-lived connection: compaction keeps its queue right', async (t) => {
  const log = new InputLog()
  let released = 0
  for (let i = 1; i <= 5000; i++) {
    log.append('DATA', 1, Buffer.from('ab'))
    if (i % 7 === 0) { log.release(1, i - 3); released = i - 3 }
  }
  const held = log.held(1)
  t.equal(held[0]?.seq, released + 1, 'the oldest held entry follows the last released one')
  t.equal(held.at(-1)?.seq, 5000)
  t.equal(log.length, 5000 - released)
  t.equal(log.bytes, 2 * (5000 - released))
})
