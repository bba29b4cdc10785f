// Log channel codec: round trips, golden bytes, every split point, garbage, encode checks.
// Pure: bytes are written into the decoder, as ws tests its Receiver.

import t from 'tap'
import assert from 'node:assert'
import type { Test } from 'tap'
import {
  DEFAULT_MAX_FRAME, FrameDecoder, FrameType, MAGIC, MAX_DATA, MAX_STRING, PROTOCOL_VERSION,
  encode, helloLen, splitData, type Frame, type FrameDecoderOptions, type WelcomeFrame,
} from '../../lib/channel/codec.js'
import { FtproxyError } from '../../lib/errors.js'

const MAX = Number.MAX_SAFE_INTEGER
const U32 = 0xffffffff

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex')
const bytes = (frame: Frame): Buffer => Buffer.concat(encode(frame))
/** A minimal HELLO and WELCOME, for cases that vary one field. */
const HELLO = {
  type: 'HELLO', epoch: 1, version: 1, frontId: 'f', window: 1, protocol: 'raw', resume: [],
} as const
const WELCOME: WelcomeFrame = {
  type: 'WELCOME', epoch: 1, version: 1, applied: 0, incarnation: '', acks: [],
}

function decodeAll (buf: Buffer, opts?: { maxFrame?: number }): Frame[] {
  const d = new FrameDecoder(opts)
  const frames = d.push(buf)
  if (d.buffered !== 0) throw new Error(`${d.buffered} bytes left over`)
  return frames
}

/** One frame of every type, with boundary values. */
const samples: Frame[] = [
  {
    type: 'HELLO',
    epoch: 0,
    version: PROTOCOL_VERSION,
    frontId: '',
    window: 0,
    protocol: '',
    resume: [],
  },
  {
    type: 'HELLO',
    epoch: U32,
    version: 0xffff,
    frontId: 'front-ä-日本-😀',
    window: U32,
    protocol: 'resp',
    resume: [{ conn: 0, offset: 0 }, { conn: U32, offset: MAX }],
  },
  {
    type: 'HELLO',
    epoch: 1,
    version: 1,
    frontId: 'x'.repeat(MAX_STRING),
    window: 65536,
    protocol: 'line',
    resume: [{ conn: 7, offset: 2 ** 32 }],
  },
  {
    type: 'WELCOME',
    epoch: U32,
    version: PROTOCOL_VERSION,
    applied: 1,
    incarnation: 'r'.repeat(MAX_STRING),
    acks: [{ conn: 2, seq: 1 }],
  },
  { type: 'WELCOME', epoch: 0, version: 1, applied: 0, incarnation: '', acks: [] },
  {
    type: 'WELCOME',
    epoch: 9,
    version: 1,
    applied: MAX,
    incarnation: 'proc:4242@123456789',
    acks: [{ conn: 1, seq: 0 }, { conn: U32, seq: MAX }, { conn: 3, seq: 2 ** 32 - 1 }],
  },
  { type: 'OPEN', epoch: 1, seq: 0, conn: 0 },
  { type: 'OPEN', epoch: U32, seq: MAX, conn: U32 },
  { type: 'DATA', epoch: 1, seq: 1, conn: 2, data: Buffer.from([0]) },
  { type: 'DATA', epoch: 2, seq: MAX, conn: U32, data: Buffer.from('hello, world\r\n') },
  { type: 'EOF', epoch: 3, seq: 2 ** 32, conn: 5 },
  { type: 'CLOSE', epoch: 3, seq: 2 ** 32 + 1, conn: 5 },
  { type: 'ACK', epoch: 3, seq: 0 },
  { type: 'ACK', epoch: 3, seq: MAX },
  { type: 'OUT', epoch: 4, conn: 5, offset: 0, data: Buffer.from('+OK\r\n') },
  { type: 'OUT', epoch: 4, conn: 0, offset: MAX, data: Buffer.alloc(300, 0xab) },
  { type: 'OUT_EOF', epoch: 4, conn: 5, offset: 10, reset: false },
  { type: 'OUT_EOF', epoch: 4, conn: 5, offset: MAX, reset: true },
  { type: 'OUT_CLOSE', epoch: 4, conn: U32 },
  { type: 'OUT_ACK', epoch: 4, conn: 5, offset: 0 },
  { type: 'OUT_ACK', epoch: 4, conn: 5, offset: MAX },
  { type: 'HEARTBEAT', epoch: 0 },
  { type: 'HEARTBEAT', epoch: U32 },
  { type: 'SYNC', epoch: 6, seq: 0 },
  { type: 'SYNC', epoch: 6, seq: MAX },
  { type: 'SYNCED', epoch: 6, seq: 1 },
  { type: 'SYNCED', epoch: U32, seq: MAX },
  { type: 'ERROR', epoch: 5, code: '', message: '' },
  {
    type: 'ERROR',
    epoch: 5,
    code: 'ERR_FTPROXY_FENCED',
    message: '\ufeffépoque 5 < 6 — 🚫'.repeat(3),
  },
]

