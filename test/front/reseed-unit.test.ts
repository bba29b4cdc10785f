// The re-seed's pure parts: how an incarnation compares with the recorded one and what a
// front's start makes of them all; the retry backoff and what a divergence costs; and the
// JoinedTransport that lets a replica join mid-log, driven over a fake inner transport.

import t from 'tap'
import { EventEmitter } from 'node:events'
import { STOPPED } from '../../lib/arbiter/index.js'
import type { Entry } from '../../lib/front/log.js'
import { newReseedState } from '../../lib/front/replica.js'
import {
  noteDivergence, noteLeft, retryDelay, RETRY_MAX_MS, RETRY_MIN_MS,
} from '../../lib/front/reseed.js'
import type { Prober } from '../../lib/health.js'
import { checkAtStart, compare } from '../../lib/incarnation.js'
import { JoinedTransport } from '../../lib/replica/joined.js'
import type { Transport, TransportEvents } from '../../lib/replica/transport.js'

t.test('compare: every verdict', async (t) => {
  t.equal(compare(undefined, 'proc:1@5'), 'unknown', 'nothing recorded')
  t.equal(compare('proc:1@5', null), 'unknown', 'it cannot be told now')
  t.equal(compare(undefined, null), 'unknown', 'neither')
  t.equal(compare('proc:1@5', 'proc:1@5'), 'same', 'the same process')
  t.equal(compare('redis:ab', 'redis:cd'), 'changed', 'another process')
  t.equal(compare('proc:1@5', 'proc:1@6'), 'changed', 'same pid, another start time')
  t.equal(compare(STOPPED, 'proc:2@7'), 'stopped', 'the front stopped it on purpose')
  t.equal(compare(STOPPED, null), 'unknown', 'stopped, and cannot be told now')
})

t.test('checkAtStart: stale replicas, and lost only when every live one changed', async (t) => {
  const rec = { a: 'proc:1@1', b: 'proc:2@2', c: 'proc:3@3' }
  const at = (a: string | null, b: string | null, c: string | null, staleC = false) => [
    { name: 'a', stale: false, now: a },
    { name: 'b', stale: false, now: b },
    { name: 'c', stale: staleC, now: c },
  ]
  t.same(checkAtStart(at('proc:1@1', 'proc:2@2', 'proc:3@3'), rec), { stale: [], lost: false },
    'all the same: nothing to do')
  t.same(checkAtStart(at('proc:1@1', 'proc:9@9', 'proc:3@3'), rec), {
    stale: [{ name: 'b', was: 'proc:2@2', now: 'proc:9@9' }], lost: false,
  }, 'one changed: it is stale, the others serve')
  t.same(checkAtStart(at('proc:7@7', 'proc:8@8', 'proc:9@9'), rec).lost, true,
    'every one changed: lost')
  t.same(checkAtStart(at('proc:7@7', 'proc:8@8', 'proc:3@3', true), rec), {
    stale: [
      { name: 'a', was: 'proc:1@1', now: 'proc:7@7' },
      { name: 'b', was: 'proc:2@2', now: 'proc:8@8' },
    ],
    lost: true,
  }, 'every live one changed: lost, even though the stale one is the same process')
  t.same(checkAtStart(at('proc:7@7', 'proc:8@8', 'proc:9@9', true), rec).stale.map((s) => s.name),
    ['a', 'b'], 'a replica stale already is not named again')
  t.same(checkAtStart(at('proc:7@7', 'proc:8@8', null), rec), {
    stale: [
      { name: 'a', was: 'proc:1@1', now: 'proc:7@7' },
      { name: 'b', was: 'proc:2@2', now: 'proc:8@8' },
    ],
    lost: false,
  }, 'one cannot be told: not lost (it is taken as it is)')
  t.same(checkAtStart(at('proc:7@7', 'proc:8@8', 'proc:9@9'), { a: 'proc:1@1', b: 'proc:2@2' }),
    {
      stale: [
        { name: 'a', was: 'proc:1@1', now: 'proc:7@7' },
        { name: 'b', was: 'proc:2@2', now: 'proc:8@8' },
      ],
      lost: false,
    }, 'one with nothing recorded: not lost')
  t.same(checkAtStart(at('proc:7@7', 'proc:8@8', 'proc:9@9'), { ...rec, c: STOPPED }).lost, false,
    'one the front stopped: not lost')
  t.same(checkAtStart([{ name: 'a', stale: true, now: 'proc:7@7' }], rec),
    { stale: [], lost: false }, 'no live replica: nothing changed, not lost')
})

