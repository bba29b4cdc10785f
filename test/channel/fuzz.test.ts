// Log channel codec fuzz: seeded (FUZZ_SEED=n to replay), bounded in iterations and time.
// Valid streams re-chunked at random decode to the same frames; mutated and random streams
// decode or fail with ERR_FTPROXY_FRAME, the same way however they are chunked, and never
// hold more than maxFrame + 4 bytes.

import t from 'tap'
import type { Test } from 'tap'
import { isDeepStrictEqual } from 'node:util'
import {
  FrameDecoder, FrameType, MAX_STRING, encode, type Frame, type FrameName,
} from '../../lib/channel/codec.js'
import { FtproxyError } from '../../lib/errors.js'
import { mulberry32 } from '../helpers/prng.js'

const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed1e55) >>> 0
const ITERATIONS = 20000
const BUDGET_MS = 5000 // per subtest
const MAX_FRAME = 4096 // small, so that limits are reached often
const U32 = 0xffffffff
const MAX = Number.MAX_SAFE_INTEGER

t.comment(`FUZZ_SEED=${SEED}`)

class Gen {
  readonly rand: () => number

  constructor (seed: number) {
    this.rand = mulberry32(seed)
  }

  int (n: number): number {
    return Math.floor(this.rand() * n)
  }

  pick<T> (xs: readonly T[]): T {
    const x = xs[this.int(xs.length)]
    if (x === undefined) throw new RangeError('pick from an empty list')
    return x
  }

  // Boundary values half of the time: that is where codecs break.
  u16 (): number {
    return this.rand() < 0.5 ? this.pick([0, 1, 0xffff]) : this.int(0x10000)
  }

  u32 (): number {
    return this.rand() < 0.5 ? this.pick([0, 1, 0xff, 0x100, U32 - 1, U32]) : this.int(U32 + 1)
  }

  u64 (): number {
    return this.rand() < 0.5
      ? this.pick([0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 52, MAX - 1, MAX])
      : this.int(MAX)
  }

  bytes (n: number): Buffer {
    const b = Buffer.allocUnsafe(n)
    for (let i = 0; i < n; i++) b[i] = this.int(256)
    return b
  }

  data (): Buffer {
    const r = this.rand()
    return this.bytes(r < 0.8
      ? 1 + this.int(64)
      : r < 0.95 ? 1 + this.int(1024) : MAX_FRAME - 17 - this.int(4))
  }

  str (maxBytes: number): string {
    const chars = [
      'a', 'Z', '0', ' ', '\u0000', '\n', 'é', 'ß', '日', '€', '\ufeff', '\uffff', '😀', '𝄞',
    ]
    let s = ''
    const n = this.rand() < 0.1 ? maxBytes : this.int(Math.min(maxBytes, 40))
    while (true) {
      const c = this.pick(chars)
      if (Buffer.byteLength(s + c) > n) return s
      s += c
    }
  }

  frame (): Frame {
    const type = this.pick(Object.keys(FrameType) as FrameName[])
    const epoch = this.u32()
    switch (type) {
      case 'HELLO': {
        const length = this.rand() < 0.7 ? this.int(4) : this.int(200)
        const resume = Array.from({ length }, () => ({ conn: this.u32(), offset: this.u64() }))
        // Properties are evaluated in order: keep it, so a seed replays the same frames.
        const version = this.u16()
        const frontId = this.str(MAX_STRING)
        return { type, epoch, version, frontId, window: this.u32(), protocol: 'raw', resume }
      }
      case 'WELCOME': {
        const length = this.rand() < 0.7 ? this.int(4) : this.int(300)
        const acks = Array.from({ length }, () => ({ conn: this.u32(), seq: this.u64() }))
        const version = this.u16()
        const applied = this.u64()
        // Short, as real ones are: with 300 acks, a long one would not fit MAX_FRAME.
        return { type, epoch, version, applied, incarnation: this.str(64), acks }
      }
      case 'OPEN':
      case 'EOF':
      case 'CLOSE':
        return { type, epoch, seq: this.u64(), conn: this.u32() }
      case 'DATA':
        return { type, epoch, seq: this.u64(), conn: this.u32(), data: this.data() }
      case 'ACK':
      case 'SYNC':
      case 'SYNCED':
        return { type, epoch, seq: this.u64() }
      case 'OUT':
        return { type, epoch, conn: this.u32(), offset: this.u64(), data: this.data() }
      case 'OUT_EOF':
        return { type, epoch, conn: this.u32(), offset: this.u64(), reset: this.rand() < 0.5 }
      case 'OUT_CLOSE':
        return { type, epoch, conn: this.u32() }
      case 'OUT_ACK':
        return { type, epoch, conn: this.u32(), offset: this.u64() }
      case 'HEARTBEAT':
        return { type, epoch }
      case 'ERROR':
        return { type, epoch, code: this.str(MAX_STRING), message: this.str(MAX_STRING) }
    }
  }