/** Throws unless fn throws an ERR_FTPROXY_FRAME (with `reason`, when given); returns it. */
function frameErr (
  t: Test, fn: () => unknown, reason?: string, what = reason ?? 'frame error'
): FtproxyError | undefined {
  try {
    fn()
  } catch (err) {
    t.ok(err instanceof FtproxyError, `${what}: an FtproxyError`)
    const e = err as FtproxyError
    t.equal(e.code, 'ERR_FTPROXY_FRAME', `${what}: code`)
    if (reason) t.equal(e.details.reason, reason, `${what}: reason`)
    return e
  }
  t.fail(`${what}: did not throw`)
  return undefined
}

/** Pushes `chunks`; the last must fail the decoder, which then stays failed. */
function decodeFails (
  t: Test, chunks: Buffer[], reason?: string, opts?: FrameDecoderOptions
): FrameDecoder {
  const d = new FrameDecoder(opts)
  const last = chunks.at(-1)
  assert.ok(last, 'at least one chunk')
  for (const c of chunks.slice(0, -1)) d.push(c)
  const err = frameErr(t, () => d.push(last), reason)
  t.ok(d.failed, 'failed')
  t.equal(d.buffered, 0, 'nothing held after failing')
  try {
    d.push(bytes({ type: 'HEARTBEAT', epoch: 1 }))
    t.fail('push after failure did not throw')
  } catch (again) {
    t.equal(again, err, 'a later push throws the same error')
  }
  return d
}

t.test('constants', async (t) => {
  t.equal(PROTOCOL_VERSION, 4)
  t.equal(MAGIC, 'FTPX')
  t.equal(DEFAULT_MAX_FRAME, 1024 * 1024 + 64)
  t.equal(MAX_DATA, 1024 * 1024)
  t.equal(FrameType.HELLO, 1)
  t.equal(FrameType.ERROR, 13)
  t.equal(FrameType.SYNC, 14)
  t.equal(FrameType.SYNCED, 15)
  t.equal(Object.keys(FrameType).length, 15)
})

t.test('every frame type round-trips', async (t) => {
  const seen = new Set<string>()
  for (const frame of samples) {
    seen.add(frame.type)
    t.strictSame(decodeAll(bytes(frame)), [frame],
      `${frame.type} ${JSON.stringify(frame).slice(0, 60)}`)
  }
  t.same([...seen].sort(), Object.keys(FrameType).sort(), 'samples cover every type')
})

t.test('the largest DATA and OUT fit the default maxFrame', async (t) => {
  const data = Buffer.alloc(MAX_DATA, 7)
  for (const frame of [
    { type: 'DATA', epoch: 1, seq: 1, conn: 1, data },
    { type: 'OUT', epoch: 1, conn: 1, offset: 0, data }
  ] as Frame[]) {
    const pieces = encode(frame)
    t.equal(pieces.length, 2)
    t.equal(pieces[1], data, 'the payload is the caller\'s buffer, not a copy')
    const [head] = pieces
    assert.ok(head, 'a header piece')
    t.ok(head.length + data.length - 4 <= DEFAULT_MAX_FRAME)
    const [out] = decodeAll(Buffer.concat(pieces))
    t.equal(out?.type, frame.type)
    t.ok((out as { data: Buffer } | undefined)?.data.equals(data))
  }
})

