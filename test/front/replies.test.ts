// ReplyAligner: each replica's output made canonical before the OutputStream compares it by
// offset. A fake line protocol frames it: one reply line per request line; a request line
// starting with '?' asks for an uncompared reply (like INFO); a reply line starting with '~'
// is uncompared by its own account (like a pushed message), to make two copies' replies
// disagree; a line starting with '>' is a message the server pushed on its own, uncompared
// (like a MONITOR feed line); a reply starting with '!', or with no request pending, cannot be
// framed. Every canonical chunk also goes through a real OutputStream, which must find no
// mismatch unless a compared reply differs. MONITOR's reply is '+OK\r\n', as Redis's.

import t from 'tap'
import { ReplyAligner, type RawReason } from '../../lib/front/replies.js'
import { OutputStream, type Mismatch } from '../../lib/front/output.js'
import type { ReplyMark, ReplyReader, Request, Session } from '../../lib/protocol/types.js'
import { protocolFor } from '../../lib/protocol/index.js'
import { mulberry32 } from '../helpers/prng.js'

const NL = 0x0a
const BANG = 0x21 // '!'
const TILDE = 0x7e // '~'
const GT = 0x3e // '>'

class LineReader implements ReplyReader {
  error: string | null = null
  private next = 0
  private atStart = true
  private pushed = false
  private feed = false

  constructor (private readonly requests: readonly Request[]) {}

  push (data: Buffer): ReplyMark[] {
    if (this.error !== null) return []
    const marks: ReplyMark[] = []
    for (let i = 0; i < data.length; i++) {
      const c = data[i]
      if (this.atStart) {
        if (c === BANG) {
          this.error = 'cannot frame'
          return marks
        }
        this.pushed = c === TILDE
        this.feed = c === GT
        this.atStart = false
      }
      if (c !== NL) continue
      this.atStart = true
      if (this.feed) {
        marks.push({ end: i + 1, request: null, compare: false })
        continue
      }
      const request = this.requests[this.next]
      if (!request) {
        this.error = 'a reply with no request'
        return marks
      }
      this.next++
      marks.push({ end: i + 1, request, compare: request.compare && !this.pushed })
    }
    return marks
  }
}

class LineSession implements Session {
  readonly fallback = null
  readonly requests: Request[] = []
  private rest = ''

  request (data: Buffer): Request[] {
    const lines = (this.rest + data.toString('latin1')).split('\n')
    this.rest = lines.pop() ?? ''
    const out = lines.map((l) => ({
      name: l.split(' ')[0]?.toLowerCase() ?? '',
      size: l.length + 1,
      replies: 1,
      blocking: false,
      compare: !l.startsWith('?'),
    }))
    this.requests.push(...out)
    return out
  }

  reader (): ReplyReader {
    return new LineReader(this.requests)
  }
}

interface Rig {
  aligner: ReplyAligner
  stream: OutputStream
  session: LineSession
  out: Buffer[][]
  mismatches: Mismatch[]
  ended: number[]
  raws: Array<[number, RawReason, number]>
  replaced: number[]
}

function rig (replicas: number, requests: string, primary = 0): Rig {
  const live = new Array<boolean>(replicas).fill(true)
  const session = new LineSession()
  const stream = new OutputStream(live, primary)
  const out: Buffer[][] = live.map(() => [])
  const r: Rig = {
    stream,
    session,
    out,
    mismatches: [],
    ended: [],
    raws: [],
    replaced: live.map(() => 0),
    aligner: new ReplyAligner(session, live, primary, {
      emit: (i, chunk) => {
        out[i]?.push(chunk)
        // As the front does: a replica whose bytes differ leaves the stream.
        if (!stream.isLive(i)) return
        for (const m of stream.push(i, chunk, 0, 0)) {
          r.mismatches.push(m)
          stream.drop(m.replica, 0)
        }
      },
      ended: (i) => { r.ended.push(i) },
      raw: (i, why, reply, error) => {
        r.raws.push([i, why, reply])
        if ((why === 'reader_error') !== (error !== null)) throw new Error('reader error expected')
      },
      replaced: (i) => { r.replaced[i] = (r.replaced[i] ?? 0) + 1 },
    }),
  }
  session.request(Buffer.from(requests))
  return r
}

function text (r: Rig, i: number): string {
  return Buffer.concat(r.out[i] ?? []).toString('latin1')
}

function feed (r: Rig, i: number, s: string, size = s.length): void {
  for (let k = 0; k < s.length; k += size) r.aligner.output(i, Buffer.from(s.slice(k, k + size)))
}

t.test('no uncompared reply: every chunk is emitted as the same Buffer', async (t) => {
  const r = rig(2, 'GET a\nGET b\nGET c\nGET d\n')
  const p = [Buffer.from('1\n2\n'), Buffer.from('3\n4'), Buffer.from('\n')]
  // The backup: ahead (whole replies), then behind (a partial reply the primary completed).
  const b = [Buffer.from('1\n'), Buffer.from('2\n3'), Buffer.from('\n4\n')]
  r.aligner.output(1, b[0] as Buffer)
  for (const c of p) r.aligner.output(0, c)
  r.aligner.output(1, b[1] as Buffer)
  r.aligner.output(1, b[2] as Buffer)
  t.equal(r.out[0]?.length, 3)
  p.forEach((c, i) => t.equal(r.out[0]?.[i], c, `primary chunk ${i} is the same object`))
  t.equal(r.out[1]?.length, 3)
  b.forEach((c, i) => t.equal(r.out[1]?.[i], c, `backup chunk ${i} is the same object`))
  t.same(r.mismatches, [])
  t.ok(r.stream.inSync)
  t.equal(r.aligner.kept, 0)
  t.ok(r.aligner.idle)
})