t.test('retryDelay: 10 s doubling per failure in a row, capped at 10 min', async (t) => {
  t.equal(RETRY_MIN_MS, 10_000)
  t.equal(RETRY_MAX_MS, 600_000)
  t.equal(retryDelay(0), 10_000, 'no streak yet: the minimum')
  const want = [10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 600_000, 600_000]
  t.same(want.map((_, i) => retryDelay(i + 1)), want, 'streaks 1..8')
  t.equal(retryDelay(1000), 600_000, 'a long streak stays capped')
})

const fresh = newReseedState

t.test('noteDivergence: soon after a join it backs off; a rare one re-seeds at once', async (t) => {
  const rs = fresh()
  noteDivergence(rs, 5_000)
  t.match(rs, { divergences: 1, diverging: 0, notBefore: 0 }, 'never joined by a re-seed: at once')

  rs.joinedAt = 1_000_000
  noteDivergence(rs, 1_001_000)
  t.match(rs, { divergences: 2, diverging: 1, notBefore: 1_011_000 }, '1 s after a join: 10 s')
  rs.joinedAt = 1_020_000
  noteDivergence(rs, 1_030_000)
  t.match(rs, { divergences: 3, diverging: 2, notBefore: 1_050_000 }, 'again: 20 s')
  rs.joinedAt = 1_060_000
  noteDivergence(rs, 1_060_000 + 599_999)
  t.match(rs, { divergences: 4, diverging: 3 }, 'just under 10 min after the join: soon')
  t.equal(rs.notBefore, 1_060_000 + 599_999 + 40_000, '40 s')

  rs.joinedAt = 2_000_000
  noteDivergence(rs, 2_000_000 + 600_000)
  t.match(rs, { divergences: 5, diverging: 0 }, '10 min after the join: rare')
  t.ok(rs.notBefore <= 2_600_000, 'at once')
  rs.joinedAt = 3_000_000
  noteLeft(rs, 3_001_000)
  t.match(rs, { divergences: 5, diverging: 1, joinedAt: 0 }, 'counted from the join: soon')
  t.equal(rs.notBefore, 3_011_000, '10 s')
  noteLeft(rs, 3_002_000)
  t.equal(rs.diverging, 1, 'counted once, however it left')
})

// ---- JoinedTransport ----------------------------------------------------------------------

/** An inner transport that records what it is handed; the test emits its events. */
class FakeInner extends EventEmitter<TransportEvents> implements Transport {
  readonly applied: Entry[] = []
  readonly calls: string[] = []
  sent = 0
  unacked = 0
  queued = 3
  endsConfirmed = true
  readonly prober: Prober | null = async () => null
  incarnation: string | null = 'proc:4@4'

  apply (entry: Entry): void {
    this.sent = entry.seq
    this.applied.push(entry)
  }

  pause (conn: number): void { this.calls.push(`pause ${conn}`) }
  resume (conn: number): void { this.calls.push(`resume ${conn}`) }
  close (): void { this.calls.push('close') }

  /** Acknowledges the entry it got with local seq `seq`. */
  ack (seq: number): void {
    const e = this.applied.find((x) => x.seq === seq)
    if (!e) throw new Error(`no entry with seq ${seq}`)
    this.emit('ack', e)
  }
}