  frames (max: number): Frame[] {
    return Array.from({ length: 1 + this.int(max) }, () => this.frame())
  }

  /** `buf` cut into subarrays: single bytes, small pieces, large pieces, some empty. */
  chunks (buf: Buffer): Buffer[] {
    const out: Buffer[] = []
    const mode = this.int(4)
    let at = 0
    while (at < buf.length) {
      const n = mode === 0 && buf.length < 2000
        ? 1
        : mode === 1 ? this.int(8) : mode === 2 ? this.int(300) : this.int(buf.length + 1)
      out.push(buf.subarray(at, at + n))
      at += n
    }
    return out
  }

  /** A valid stream with a few bytes flipped, inserted or deleted, or a length field rewritten. */
  mutate (buf: Buffer): Buffer {
    let b = Buffer.from(buf)
    for (let n = 1 + this.int(4); n > 0; n--) {
      const at = this.int(b.length + 1)
      switch (this.int(5)) {
        case 0: {
          const v = b[at] // undefined past the end
          if (v !== undefined) b[at] = v ^ (1 << this.int(8))
          break
        }
        case 1:
          if (at < b.length) b[at] = this.pick([0, 1, 2, 0x7f, 0x80, 0xff])
          break
        case 2:
          b = Buffer.concat([b.subarray(0, at), this.bytes(1 + this.int(3)), b.subarray(at)])
          break
        case 3:
          b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + this.int(3))])
          break
        case 4:
          if (at + 4 <= b.length) {
            const lengths = [0, 4, 5, 6, 13, 17, MAX_FRAME, MAX_FRAME + 1, U32, this.int(MAX_FRAME)]
            b.writeUInt32BE(this.pick(lengths), at)
          }
      }
    }
    return b
  }

  /** Bytes that pass the length check and start with a plausible type: reaches the body checks. */
  plausible (): Buffer {
    const parts: Buffer[] = []
    for (let n = 1 + this.int(4); n > 0; n--) {
      const len = this.rand() < 0.8 ? 5 + this.int(40) : 5 + this.int(MAX_FRAME - 4)
      const head = Buffer.alloc(5)
      head.writeUInt32BE(len)
      head[4] = this.rand() < 0.9 ? 1 + this.int(13) : this.int(256)
      const body = this.bytes(len - 1)
      // Small u64 high halves and string lengths now and then, so that some frames decode.
      if (this.rand() < 0.5) body.fill(0, 4, Math.min(body.length, 4 + this.int(12)))
      parts.push(head, body)
    }
    return Buffer.concat(parts)
  }
}

interface Outcome {
  frames: Frame[]
  error: FtproxyError | null
  buffered: number
}

/** Pushes `chunks`, checking the bound after every push and the failed state after an error. */
function run (chunks: Buffer[]): Outcome {
  const d = new FrameDecoder({ maxFrame: MAX_FRAME })
  const frames: Frame[] = []
  for (const chunk of chunks) {
    let error: FtproxyError | null = null
    try {
      frames.push(...d.push(chunk))
    } catch (err) {
      if (!(err instanceof FtproxyError) || err.code !== 'ERR_FTPROXY_FRAME') {
        throw new Error(`unexpected error: ${String((err as Error).stack ?? err)}`)
      }
      error = err
    }
    checkBound(d)
    if (error !== null) return { frames, error: checkFailed(d, error), buffered: d.buffered }
  }
  return { frames, error: null, buffered: d.buffered }
}