t.test('an uncompared reply of another length is replaced by the primary\'s', async (t) => {
  const requests = 'GET a\n?INFO\nGET b\n?TIME\n?TIME\nGET c\n'
  const p = '1\nprimary info, long\n2\n1700000000\n1700000001\n3\n'
  const b = '1\nbk\n2\n17\n1699999999999\n3\n'
  for (const order of ['primary first', 'backup first'] as const) {
    const r = rig(2, requests)
    if (order === 'primary first') {
      feed(r, 0, p)
      feed(r, 1, b)
    } else {
      feed(r, 1, b)
      t.equal(text(r, 1), '1\n', `${order}: held from the first uncompared reply`)
      t.equal(r.aligner.held(1), b.length - 2)
      t.notOk(r.aligner.idle)
      feed(r, 0, p)
    }
    t.equal(text(r, 0), p, `${order}: the primary's output is its own`)
    t.equal(text(r, 1), p, `${order}: the backup's canonical output is the primary's`)
    t.same(r.mismatches, [], `${order}: nothing to compare differs`)
    t.ok(r.stream.inSync)
    t.same(r.replaced, [0, 3], `${order}: three backup replies replaced`)
    t.equal(r.aligner.held(1), 0)
    t.equal(r.aligner.kept, 0, `${order}: remembered replies forgotten once passed`)
    t.ok(r.aligner.idle)
  }
})

t.test('a backup ahead gets the primary\'s reply as the primary produces it', async (t) => {
  const r = rig(2, 'GET a\n?KEYS\nGET b\n')
  feed(r, 1, '1\nzyx\n2\n')
  feed(r, 0, '1\nabcd')
  t.equal(text(r, 1), '1\nabcd', 'its uncompared reply is complete: the primary\'s bytes follow')
  t.equal(r.aligner.held(1), 2, 'its next reply waits')
  t.equal(r.aligner.kept, 4, 'the primary\'s reply in progress')
  t.equal(r.stream.matchedByBackups(), r.stream.end, 'the backup confirmed all the primary sent')
  feed(r, 0, 'ef\n2\n')
  t.equal(text(r, 1), '1\nabcdef\n2\n')
  t.same(r.mismatches, [])
  t.ok(r.stream.inSync)
})

t.test('a compared reply that differs is still caught, at its offset', async (t) => {
  const requests = 'GET a\n?INFO\nGET b\nGET c\n'
  const p = '1\nprimary-info\nabcdefghij\n4\n'
  const at = p.indexOf('ghij')
  // INFO shorter: b's next reply waits for the primary's INFO; as long: in step with it.
  const bs = ['1\nbk\nabcdefXhij\n4\n', '1\nbackup-infoo\nabcdefXhij\n4\n']
  for (const [size, b] of [1, 2, 3, 5, 100].flatMap((n) => bs.map((b) => [n, b] as const))) {
    for (const order of ['primary first', 'backup first', 'alternating'] as const) {
      const r = rig(2, requests)
      if (order === 'primary first') {
        feed(r, 0, p, size)
        feed(r, 1, b, size)
      } else if (order === 'backup first') {
        feed(r, 1, b, size)
        feed(r, 0, p, size)
      } else {
        for (let k = 0; k < Math.max(p.length, b.length); k += size) {
          feed(r, 1, b.slice(k, k + size))
          feed(r, 0, p.slice(k, k + size))
        }
      }
      const offsets = r.mismatches.map((m) => [m.replica, m.offset])
      const what = `${order}, chunks of ${size}, ${b.length} bytes`
      t.same(offsets, [[1, at]], `${what}: one mismatch at the differing byte`)
      const actual = r.mismatches[0]?.actual.toString() ?? ''
      // In step, byte by byte, its bytes after the difference are not kept but for the
      // report: those (up to its end) are what is reported, as one piece.
      const lockstep = order === 'alternating' && size === 1 && b.length === p.length
      t.ok(lockstep ? actual === 'Xhij\n' : actual.startsWith('X'), `${what}: ${actual}`)
    }
  }
})

// The reference's bytes, and what a backup's canonical output must be: the primary's bytes.
interface Script { requests: string, outputs: string[] }

function script (rnd: () => number, replicas: number, replies: number): Script {
  const word = (n: number): string =>
    Array.from({ length: 1 + Math.floor(rnd() * n) }, () =>
      String.fromCharCode(97 + Math.floor(rnd() * 26))).join('')
  let requests = ''
  const outputs = new Array<string>(replicas).fill('')
  for (let i = 0; i < replies; i++) {
    const uncompared = rnd() < 0.35
    requests += uncompared ? '?INFO\n' : 'GET\n'
    const same = word(8)
    for (let r = 0; r < replicas; r++) {
      // Uncompared: each copy its own, sometimes with a common prefix, sometimes equal.
      const own = rnd() < 0.3 ? same : (rnd() < 0.5 ? same.slice(0, 2) : '') + word(12)
      outputs[r] += (uncompared ? own : same) + '\n'
    }
  }
  return { requests, outputs }
}