function joined (): { inner: FakeInner, j: JoinedTransport, acks: Entry[] } {
  const inner = new FakeInner()
  const j = new JoinedTransport(inner)
  const acks: Entry[] = []
  j.on('ack', (e) => acks.push(e))
  return { inner, j, acks }
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

t.test('open(): OPEN then the replay, local seqs 1 and 2, their acks swallowed', async (t) => {
  const { inner, j, acks } = joined()
  const replay = Buffer.from('SET k 1\n')
  j.open(7, replay)
  t.same(inner.applied, [
    { seq: 1, type: 'OPEN', conn: 7 },
    { seq: 2, type: 'DATA', conn: 7, data: replay },
  ])
  t.equal(j.unacked, 0, 'the cut\'s own entries are not the front\'s to wait for')
  inner.ack(1)
  inner.ack(2)
  await tick()
  t.same(acks, [], 'no ack reaches the front for them')

  j.open(8, Buffer.alloc(0))
  t.same(inner.applied.slice(2), [{ seq: 3, type: 'OPEN', conn: 8 }], 'no replay: OPEN alone')
})

t.test('apply(): a known conn goes on with the next local seq, its ack mapped back', async (t) => {
  const { inner, j, acks } = joined()
  j.open(7, Buffer.from('x\n'))
  const data = Buffer.from('INCR s0\n')
  const e1: Entry = { seq: 500, type: 'DATA', conn: 7, data }
  const e2: Entry = { seq: 502, type: 'EOF', conn: 7 }
  j.apply(e1)
  j.apply(e2)
  t.equal(j.sent, 502, 'sent is the front\'s seq')
  t.same(inner.applied.slice(2), [
    { seq: 3, type: 'DATA', conn: 7, data },
    { seq: 4, type: 'EOF', conn: 7 },
  ], 'renumbered 3, 4 in order, data as is')
  t.equal(j.unacked, 2)
  inner.ack(4)
  t.equal(acks[0], e2, 'the ack of local 4 is the front\'s entry 502, the same object')
  inner.ack(3)
  t.same(acks, [e2, e1])
  t.equal(j.unacked, 0)
  inner.ack(3)
  t.equal(acks.length, 2, 'an ack of a seq it no longer waits for is dropped')

  // A connection opened after the cut is this replica's too.
  const open: Entry = { seq: 503, type: 'OPEN', conn: 11 }
  j.apply(open)
  t.same(inner.applied.at(-1), { seq: 5, type: 'OPEN', conn: 11 }, 'a new conn is forwarded')
  inner.ack(5)
  t.equal(acks.at(-1), open)
})

t.test('apply(): a conn it never had is acked asynchronously, not forwarded', async (t) => {
  const { inner, j, acks } = joined()
  j.open(7, Buffer.alloc(0))
  const other: Entry = { seq: 600, type: 'DATA', conn: 9, data: Buffer.from('GET a\n') }
  j.apply(other)
  t.equal(j.sent, 600)
  t.same(acks, [], 'not acked from within apply()')
  await tick()
  t.same(acks, [other], 'acked soon after')
  t.equal(inner.applied.length, 1, 'the inner transport never saw it')
  t.equal(j.unacked, 0)
})

t.test('a CLOSE forgets the conn: what follows of it is acked without the inner', async (t) => {
  const { inner, j, acks } = joined()
  j.open(7, Buffer.alloc(0))
  const close: Entry = { seq: 700, type: 'CLOSE', conn: 7 }
  j.apply(close)
  t.same(inner.applied.at(-1), { seq: 2, type: 'CLOSE', conn: 7 }, 'the CLOSE itself is sent')
  const late: Entry = { seq: 701, type: 'DATA', conn: 7, data: Buffer.from('x\n') }
  j.apply(late)
  await tick()
  t.same(acks, [late], 'the late entry is acked at once')
  t.equal(inner.applied.length, 2, 'and not forwarded')
  inner.ack(2)
  t.same(acks, [late, close])
})

t.test('events pass through; close() stops them', async (t) => {
  const { inner, j, acks } = joined()
  const seen: Array<[string, unknown[]]> = []
  const err = new Error('boom')
  const cases: Array<[keyof TransportEvents, unknown[]]> = [
    ['output', [7, Buffer.from('1\n')]],
    ['output_end', [7, null]],
    ['closed', [7]],
    ['failed', [err]],
    ['conn_failed', [7, err]],
    ['turn', [12]],
    ['control_refused', ['NOAUTH']],
    ['lane_off', ['maxclients']],
    ['unframed', [7, 'bad']],
    ['incarnation', ['proc:5@5']],
  ]
  for (const [name] of cases) {
    j.on(name, (...args: unknown[]) => { seen.push([name, args]) })
  }
  const emit = inner.emit.bind(inner) as (name: string, ...args: unknown[]) => boolean
  for (const [name, args] of cases) emit(name, ...args)
  t.same(seen, cases, 'every event, its arguments as they were')

  t.equal(j.queued, 3, 'queued is the inner\'s')
  t.equal(j.endsConfirmed, true)
  t.equal(j.prober, inner.prober)
  t.equal(j.incarnation, 'proc:4@4')
  j.pause(7)
  j.resume(7)
  t.same(inner.calls, ['pause 7', 'resume 7'])

  j.open(7, Buffer.alloc(0))
  j.apply({ seq: 800, type: 'DATA', conn: 7, data: Buffer.from('a\n') })
  j.apply({ seq: 801, type: 'DATA', conn: 9, data: Buffer.from('b\n') })
  j.close()
  t.same(inner.calls.at(-1), 'close', 'the inner transport is closed')
  const before = seen.length
  for (const [name, args] of cases) emit(name, ...args)
  inner.ack(2)
  await tick()
  t.equal(seen.length, before, 'no event after close()')
  t.same(acks, [], 'no ack after close(), mapped or immediate')
})