t.test('encode gives one buffer except for DATA and OUT', async (t) => {
  for (const frame of samples) {
    const pieces = encode(frame)
    if (frame.type === 'DATA' || frame.type === 'OUT') {
      t.equal(pieces.length, 2)
      t.equal(pieces[1], frame.data)
      t.equal(pieces[0]?.length, 21, 'header: len, type, epoch and 12 bytes of fields')
    } else {
      t.equal(pieces.length, 1, frame.type)
    }
  }
})

t.test('golden bytes', async (t) => {
  const golden: Array<[Frame, string]> = [
    [{ type: 'HEARTBEAT', epoch: 7 }, '00000005 0c 00000007'],
    [{ type: 'ACK', epoch: 1, seq: 2 ** 32 + 5 }, '0000000d 07 00000001 0000000100000005'],
    [{ type: 'SYNC', epoch: 1, seq: 9 }, '0000000d 0e 00000001 0000000000000009'],
    [{ type: 'SYNCED', epoch: 1, seq: 2 ** 32 }, '0000000d 0f 00000001 0000000100000000'],
    [{ type: 'OPEN', epoch: 2, seq: 3, conn: 4 }, '00000011 03 00000002 0000000000000003 00000004'],
    [{ type: 'DATA', epoch: 2, seq: 3, conn: 4, data: Buffer.from('hi') },
      '00000013 04 00000002 0000000000000003 00000004 6869'],
    [{ type: 'OUT', epoch: 2, conn: 4, offset: 255, data: Buffer.from('ok') },
      '00000013 08 00000002 00000004 00000000000000ff 6f6b'],
    [{ type: 'OUT_EOF', epoch: 2, conn: 5, offset: 6, reset: true },
      '00000012 09 00000002 00000005 0000000000000006 01'],
    [{ type: 'OUT_CLOSE', epoch: 2, conn: 5 }, '00000009 0a 00000002 00000005'],
    [{ type: 'OUT_ACK', epoch: 2, conn: 5, offset: MAX },
      '00000011 0b 00000002 00000005 001fffffffffffff'],
    [{ ...HELLO, frontId: 'f1', window: 65536, resume: [{ conn: 3, offset: 10 }] },
      '00000028 01 00000001 46545058 0001 0002 6631 00010000 0003 726177 00000001 00000003 ' +
      '000000000000000a'],
    [{ ...WELCOME, applied: 9, incarnation: 'p1', acks: [{ conn: 1, seq: 2 }] },
      '00000023 02 00000001 0001 0000000000000009 0002 7031 00000001 00000001 0000000000000002'],
    [WELCOME, '00000015 02 00000001 0001 0000000000000000 0000 00000000'],
    [{ type: 'ERROR', epoch: 3, code: 'E', message: 'é' }, '0000000c 0d 00000003 0001 45 0002 c3a9']
  ]
  for (const [frame, h] of golden) {
    t.equal(bytes(frame).toString('hex'), hex(h).toString('hex'), `encode ${frame.type}`)
    t.strictSame(decodeAll(hex(h)), [frame], `decode ${frame.type}`)
  }
})

t.test('a stream split at every byte decodes to the same frames', async (t) => {
  const stream = Buffer.concat(samples.map(bytes))
  const expected = samples
  let bad = 0
  for (let i = 0; i <= stream.length; i++) {
    const d = new FrameDecoder()
    const got = [...d.push(stream.subarray(0, i)), ...d.push(stream.subarray(i))]
    if (d.buffered !== 0 || !sameFrames(got, expected)) {
      bad++
      t.strictSame(got, expected, `split at ${i}`)
    }
  }
  t.equal(bad, 0, `all ${stream.length + 1} split points`)

  const d = new FrameDecoder()
  const got: Frame[] = []
  for (let i = 0; i < stream.length; i++) got.push(...d.push(stream.subarray(i, i + 1)))
  t.strictSame(got, expected, 'one byte at a time')
  t.equal(d.buffered, 0)
})

function sameFrames (a: Frame[], b: Frame[]): boolean {
  return a.length === b.length && a.every((f, i) => {
    const g = b[i]
    return g !== undefined && bytes(f).equals(bytes(g))
  })
}