// Feed every replica's output in random chunks, in a random interleaving.
function run (r: Rig, outputs: readonly string[], rnd: () => number, maxChunk: number): void {
  const at = outputs.map(() => 0)
  for (let guard = 0; guard < 100000; guard++) {
    const left = [...outputs.keys()].filter((i) => (at[i] ?? 0) < (outputs[i] ?? '').length)
    const i = left[Math.floor(rnd() * left.length)]
    if (i === undefined) return
    const from = at[i] ?? 0
    const n = 1 + Math.floor(rnd() * maxChunk)
    feed(r, i, (outputs[i] ?? '').slice(from, from + n))
    at[i] = from + n
  }
}

t.test('random cuts and interleavings: each canonical stream is the primary\'s', async (t) => {
  let runs = 0
  for (let seed = 1; seed <= 400; seed++) {
    const rnd = mulberry32(seed)
    const replicas = 2 + Math.floor(rnd() * 2)
    const { requests, outputs } = script(rnd, replicas, 1 + Math.floor(rnd() * 12))
    const r = rig(replicas, requests)
    run(r, outputs, rnd, seed % 4 === 0 ? 1 : 1 + Math.floor(rnd() * 20))
    const ok = outputs.every((_, i) => text(r, i) === outputs[0]) &&
      r.mismatches.length === 0 && r.stream.inSync && r.aligner.idle && r.aligner.kept === 0 &&
      r.raws.length === 0
    if (!ok) t.fail(`seed ${seed}`, { outputs, got: outputs.map((_, i) => text(r, i)) })
    runs++
  }
  t.equal(runs, 400)
})

t.test('cut at every byte, backup ahead, behind and in step', async (t) => {
  const requests = 'GET\n?INFO\n?INFO\nGET\n'
  const p = 'abc\nprimary one\nxy\nlast\n'
  const b = 'abc\nb1\nxyzzy\nlast\n'
  for (let k = 0; k <= b.length; k++) {
    for (let j = 0; j <= p.length; j += 3) {
      const r = rig(2, requests)
      feed(r, 1, b.slice(0, k))
      feed(r, 0, p.slice(0, j))
      feed(r, 1, b.slice(k))
      feed(r, 0, p.slice(j))
      if (text(r, 1) !== p || r.mismatches.length > 0) {
        t.fail(`backup cut at ${k}, primary at ${j}`, { got: text(r, 1) })
      }
    }
  }
  t.pass('all cuts')
})