function checkBound (d: FrameDecoder): void {
  if (d.buffered > MAX_FRAME + 4) throw new Error(`buffered ${d.buffered} > maxFrame + 4`)
}

/** After an error the decoder stays failed: a later push throws the same error. */
function checkFailed (d: FrameDecoder, err: FtproxyError): FtproxyError {
  if (!d.failed) throw new Error('decoder threw but is not failed')
  try {
    d.push(Buffer.alloc(1))
  } catch (again) {
    if (again !== err) throw new Error('a later push threw a different error')
    checkBound(d)
    return err
  }
  throw new Error('a later push did not throw')
}

const bytesOf = (frames: Frame[]): Buffer => Buffer.concat(frames.flatMap(encode))

/** Arbitrary bytes: decoded whole and chunked, the outcome is the same and re-encodes exactly. */
function checkArbitrary (g: Gen, stream: Buffer): string | null {
  const whole = run([stream])
  const chunked = run(g.chunks(stream))
  if (whole.error || chunked.error) {
    const [w, c] = [whole.error?.details.reason, chunked.error?.details.reason]
    if (!whole.error || !chunked.error) return `whole ${w ?? 'ok'}, chunked ${c ?? 'ok'}`
    if (w !== c) return `reasons differ: ${String(w)} / ${String(c)}`
    const before = bytesOf(chunked.frames)
    if (!before.equals(stream.subarray(0, before.length))) {
      return 'frames before the error do not re-encode to the stream'
    }
    return null
  }
  if (whole.buffered !== chunked.buffered) return `buffered ${whole.buffered} / ${chunked.buffered}`
  if (!isDeepStrictEqual(whole.frames, chunked.frames)) {
    return 'frames differ between whole and chunked'
  }
  // The encoding is canonical: whatever decodes re-encodes to the very same bytes.
  if (!bytesOf(whole.frames).equals(stream.subarray(0, stream.length - whole.buffered))) {
    return 'decoded frames do not re-encode to the stream'
  }
  return null
}

/** Runs `body` up to ITERATIONS times or BUDGET_MS; stops at the first failure (with the seed). */
function fuzz (t: Test, name: string, seed: number, body: (g: Gen) => string | null): void {
  const g = new Gen(seed)
  const deadline = performance.now() + BUDGET_MS
  let i = 0
  for (; i < ITERATIONS && performance.now() < deadline; i++) {
    let problem: string | null
    try {
      problem = body(g)
    } catch (err) {
      problem = String((err as Error).stack ?? err)
    }
    if (problem) {
      t.fail(`${name}: iteration ${i} (FUZZ_SEED=${SEED}): ${problem}`)
      return
    }
  }
  t.ok(i >= 100, `${name}: ${i} iterations without a failure`)
}

const stats: Record<string, number> = {}
function count (o: Outcome): void {
  const k = o.error ? String(o.error.details.reason) : 'ok'
  stats[k] = (stats[k] ?? 0) + 1
}

t.test('valid streams decode identically however they are chunked', async (t) => {
  fuzz(t, 'valid', SEED, (g) => {
    const frames = g.frames(12)
    const stream = bytesOf(frames)
    const out = run(g.chunks(stream))
    if (out.error) return `error ${String(out.error.details.reason)} on a valid stream`
    if (out.buffered !== 0) return `${out.buffered} bytes left over`
    if (!isDeepStrictEqual(out.frames, frames)) return 'frames differ'
    return null
  })
})

t.test('mutated streams decode or fail with ERR_FTPROXY_FRAME', async (t) => {
  fuzz(t, 'mutated', SEED + 1, (g) => {
    const stream = g.mutate(bytesOf(g.frames(6)))
    count(run([stream]))
    return checkArbitrary(g, stream)
  })
})

t.test('random bytes decode or fail with ERR_FTPROXY_FRAME', async (t) => {
  fuzz(t, 'random', SEED + 2, (g) => {
    const stream = g.rand() < 0.3 ? g.bytes(g.int(3000)) : g.plausible()
    count(run([stream]))
    return checkArbitrary(g, stream)
  })
  t.comment(`outcomes (mutated + random): ${JSON.stringify(stats)}`)
})