t.test('admit() is asked once per frame, with its length, before its body is held',
  async (t) => {
    const stream = Buffer.concat(samples.map(bytes))
    const lens = samples.map((f) => bytes(f).length - 4)
    const expected = lens.map((len, index) => [len, index])
    let bad = 0
    for (let i = 0; i <= stream.length; i++) {
      const calls: number[][] = []
      const admit = (len: number, index: number): boolean => {
        calls.push([len, index])
        return true
      }
      const d = new FrameDecoder({ admit })
      d.push(stream.subarray(0, i))
      d.push(stream.subarray(i))
      if (JSON.stringify(calls) !== JSON.stringify(expected)) {
        bad++
        t.same(calls, expected, `split at ${i}`)
      }
    }
    t.equal(bad, 0, `all ${stream.length + 1} split points`)

    // Refused the moment the length field is complete: nothing of the body is held.
    const hello = bytes({ ...HELLO, resume: [{ conn: 1, offset: 2 }] })
    const refuse = { admit: (len: number, index: number) => index > 0 || len <= 20 }
    const d = new FrameDecoder(refuse)
    t.same(d.push(hello.subarray(0, 3)), [])
    frameErr(t, () => d.push(hello.subarray(3)), 'refused')
    t.equal(d.buffered, 0)
    t.ok(d.failed)
    decodeFails(t, [hello], 'refused', refuse)
    const ok = new FrameDecoder({ admit: (_len, index) => index > 0 })
    frameErr(t, () => ok.push(bytes({ type: 'HEARTBEAT', epoch: 1 })), 'refused')
  })

t.test('helloLen(n) is the len of the largest HELLO naming n connections', async (t) => {
  const frontId = 'x'.repeat(MAX_STRING)
  for (const n of [0, 1, 256, 10000]) {
    const resume = Array.from({ length: n }, (_, i) => ({ conn: i, offset: MAX }))
    const [buf] = encode({ ...HELLO, epoch: U32, frontId, protocol: 'p'.repeat(16), resume })
    t.equal(buf?.readUInt32BE(0), helloLen(n), `n = ${n}`)
  }
  t.ok(helloLen(256) < 4200, 'a few KiB for 256 connections')
})

t.test('buffered counts the partial frame', async (t) => {
  const d = new FrameDecoder()
  const frame = bytes({ type: 'OPEN', epoch: 1, seq: 2, conn: 3 }) // 21 bytes
  t.equal(d.buffered, 0)
  t.same(d.push(Buffer.alloc(0)), [])
  t.same(d.push(frame.subarray(0, 2)), [])
  t.equal(d.buffered, 2, 'inside the length field')
  t.same(d.push(frame.subarray(2, 10)), [])
  t.equal(d.buffered, 10)
  t.same(d.push(Buffer.alloc(0)), [])
  t.equal(d.buffered, 10, 'an empty push changes nothing')
  t.equal(d.push(Buffer.concat([frame.subarray(10), frame, frame.subarray(0, 5)])).length, 2)
  t.equal(d.buffered, 5, 'the next partial frame')
  t.equal(d.push(frame.subarray(5)).length, 1)
  t.equal(d.buffered, 0)
  t.notOk(d.failed)
})

t.test('payloads: subarrays of the chunk when whole, one copy when split', async (t) => {
  const data = Buffer.from('payload bytes')
  const a = bytes({ type: 'DATA', epoch: 1, seq: 1, conn: 1, data })
  const b = bytes({ type: 'OUT', epoch: 1, conn: 1, offset: 0, data })
  const chunk = Buffer.concat([a, b])
  const [fa, fb] = new FrameDecoder().push(chunk) as Array<{ data: Buffer }>
  assert.ok(fa && fb, 'two frames')
  t.equal(fa.data.buffer, chunk.buffer, 'DATA shares the chunk\'s memory')
  t.equal(fa.data.byteOffset, chunk.byteOffset + a.length - data.length)
  t.equal(fb.data.buffer, chunk.buffer, 'OUT shares the chunk\'s memory')
  t.equal(fb.data.byteOffset, chunk.byteOffset + chunk.length - data.length)

  const d = new FrameDecoder()
  // Unpooled copies, so that sharing an ArrayBuffer means sharing memory.
  const first = Buffer.alloc(25)
  const second = Buffer.alloc(a.length - 25)
  a.copy(first, 0, 0, 25)
  a.copy(second, 0, 25)
  t.same(d.push(first), [])
  const [split] = d.push(second) as Array<{ data: Buffer }>
  assert.ok(split, 'the split frame')
  t.ok(split.data.equals(data))
  t.not(split.data.buffer, first.buffer, 'a split frame is concatenated')
  t.not(split.data.buffer, second.buffer)
})