t.test('promotion', async (t) => {
  t.test('mid-hold: the new primary\'s held output is its own', async (t) => {
    const r = rig(3, 'GET\n?INFO\nGET\n?TIME\n')
    feed(r, 1, '1\nb-info\n2\nb-time\n') // b ahead: waits for the primary's INFO
    t.equal(r.aligner.end(1), false, 'its server closed the connection after TIME')
    feed(r, 0, '1\n')
    feed(r, 2, '1\n')
    t.equal(text(r, 1), '1\n')
    r.aligner.drop(0)
    r.mismatches.push(...r.stream.promote(1, 0, 0))
    t.equal(r.aligner.promote(1), true)
    t.equal(r.aligner.primary, 1)
    t.equal(text(r, 1), '1\nb-info\n2\nb-time\n', 'emitted as its own')
    t.same(r.ended, [1], 'then its end')
    feed(r, 2, 'c-info\n2\nc-time\n')
    t.equal(text(r, 2), '1\nb-info\n2\nb-time\n', 'the third replica gets the new primary\'s')
    t.same(r.mismatches, [])
    t.ok(r.stream.inSync)
    t.equal(r.aligner.kept, 0)
  })

  t.test('what the old primary completed stays, for the new primary too', async (t) => {
    const r = rig(3, 'GET\n?INFO\nGET\n?TIME\n')
    feed(r, 0, '1\na-info\n2\n') // the old primary dies before TIME
    feed(r, 2, '1\nc-info\n2\nc-time\n')
    r.aligner.drop(0)
    r.mismatches.push(...r.stream.promote(1, 0, 0))
    t.equal(r.aligner.promote(1), true, 'b is behind: it catches up')
    feed(r, 1, '1\nb-info\n2\nb-time\n')
    t.equal(text(r, 1), '1\na-info\n2\nb-time\n', 'INFO: the old primary\'s; TIME: its own')
    t.equal(text(r, 2), '1\na-info\n2\nb-time\n', 'the same for the third')
    t.same(r.replaced, [0, 1, 2])
    t.same(r.mismatches, [])
    t.ok(r.stream.inSync)
  })

  t.test('its own reply, already differing from the old primary\'s, is gone', async (t) => {
    const r = rig(2, 'GET\n?INFO\n')
    feed(r, 1, '1\nb-info\n')
    feed(r, 0, '1\na-in')
    t.equal(text(r, 1), '1\na-in', 'the primary\'s bytes replace its own as far as they go')
    r.aligner.drop(0)
    t.equal(r.aligner.promote(1), false, 'it cannot be spliced')
    t.same(r.raws.map(([i, why]) => [i, why]), [[1, 'reference_unframed']])
  })

  t.test('a common prefix with the old primary is kept: it splices', async (t) => {
    const r = rig(3, 'GET\n?INFO\nGET\n')
    feed(r, 0, '1\nServer:v')
    feed(r, 1, '1\nServer:version7\n3\n')
    t.equal(text(r, 1), '1\nServer:v', 'the bytes both have passed')
    r.aligner.drop(0)
    r.mismatches.push(...r.stream.promote(1, 0, 0))
    t.equal(r.aligner.promote(1), true)
    t.equal(text(r, 1), '1\nServer:version7\n3\n')
    feed(r, 2, '1\nServer:v6\n3\n')
    t.equal(text(r, 2), '1\nServer:version7\n3\n', 'a third replica gets that whole reply')
    t.same(r.mismatches, [])
    t.ok(r.stream.inSync)
  })

  t.test('the old primary\'s unfinished reply is forgotten', async (t) => {
    const r = rig(3, 'GET\n?INFO\nGET\n')
    feed(r, 0, '1\na-in')
    r.aligner.drop(0)
    r.mismatches.push(...r.stream.promote(1, 0, 0))
    t.equal(r.aligner.promote(1), true, 'b is behind: nothing of INFO confirmed')
    feed(r, 1, '1\nb-info\n3\n')
    feed(r, 2, '1\nc-info\n3\n')
    t.equal(text(r, 2), '1\nb-info\n3\n')
    t.same(r.mismatches, [])
  })

  t.test('a new primary catching up takes over at the old one\'s unfinished reply', async (t) => {
    const r = rig(3, 'GET\nGET\n?INFO\nGET\n')
    feed(r, 0, '1\n')
    feed(r, 2, '1\n2\nc-info\n4\n') // c ahead: waits for INFO
    r.aligner.drop(0)
    r.mismatches.push(...r.stream.promote(1, 0, 0))
    t.equal(r.aligner.promote(1), true)
    feed(r, 1, '1\n2\n') // whole compared replies, across the old primary's last one
    feed(r, 1, 'b-info\n4\n')
    t.equal(text(r, 1), '1\n2\nb-info\n4\n')
    t.equal(text(r, 2), '1\n2\nb-info\n4\n')
    t.same(r.raws, [])
    t.same(r.mismatches, [])
    t.ok(r.stream.inSync)
  })

  t.test('switchover in the middle of an uncompared reply', async (t) => {
    const r = rig(2, 'GET\n?INFO\n')
    feed(r, 0, '1\nServ')
    feed(r, 1, '1\nServ')
    t.ok(r.aligner.idle && r.stream.inSync)
    t.equal(r.aligner.promote(1), true)
    t.ok(r.stream.swap(1, 0))
    feed(r, 1, 'er-b\n')
    feed(r, 0, 'er-a\n')
    t.equal(text(r, 0), '1\nServer-b\n', 'the rest of the new primary\'s reply')
    t.same(r.mismatches, [])
    t.ok(r.stream.inSync)
  })

  t.test('switchover: the old primary goes on as a backup', async (t) => {
    const r = rig(2, 'GET\n?INFO\nGET\n?TIME\n')
    feed(r, 0, '1\na-info\n')
    feed(r, 1, '1\nb-info\n')
    t.ok(r.aligner.idle && r.stream.inSync)
    t.equal(r.aligner.promote(1), true)
    t.ok(r.stream.swap(1, 0))
    feed(r, 0, '2\na-time\n')
    feed(r, 1, '2\nb-time\n')
    t.equal(text(r, 0), '1\na-info\n2\nb-time\n', 'the old primary now gets the new one\'s')
    t.equal(text(r, 1), '1\na-info\n2\nb-time\n')
    t.same(r.mismatches, [])
    t.ok(r.stream.inSync)
  })
})

t.test('random failovers: the new primary\'s stream is spliceable and right', async (t) => {
  let spliced = 0
  let refused = 0
  for (let seed = 1; seed <= 300; seed++) {
    const rnd = mulberry32(seed * 7919)
    const { requests, outputs } = script(rnd, 2, 2 + Math.floor(rnd() * 8))
    const [a, b] = outputs as [string, string]
    const r = rig(2, requests)
    const cutA = Math.floor(rnd() * (a.length + 1))
    const cutB = Math.floor(rnd() * (b.length + 1))
    run(r, [a.slice(0, cutA), b.slice(0, cutB)], rnd, 6)
    r.aligner.drop(0)
    r.mismatches.push(...r.stream.promote(1, 0, 0))
    const ok = r.aligner.promote(1)
    run(r, ['', b.slice(cutB)], rnd, 6)
    if (!ok) {
      refused++
      continue
    }
    // Replies the old primary completed are its own if uncompared; the rest are b's.
    const done = a.slice(0, cutA).split('\n').length - 1
    const uncompared = requests.split('\n').map((q) => q.startsWith('?'))
    const aLines = a.split('\n')
    const expected = b.split('\n').slice(0, -1)
      .map((l, i) => (i < done && uncompared[i] ? aLines[i] : l) + '\n').join('')
    if (text(r, 1) !== expected || r.mismatches.length > 0 || !r.stream.inSync) {
      t.fail(`seed ${seed}`, { got: text(r, 1), expected, mismatches: r.mismatches.length })
    }
    spliced++
  }
  t.ok(spliced > 0 && refused > 0, `both cases: ${spliced} spliced, ${refused} refused`)
})

t.test('output that cannot be framed passes raw', async (t) => {
  t.test('a backup\'s', async (t) => {
    const r = rig(2, 'GET\n?INFO\n')
    feed(r, 0, '1\na-info\n')
    feed(r, 1, '1\nb-info\nextra\nmore')
    t.equal(text(r, 1), '1\na-info\nextra\nmore', 'framed replies aligned, the rest raw')
    t.same(r.raws, [[1, 'reader_error', 2]])
    t.equal(r.mismatches.length, 0, 'the comparison decides: nothing to compare it with yet')
    feed(r, 0, 'x\n') // the primary cannot frame this either
    t.same(r.raws.map(([i, why]) => [i, why]), [[1, 'reader_error'], [0, 'reader_error']])
    t.equal(r.mismatches.length, 1, 'extra vs x: raw bytes compared')
  })

  t.test('the primary\'s: every replica passes raw, what it held first', async (t) => {
    const r = rig(3, 'GET\n?INFO\nGET\n')
    feed(r, 1, '1\nb-info\n2\n') // b waits for the primary's INFO
    feed(r, 0, '1\n!unframed')
    t.same(r.raws.map(([i, why]) => [i, why]),
      [[0, 'reader_error'], [1, 'reference_unframed'], [2, 'reference_unframed']])
    t.equal(text(r, 0), '1\n!unframed')
    t.equal(text(r, 1), '1\nb-info\n2\n', 'what b held, then raw')
    feed(r, 2, '1\nc-info\n2\n')
    t.equal(text(r, 2), '1\nc-info\n2\n', 'raw from the start')
    t.equal(r.mismatches[0]?.replica, 1, 'the byte comparison decides')
  })
})

t.test('replies that disagree on their flag are reported misaligned', async (t) => {
  for (const order of ['primary first', 'backup first'] as const) {
    const r = rig(2, 'GET\nGET\nGET\n')
    const p = '1\n2\n3\n'
    const b = '1\n~pushed\n3\n' // b takes its second reply for uncompared
    if (order === 'primary first') {
      feed(r, 0, p)
      feed(r, 1, b)
    } else {
      feed(r, 1, b)
      feed(r, 0, p)
    }
    t.same(r.raws, [[1, 'misaligned', 1]], order)
    t.ok(r.mismatches.length > 0, `${order}: and its bytes then differ`)
  }
  const r = rig(2, 'GET\n?INFO\n')
  feed(r, 1, '1\nb-info\n') // passed as compared by b? no: uncompared, waits
  feed(r, 0, '1\n~x\n')
  t.same(r.raws, [], 'both uncompared: aligned')
  const q = rig(2, 'GET\nGET\n')
  feed(q, 1, '1\n2\n') // b passed reply 1 as compared, ahead of the primary
  feed(q, 0, '1\n~2\n')
  t.same(q.raws, [[1, 'misaligned', 2]], 'the primary flags a reply b already passed')
})

t.test('ends', async (t) => {
  t.test('a backup ending while it holds output ends once that is emitted', async (t) => {
    const r = rig(2, 'GET\n?INFO\nQUIT\n')
    feed(r, 1, '1\nb-info\nOK\n')
    t.equal(r.aligner.end(1), false, 'not yet: its INFO waits for the primary\'s')
    feed(r, 0, '1\na-info')
    t.same(r.ended, [])
    feed(r, 0, '\nOK\n')
    t.same(r.ended, [1])
    t.equal(text(r, 1), '1\na-info\nOK\n')
    t.equal(r.aligner.end(0), true)
    t.same(r.mismatches, [])
  })

  t.test('nothing held: it ends at once', async (t) => {
    const r = rig(2, 'GET\n')
    feed(r, 0, '1\n')
    feed(r, 1, '1\n')
    t.equal(r.aligner.end(1), true)
    t.same(r.ended, [])
  })

  t.test('the primary ended: what a backup holds is its own', async (t) => {
    const r = rig(2, 'GET\n?INFO\nGET\n')
    feed(r, 1, '1\nb-info\n2\n')
    feed(r, 0, '1\n')
    t.equal(r.aligner.end(1), false)
    t.equal(r.aligner.end(0), true)
    t.same(r.ended, [1])
    t.equal(text(r, 1), '1\nb-info\n2\n')
    const q = rig(2, 'GET\n?INFO\nGET\n')
    feed(q, 0, '1\n')
    t.equal(q.aligner.end(0), true)
    feed(q, 1, '1\nb-info\n2\n')
    t.equal(q.aligner.end(1), true, 'ends at once')
    t.equal(text(q, 1), '1\nb-info\n2\n')
  })
})

t.test('held and kept sizes, and what dropping a replica frees', async (t) => {
  const r = rig(3, 'GET\n?INFO\n?TIME\nGET\n')
  feed(r, 0, '1\nprimary-info\n')
  t.equal(r.aligner.kept, 13, 'the uncompared reply, kept for the backups')
  feed(r, 1, '1\nb-info\nb-t\n4\n')
  t.equal(r.aligner.kept, 13, 'c has not passed it yet')
  t.equal(r.aligner.held(1), 6, 'b\'s TIME, complete, and what follows it')
  r.aligner.drop(2)
  t.equal(r.aligner.kept, 0, 'nobody needs it any more')
  feed(r, 0, 'a-t')
  t.equal(r.aligner.kept, 3, 'the primary\'s reply in progress')
  t.equal(r.aligner.held(1), 2, 'b\'s own TIME is not kept once it differs')
  feed(r, 0, 'ime\n4\n')
  t.equal(r.aligner.held(1), 0)
  t.equal(r.aligner.kept, 0)
  t.equal(text(r, 1), '1\nprimary-info\na-time\n4\n')
  t.same(r.mismatches, [])
})

// ---- MONITOR: mirrored from the primary's +OK on -----------------------------------------