t.test('garbage fails the decoder with ERR_FTPROXY_FRAME', async (t) => {
  t.test('random bytes', async (t) => {
    let x = 0x9e3779b9
    const junk = Buffer.alloc(256)
    for (let i = 0; i < junk.length; i++) junk[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24
    decodeFails(t, [junk])
  })

  t.test('wrong magic in HELLO', async (t) => {
    const h = bytes({
      type: 'HELLO', epoch: 1, version: 1, frontId: 'f', window: 1, protocol: 'raw', resume: [],
    })
    h.write('FTPY', 9, 'latin1')
    decodeFails(t, [h], 'magic')
    decodeFails(t, [hex('00000007 01 00000001 4654')], 'truncated')
  })

  t.test('unknown types', async (t) => {
    decodeFails(t, [hex('00000005 63 00000001')], 'type') // 99
    decodeFails(t, [hex('00000005 00 00000001')], 'type')
    decodeFails(t, [hex('00000005 10 00000001')], 'type') // 16: the first unknown
    decodeFails(t, [hex('00000005 ff 00000001')], 'type')
  })

  t.test('len below 5', async (t) => {
    decodeFails(t, [hex('00000003 0c 0000')], 'length')
    decodeFails(t, [hex('00000000')], 'length')
    decodeFails(t, [hex('00000004 0c 000000')], 'length')
  })

  t.test('len above maxFrame: detected from the length field alone', async (t) => {
    const over = Buffer.alloc(4)
    over.writeUInt32BE(DEFAULT_MAX_FRAME + 1)
    decodeFails(t, [over], 'length')
    decodeFails(t, [hex('ffffffff')], 'length')

    const d = new FrameDecoder()
    t.same(d.push(over.subarray(0, 3)), [])
    t.ok(d.buffered <= 4)
    frameErr(t, () => d.push(Buffer.concat([over.subarray(3), Buffer.alloc(64 * 1024)])), 'length')
    t.equal(d.buffered, 0)

    const small = new FrameDecoder({ maxFrame: 100 })
    t.equal(small.maxFrame, 100)
    t.same(small.push(hex('00000064 04')), [], 'len = maxFrame is fine')
    t.equal(small.buffered, 5)
    decodeFails(t, [hex('00000065')], 'length', { maxFrame: 100 })
    decodeFails(t, [hex('00000005 0c 00000001 000000'), hex('65')], 'length', { maxFrame: 100 })
  })

  t.test('truncated fixed bodies', async (t) => {
    decodeFails(t, [hex('0000000c 07 00000001 00000000000000')], 'truncated') // ACK, 7-byte seq
    decodeFails(t, [hex('00000005 0e 00000001')], 'truncated') // SYNC without seq
    decodeFails(t, [hex('00000010 03 00000001 0000000000000001 000000')], 'truncated') // OPEN
    // OUT_EOF without reset
    decodeFails(t, [hex('00000011 09 00000001 00000001 0000000000000001')], 'truncated')
    decodeFails(t, [hex('00000007 0a 00000001 0000')], 'truncated') // OUT_CLOSE
    decodeFails(t, [hex('00000006 0d 00000001 00')], 'truncated') // ERROR, half a length
    decodeFails(t, [hex('00000008 0d 00000001 0005 41')], 'truncated') // ERROR, short string
    decodeFails(t, [hex('0000000d 04 00000001 0000000000000001')], 'truncated') // DATA without conn
  })

  t.test('trailing bytes', async (t) => {
    decodeFails(t, [hex('0000000e 07 00000001 0000000000000001 00')], 'trailing') // ACK
    decodeFails(t, [hex('00000006 0c 00000001 00')], 'trailing') // HEARTBEAT
    decodeFails(t, [hex('0000000e 0f 00000001 0000000000000001 00')], 'trailing') // SYNCED
    // OUT_EOF
    decodeFails(t, [hex('00000013 09 00000002 00000005 0000000000000006 01 00')], 'trailing')
    decodeFails(t, [hex('0000000d 0d 00000003 0001 45 0002 c3a9 00')], 'trailing') // ERROR
    const h = bytes({ ...HELLO, resume: [{ conn: 1, offset: 1 }] })
    const longer = Buffer.concat([h, hex('ff')])
    longer.writeUInt32BE(h.length - 4 + 1)
    decodeFails(t, [longer], 'trailing')
  })

  t.test('list counts that do not fit', async (t) => {
    // HELLO claiming 2 resume entries with one present; WELCOME claiming 2^32 - 1 acks.
    const h = bytes({ ...HELLO, resume: [{ conn: 1, offset: 1 }] })
    h.writeUInt32BE(2, h.length - 16)
    decodeFails(t, [h], 'truncated')
    const w = bytes(WELCOME)
    w.writeUInt32BE(U32, w.length - 4)
    decodeFails(t, [w], 'truncated')
    // WELCOME whose incarnation claims more bytes than the frame holds.
    const i = bytes({ ...WELCOME, incarnation: 'ab' })
    i.writeUInt16BE(7, 4 + 1 + 4 + 2 + 8)
    decodeFails(t, [i], 'truncated')
  })

  t.test('u64 above Number.MAX_SAFE_INTEGER', async (t) => {
    decodeFails(t, [hex('0000000d 07 00000001 0020000000000000')], 'u64') // 2^53
    decodeFails(t, [hex('0000000d 07 00000001 ffffffffffffffff')], 'u64')
    decodeFails(t, [hex('00000011 0b 00000001 00000005 8000000000000000')], 'u64') // OUT_ACK
    t.strictSame(decodeAll(hex('0000000d 07 00000001 001fffffffffffff')),
      [{ type: 'ACK', epoch: 1, seq: MAX }])
  })

  t.test('empty DATA and OUT', async (t) => {
    decodeFails(t, [hex('00000011 04 00000001 0000000000000001 00000001')], 'empty')
    decodeFails(t, [hex('00000011 08 00000001 00000001 0000000000000001')], 'empty')
  })

  t.test('bad strings', async (t) => {
    const long = Buffer.concat(
      [hex('0000040a 0d 00000001 0401'), Buffer.alloc(MAX_STRING + 1, 0x41), hex('0000')])
    decodeFails(t, [long], 'string')
    decodeFails(t, [hex('0000000a 0d 00000001 0001 ff 0000')], 'string') // not UTF-8
    decodeFails(t, [hex('0000000c 0d 00000001 0003 eda080 0000')], 'string') // an encoded surrogate
    decodeFails(t, [hex('0000000b 0d 00000001 0002 c0af 0000')], 'string') // overlong
    // WELCOME's incarnation, not UTF-8
    decodeFails(t, [hex('00000016 02 00000001 0003 0000000000000000 0001 ff 00000000')], 'string')
  })

  t.test('OUT_EOF reset other than 0 or 1', async (t) => {
    decodeFails(t, [hex('00000012 09 00000002 00000005 0000000000000006 02')], 'reset')
  })

  t.test('good frames before garbage are delivered; ' +
    'the error comes on the next push', async (t) => {
    const d = new FrameDecoder()
    const ok = bytes({ type: 'ACK', epoch: 1, seq: 1 })
    t.equal(d.push(ok).length, 1)
    t.equal(d.push(Buffer.concat([ok, hex('000000')])).length, 1)
    t.equal(d.buffered, 3)
    frameErr(t, () => d.push(hex('01 63 00000001')), 'length')
    t.ok(d.failed)
  })
})

t.test('encode rejects invalid frames', async (t) => {
  const bad: Array<[string, unknown, string]> = [
    ['data too big',
      { type: 'DATA', epoch: 1, seq: 1, conn: 1, data: Buffer.alloc(MAX_DATA + 1) }, 'data'],
    ['OUT data too big',
      { type: 'OUT', epoch: 1, conn: 1, offset: 0, data: Buffer.alloc(MAX_DATA + 1) }, 'data'],
    ['empty DATA', { type: 'DATA', epoch: 1, seq: 1, conn: 1, data: Buffer.alloc(0) }, 'empty'],
    ['empty OUT', { type: 'OUT', epoch: 1, conn: 1, offset: 0, data: Buffer.alloc(0) }, 'empty'],
    ['data not a Buffer', { type: 'DATA', epoch: 1, seq: 1, conn: 1, data: 'text' }, 'data'],
    ['frontId too long', { ...HELLO, frontId: 'x'.repeat(MAX_STRING + 1) }, 'string'],
    ['code too long in UTF-8',
      { type: 'ERROR', epoch: 1, code: 'é'.repeat(513), message: '' }, 'string'],
    ['lone surrogate', { type: 'ERROR', epoch: 1, code: 'E', message: 'a\ud800b' }, 'string'],
    ['string not a string', { type: 'ERROR', epoch: 1, code: 5, message: '' }, 'string'],
    ['resume not an array', { ...HELLO, resume: null }, 'number'],
    ['non-integer seq', { type: 'ACK', epoch: 1, seq: 1.5 }, 'number'],
    ['negative conn', { type: 'OPEN', epoch: 1, seq: 1, conn: -1 }, 'number'],
    ['NaN epoch', { type: 'HEARTBEAT', epoch: NaN }, 'number'],
    ['epoch 2^32', { type: 'HEARTBEAT', epoch: 2 ** 32 }, 'number'],
    ['conn 2^32', { type: 'OUT_CLOSE', epoch: 1, conn: 2 ** 32 }, 'number'],
    ['seq above MAX_SAFE_INTEGER', { type: 'EOF', epoch: 1, seq: 2 ** 53, conn: 1 }, 'number'],
    ['offset Infinity', { type: 'OUT_ACK', epoch: 1, conn: 1, offset: Infinity }, 'number'],
    ['version 65536', { ...WELCOME, version: 65536 }, 'number'],
    ['bad ack entry', { ...WELCOME, acks: [{ conn: 1, seq: -1 }] }, 'number'],
    ['incarnation too long', { ...WELCOME, incarnation: 'x'.repeat(MAX_STRING + 1) }, 'string'],
    ['incarnation not a string', { ...WELCOME, incarnation: null }, 'string'],
    ['bad resume entry', { ...HELLO, resume: [{ conn: 1.5, offset: 0 }] }, 'number'],
    ['string seq', { type: 'CLOSE', epoch: 1, seq: '1', conn: 1 }, 'number'],
    ['unknown type', { type: 'NOPE', epoch: 1 }, 'type'],
    ['a HELLO larger than the default maxFrame',
      { ...HELLO, resume: Array.from({ length: 90000 }, (_, i) => ({ conn: i, offset: 0 })) },
      'length']
  ]
  for (const [what, frame, reason] of bad) frameErr(t, () => encode(frame as Frame), reason, what)
})

t.test('splitData', async (t) => {
  t.same(splitData(Buffer.alloc(0)), [], 'nothing for an empty buffer')
  const one = Buffer.alloc(MAX_DATA)
  const [only, ...none] = splitData(one)
  t.equal(only?.length, MAX_DATA)
  t.equal(none.length, 0)
  const big = Buffer.alloc(2 * MAX_DATA + 1)
  big[MAX_DATA] = 1
  const pieces = splitData(big)
  t.same(pieces.map((p) => p.length), [MAX_DATA, MAX_DATA, 1])
  t.ok(pieces.every((p) => p.buffer === big.buffer), 'subarrays, not copies')
  t.equal(pieces[1]?.[0], 1)
  for (const p of pieces) {
    t.doesNotThrow(() => encode({ type: 'DATA', epoch: 1, seq: 1, conn: 1, data: p }))
  }
})

t.test('maxFrame must be an integer in 5..2^32-1', async (t) => {
  t.equal(new FrameDecoder().maxFrame, DEFAULT_MAX_FRAME)
  t.equal(new FrameDecoder({ maxFrame: 5 }).maxFrame, 5)
  for (const maxFrame of [4, 0, -1, 1.5, NaN, 2 ** 32]) {
    t.throws(() => new FrameDecoder({ maxFrame }), RangeError, String(maxFrame))
  }
})