const OK = '+OK\r\n'

t.test('MONITOR: each backup\'s canonical output is the primary\'s feed', async (t) => {
  const requests = 'GET\nMONITOR\n'
  const p = `1\n${OK}>p 1\n>p 2\n`
  const b = `1\n${OK}>b 1 other clock\n>b 2\n>b 3 a probe\n`
  for (const order of ['primary first', 'backup first'] as const) {
    const r = rig(2, requests)
    if (order === 'primary first') {
      feed(r, 0, p)
      feed(r, 1, b)
    } else {
      feed(r, 1, b)
      t.equal(text(r, 1), '1\n', `${order}: its MONITOR reply waits for the primary's`)
      t.equal(r.aligner.held(1), b.length - 2)
      t.notOk(r.aligner.idle)
      feed(r, 0, p)
    }
    t.equal(text(r, 0), p, `${order}: the primary's output is its own`)
    t.equal(text(r, 1), p, `${order}: the backup's is the primary's`)
    t.same(r.mismatches, [], `${order}: no mismatch`)
    t.ok(r.stream.inSync)
    t.same(r.replaced, [0, 3], `${order}: the backup's feed lines counted, one per line`)
    t.same(r.raws, [])
    t.equal(r.aligner.held(1), 0)
    t.equal(r.aligner.kept, 0, `${order}: nothing kept once every backup is mirrored`)
    t.ok(r.aligner.idle)
    feed(r, 0, '>p 3\n')
    feed(r, 1, '>b 4\n')
    t.equal(text(r, 1), `${p}>p 3\n`, `${order}: later lines forwarded as they come`)
  }
})

t.test('MONITOR: later replies on the connection, RESET\'s too, are the primary\'s', async (t) => {
  const r = rig(2, 'MONITOR\nPING\nRESET\nGET\n')
  const p = `${OK}>p 1\n+PONG\n>p 2\n+RESET\n1\n`
  feed(r, 1, `${OK}+PONG\n>b 1\n+RESET\n2\n`, 3)
  feed(r, 0, p, 4)
  t.equal(text(r, 1), p, 'the mirror lasts for the rest of the connection')
  t.same(r.mismatches, [], 'GET answered 2 by the backup: not compared any more')
  t.same(r.replaced, [0, 4])
  t.ok(r.stream.inSync)
})

t.test('a MONITOR reply that starts no feed changes nothing', async (t) => {
  for (const reply of ['-ERR not now\n', '+QUEUED\r\n']) {
    for (const order of ['primary first', 'backup first'] as const) {
      const r = rig(2, 'MONITOR\nGET\n?INFO\nGET\n')
      const p = `${reply}1\np-info\n3\n`
      const b = `${reply}1\nb-info\nX\n`
      if (order === 'primary first') {
        feed(r, 0, p)
        feed(r, 1, b)
      } else {
        feed(r, 1, b)
        feed(r, 0, p)
      }
      const what = `${JSON.stringify(reply)}, ${order}`
      t.same(r.mismatches.map((m) => m.offset), [p.indexOf('3\n')], `${what}: still compared`)
      t.same(r.replaced, [0, 1], `${what}: INFO replaced`)
    }
  }
})

t.test('a feed line reaches the backups whole', async (t) => {
  const r = rig(2, 'MONITOR\n')
  feed(r, 1, OK)
  feed(r, 0, `${OK}>p 1\n>p`)
  t.equal(text(r, 1), `${OK}>p 1\n`, 'not the line the primary is in')
  t.equal(r.aligner.kept, 2, 'the primary\'s line in progress')
  t.notOk(r.aligner.idle, 'a backup waits for the rest of the line')
  t.equal(r.stream.matchedByBackups(), OK.length + 5)
  feed(r, 0, ' 2\n')
  t.equal(text(r, 1), `${OK}>p 1\n>p 2\n`)
  t.equal(r.aligner.kept, 0)
  t.ok(r.aligner.idle && r.stream.inSync)
})

// A connection that goes MONITOR after some replies, each copy with a feed of its own.
function monitorScript (rnd: () => number, replicas: number): Script {
  const before = script(rnd, replicas, Math.floor(rnd() * 6))
  const outputs = before.outputs.map((o, i) => {
    let feed = ''
    const lines = Math.floor(rnd() * 8)
    for (let k = 0; k < lines; k++) feed += `>${i} ${k} ${'x'.repeat(Math.floor(rnd() * 9))}\n`
    return `${o}${OK}${feed}`
  })
  return { requests: `${before.requests}MONITOR\n`, outputs }
}

t.test('MONITOR, random cuts and interleavings: the primary\'s feed everywhere', async (t) => {
  let runs = 0
  for (let seed = 1; seed <= 300; seed++) {
    const rnd = mulberry32(seed * 31)
    const replicas = 2 + Math.floor(rnd() * 2)
    const { requests, outputs } = monitorScript(rnd, replicas)
    const r = rig(replicas, requests)
    run(r, outputs, rnd, seed % 3 === 0 ? 1 : 1 + Math.floor(rnd() * 16))
    const unc = requests.split('\n').filter((q) => q.startsWith('?')).length
    const lines = outputs.map((o) => o.split('\n').filter((l) => l.startsWith('>')).length)
    const ok = outputs.every((_, i) => text(r, i) === outputs[0]) &&
      r.mismatches.length === 0 && r.stream.inSync && r.aligner.idle && r.aligner.kept === 0 &&
      r.raws.length === 0 && r.replaced.every((n, i) => n === (i === 0 ? 0 : unc + (lines[i] ?? 0)))
    if (!ok) t.fail(`seed ${seed}`, { outputs, got: outputs.map((_, i) => text(r, i)) })
    runs++
  }
  t.equal(runs, 300)
})

t.test('MONITOR and promotion', async (t) => {
  t.test('failover: the new primary goes on from a line of its own', async (t) => {
    const r = rig(3, 'GET\nMONITOR\n')
    feed(r, 0, `1\n${OK}>a 1\n>a 2`) // dies inside a line
    feed(r, 1, `1\n${OK}>b 1\n>b`) // inside a line of its own
    feed(r, 2, `1\n${OK}>c 1\n`)
    const before = `1\n${OK}>a 1\n`
    t.equal(text(r, 1), before)
    r.aligner.drop(0)
    r.mismatches.push(...r.stream.promote(1, 0, 0))
    t.equal(r.aligner.promote(1), true)
    t.equal(r.aligner.primary, 1)
    feed(r, 1, ' 2\n>b 3\n')
    feed(r, 2, '>c 2\n')
    t.equal(text(r, 1), `${before}>b 3\n`, 'the rest of its line dropped, then its own')
    t.equal(text(r, 2), `${before}>b 3\n`, 'the third replica gets the new primary\'s')
    t.same(r.replaced, [0, 2, 2])
    t.same(r.mismatches, [])
    t.ok(r.stream.inSync)
    t.equal(r.aligner.kept, 0)
  })

  t.test('failover after the client got part of a line: the splice fails', async (t) => {
    const r = rig(2, 'MONITOR\n')
    feed(r, 1, `${OK}>b 1\n`)
    feed(r, 0, `${OK}>a 1\n>a 2`)
    r.stream.commitTo(r.stream.end)
    t.equal(Buffer.concat(r.stream.take()).toString(), `${OK}>a 1\n>a 2`)
    r.aligner.drop(0)
    r.mismatches.push(...r.stream.promote(1, 0, 0))
    t.equal(r.aligner.promote(1), true)
    feed(r, 1, '>b 2\n')
    t.same(r.mismatches.map((m) => [m.replica, m.offset]), [[1, OK.length + 6]],
      'the new primary cannot reproduce what the client has')
  })

  t.test('a new primary not at the feed yet: the old feed, then its own', async (t) => {
    const r = rig(3, 'GET\nMONITOR\n')
    feed(r, 0, `1\n${OK}>a 1\n>a 2\n`)
    feed(r, 2, `1\n${OK}>c 1\n`)
    feed(r, 1, '1\n')
    t.equal(r.aligner.kept, 10, 'the feed, for b')
    r.aligner.drop(0)
    r.mismatches.push(...r.stream.promote(1, 0, 0))
    t.equal(r.aligner.promote(1), true)
    feed(r, 1, `${OK}>b 1\n`)
    const want = `1\n${OK}>a 1\n>a 2\n>b 1\n`
    t.equal(text(r, 1), want)
    t.equal(text(r, 2), want)
    t.same(r.mismatches, [])
    t.ok(r.stream.inSync)
    t.equal(r.aligner.kept, 0)
  })

  t.test('switchover: the old primary goes on mirrored', async (t) => {
    const r = rig(2, 'MONITOR\n')
    feed(r, 0, `${OK}>a 1\n`)
    feed(r, 1, `${OK}>b 1\n`)
    t.ok(r.aligner.idle && r.stream.inSync)
    t.equal(r.aligner.promote(1), true)
    t.ok(r.stream.swap(1, 0))
    feed(r, 0, '>a 2\n')
    feed(r, 1, '>b 2\n')
    t.equal(text(r, 0), `${OK}>a 1\n>b 2\n`)
    t.equal(text(r, 1), `${OK}>a 1\n>b 2\n`)
    t.same(r.replaced, [1, 1])
    t.same(r.mismatches, [])
    t.ok(r.stream.inSync)
  })
})

t.test('MONITOR: ends', async (t) => {
  t.test('a mirrored backup ends with the primary', async (t) => {
    const r = rig(2, 'MONITOR\n')
    feed(r, 0, `${OK}>a 1\n`)
    feed(r, 1, `${OK}>b 1\n>b 2\n`)
    t.equal(r.aligner.end(1), false, 'its output is the primary\'s, which goes on')
    feed(r, 0, '>a 2\n>a 3')
    t.same(r.ended, [])
    t.equal(r.aligner.end(0), true)
    t.same(r.ended, [1])
    t.equal(text(r, 1), `${OK}>a 1\n>a 2\n>a 3`, 'the primary\'s last line, whole or not')
    t.ok(r.stream.inSync)
  })

  t.test('after the primary\'s end: at once', async (t) => {
    const r = rig(2, 'MONITOR\n')
    feed(r, 0, `${OK}>a 1\n`)
    t.equal(r.aligner.end(0), true)
    feed(r, 1, `${OK}>b 1\n`)
    t.equal(r.aligner.end(1), true)
    t.equal(text(r, 1), `${OK}>a 1\n`)
    t.same(r.mismatches, [])
  })
})

t.test('MONITOR: a backup not at the feed is what keeps it', async (t) => {
  const r = rig(3, 'MONITOR\n')
  feed(r, 0, `${OK}>a 1\n`)
  feed(r, 1, `${OK}>b 1\n`)
  t.equal(r.aligner.kept, 5, 'c has not passed its MONITOR reply')
  r.aligner.drop(2)
  t.equal(r.aligner.kept, 0)
  const q = rig(2, 'GET\nMONITOR\n')
  feed(q, 1, '1\n>pushed\n') // b's second reply is not its MONITOR reply
  feed(q, 0, `1\n${OK}`)
  t.same(q.raws, [[1, 'misaligned', 1]], 'misaligned')
})

// What the new primary b's canonical output must be after a failover from a, both cut
// anywhere (see the header of lib/front/replies.ts).
function afterFailover (
  requests: string, a: string, b: string, cutA: number, cutB: number
): string {
  const aFeed = a.indexOf(OK) + OK.length
  const bFeed = b.indexOf(OK) + OK.length
  if (cutA < aFeed) {
    // Not mirrored yet: as without MONITOR.
    const done = a.slice(0, cutA).split('\n').length - 1
    const uncompared = requests.split('\n').map((q) => q.startsWith('?'))
    const aLines = a.split('\n')
    return b.split('\n').slice(0, -1)
      .map((l, i) => (i < done && uncompared[i] === true ? aLines[i] : l) + '\n').join('')
  }
  // a's output to its MONITOR reply, its whole feed lines, then b's from a line of its own.
  const aLines = a.slice(0, a.lastIndexOf('\n', cutA - 1) + 1)
  // b not at its feed yet: all its feed; else from its next line (outputs end with one).
  const atLine = cutB < bFeed || b[cutB - 1] === '\n'
  const from = atLine ? Math.max(cutB, bFeed) : b.indexOf('\n', cutB) + 1
  return aLines + b.slice(from)
}

t.test('MONITOR, random failovers: the new primary\'s stream is right', async (t) => {
  let mirrored = 0
  for (let seed = 1; seed <= 300; seed++) {
    const rnd = mulberry32(seed * 104729)
    const { requests, outputs } = monitorScript(rnd, 2)
    const [a, b] = outputs as [string, string]
    const r = rig(2, requests)
    const cutA = Math.floor(rnd() * (a.length + 1))
    const cutB = Math.floor(rnd() * (b.length + 1))
    run(r, [a.slice(0, cutA), b.slice(0, cutB)], rnd, 6)
    r.aligner.drop(0)
    r.mismatches.push(...r.stream.promote(1, 0, 0))
    if (!r.aligner.promote(1)) continue // its own uncompared reply was lost (see above)
    run(r, ['', b.slice(cutB)], rnd, 6)
    if (cutA >= a.indexOf(OK) + OK.length) mirrored++
    const expected = afterFailover(requests, a, b, cutA, cutB)
    if (text(r, 1) !== expected || r.mismatches.length > 0 || !r.stream.inSync) {
      t.fail(`seed ${seed}`, { a, b, cutA, cutB, got: text(r, 1), expected })
    }
  }
  t.ok(mirrored > 50, `${mirrored} failovers while mirrored`)
})

t.test('MONITOR with Redis\'s own framing (resp)', async (t) => {
  const session = protocolFor('resp').session()
  const out: string[] = ['', '']
  const replaced = [0, 0]
  const aligner = new ReplyAligner(session, [true, true], 0, {
    emit: (i, chunk) => { out[i] += chunk.toString() },
    ended: () => {},
    raw: (i, why) => { t.fail(`raw ${i} ${why}`) },
    replaced: (i) => { replaced[i] = (replaced[i] ?? 0) + 1 },
  })
  session.request(Buffer.from('*1\r\n$4\r\nPING\r\n*1\r\n$7\r\nMONITOR\r\n'))
  const line = (t: string, port: number, cmd: string): string =>
    `+${t} [0 127.0.0.1:${port}] "${cmd}"\r\n`
  const p = `+PONG\r\n+OK\r\n${line('1700000000.000001', 5000, 'incr')}`
  aligner.output(1, Buffer.from(`+PONG\r\n+OK\r\n${line('1700000000.000002', 6000, 'ping')}`))
  aligner.output(1, Buffer.from(line('1700000000.000003', 5000, 'incr')))
  aligner.output(0, Buffer.from(p))
  t.equal(out[0], p)
  t.equal(out[1], p, 'the backup gets the primary\'s feed')
  t.same(replaced, [0, 2], 'its own two feed lines dropped')
})

t.test('MONITOR: output that cannot be framed', async (t) => {
  const r = rig(3, 'MONITOR\n')
  feed(r, 1, `${OK}>b 1\n`)
  feed(r, 2, `${OK}>c 1\n>c`) // inside a line
  feed(r, 0, `${OK}>a 1\n!a`) // the primary's framing fails, in the chunk the feed starts
  feed(r, 1, '!b') // b's too: its own output is dropped anyway
  t.equal(text(r, 1), `${OK}>a 1\n!a`, 'the primary\'s, forwarded as it comes')
  feed(r, 0, ' 2')
  t.equal(text(r, 2), `${OK}>a 1\n!a 2`)
  t.same(r.raws, [], 'nothing passes raw')
  t.same(r.mismatches, [])
  t.equal(r.aligner.promote(1), false, 'b cannot find a line of its own to start at')
  t.equal(r.aligner.promote(2), true, 'c can')
  feed(r, 2, ' 2\n>c 3\n')
  t.equal(text(r, 2), `${OK}>a 1\n!a 2>c 3\n`)
})
