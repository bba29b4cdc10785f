// The log channel codec: bytes ⇄ frames between the front and an agent. Pure: no sockets,
// no timers. The caller writes what encode() returns and feeds what it reads to
// FrameDecoder#push(). The frame layout is in frames.ts.

import { isUtf8 } from 'node:buffer'
import { FtproxyError } from '../errors.js'
import {
  type ConnAck,
  DEFAULT_MAX_FRAME,
  type Frame,
  type FrameName,
  FrameType,
  MAGIC,
  MAX_DATA,
  MAX_STRING,
  type ResumePoint,
  type WelcomeFrame,
} from './frames.js'

export {
  PROTOCOL_VERSION, MAGIC, DEFAULT_MAX_FRAME, MAX_DATA, MAX_STRING, FrameType, helloLen,
} from './frames.js'
export type { FrameName, HelloFrame, WelcomeFrame, OutFrame, Frame } from './frames.js'

/** details.reason of an ERR_FTPROXY_FRAME error: stable, unlike the message. */
type FrameErrorReason =
  | 'length'     // len < 5 or > maxFrame; on encode, the frame would exceed DEFAULT_MAX_FRAME
  | 'refused'    // the decoder's admit() refused the frame's length
  | 'type'       // unknown frame type
  | 'truncated'  // the body ends before its last field
  | 'trailing'   // bytes after the last field
  | 'magic'      // HELLO without 'FTPX'
  | 'u64'        // a u64 above Number.MAX_SAFE_INTEGER
  | 'empty'      // DATA or OUT without data
  | 'string'     // a string longer than MAX_STRING bytes or not well-formed UTF-8 / UTF-16
  | 'reset'      // OUT_EOF reset other than 0 or 1
  | 'number'     // encode: a field not an integer in its range, or a list not an array
  | 'data'       // encode: data that is not a Buffer or longer than MAX_DATA

function frameError (reason: FrameErrorReason, message: string): FtproxyError {
  return new FtproxyError('ERR_FTPROXY_FRAME', `log channel frame: ${message}`, { reason })
}

const HEAD = 4 + 1 + 4 // len, type, epoch
const TWO_32 = 2 ** 32
const MAX_HIGH = Math.floor(Number.MAX_SAFE_INTEGER / TWO_32) // 2^21 - 1

/** Cuts `buf` into subarrays of at most MAX_DATA bytes (none for an empty buffer). */
export function splitData (buf: Buffer): Buffer[] {
  const pieces: Buffer[] = []
  for (let at = 0; at < buf.length; at += MAX_DATA) pieces.push(buf.subarray(at, at + MAX_DATA))
  return pieces
}

// ---- encoding ----

class Writer {
  readonly buf: Buffer
  private pos = 0

  constructor (size: number) {
    this.buf = Buffer.allocUnsafe(size)
  }

  u8 (v: number): this {
    this.pos = this.buf.writeUInt8(v, this.pos)
    return this
  }

  u16 (v: number, field: string): this {
    checkInt(v, 0xffff, field)
    this.pos = this.buf.writeUInt16BE(v, this.pos)
    return this
  }

  u32 (v: number, field: string): this {
    checkInt(v, 0xffffffff, field)
    this.pos = this.buf.writeUInt32BE(v, this.pos)
    return this
  }

  u64 (v: number, field: string): this {
    checkInt(v, Number.MAX_SAFE_INTEGER, field)
    this.pos = this.buf.writeBigUInt64BE(BigInt(v), this.pos)
    return this
  }

  bytes (b: Buffer): this {
    this.pos += b.copy(this.buf, this.pos)
    return this
  }

  /** A string already turned into bytes by utf8(). */
  str (b: Buffer): this {
    this.pos = this.buf.writeUInt16BE(b.length, this.pos)
    return this.bytes(b)
  }
}

function checkInt (v: number, max: number, field: string): void {
  // Checked before writing: Buffer's writers would throw RangeError or silently wrap.
  if (!Number.isInteger(v) || v < 0 || v > max) {
    throw frameError('number', `${field} must be an integer in 0..${max}, got ${v}`)
  }
}

function utf8 (s: string, field: string): Buffer {
  if (typeof s !== 'string') throw frameError('string', `${field} must be a string`)
  const b = Buffer.from(s, 'utf8')
  if (b.length > MAX_STRING) {
    throw frameError('string', `${field} is ${b.length} bytes (max ${MAX_STRING})`)
  }
  // A lone surrogate would be sent as U+FFFD and come back as a different string.
  if (b.toString('utf8') !== s) throw frameError('string', `${field} is not well-formed UTF-16`)
  return b
}

function payload (data: Buffer): Buffer {
  if (!Buffer.isBuffer(data)) throw frameError('data', 'data must be a Buffer')
  if (data.length === 0) throw frameError('empty', 'data is empty')
  if (data.length > MAX_DATA) {
    throw frameError('data', `data is ${data.length} bytes (max ${MAX_DATA}; use splitData)`)
  }
  return data
}

/** A writer holding the frame head, sized for `size` body bytes of `total` (the rest is data). */
function head (type: FrameName, epoch: number, total: number, size = total): Writer {
  const len = HEAD - 4 + total
  if (len > DEFAULT_MAX_FRAME) {
    const message = `${type} frame of ${total} body bytes is larger than ${DEFAULT_MAX_FRAME}`
    throw frameError('length', message)
  }
  return new Writer(HEAD + size).u32(len, 'len').u8(FrameType[type]).u32(epoch, 'epoch')
}

function list<T> (items: T[], field: string): T[] {
  if (!Array.isArray(items)) throw frameError('number', `${field} must be an array`)
  return items
}

function welcome (frame: WelcomeFrame): Buffer {
  const inc = utf8(frame.incarnation, 'incarnation')
  const acks = list(frame.acks, 'acks')
  const w = head('WELCOME', frame.epoch, 2 + 8 + 2 + inc.length + 4 + 12 * acks.length)
  w.u16(frame.version, 'version').u64(frame.applied, 'applied').str(inc)
  w.u32(acks.length, 'acks.length')
  for (const a of acks) w.u32(a.conn, 'acks.conn').u64(a.seq, 'acks.seq')
  return w.buf
}

/**
 * The buffers to write for `frame`, in order. DATA and OUT give [header, data] with the
 * caller's data buffer itself (never copied); every other frame is one buffer.
 */
export function encode (frame: Frame): Buffer[] {
  switch (frame.type) {
    case 'HELLO': {
      const id = utf8(frame.frontId, 'frontId')
      const proto = utf8(frame.protocol, 'protocol')
      const resume = list(frame.resume, 'resume')
      const size = 4 + 2 + 2 + id.length + 4 + 2 + proto.length + 4 + 12 * resume.length
      const w = head('HELLO', frame.epoch, size)
      w.bytes(Buffer.from(MAGIC, 'latin1')).u16(frame.version, 'version')
      w.str(id).u32(frame.window, 'window').str(proto)
      w.u32(resume.length, 'resume.length')
      for (const r of resume) w.u32(r.conn, 'resume.conn').u64(r.offset, 'resume.offset')
      return [w.buf]
    }
    case 'WELCOME':
      return [welcome(frame)]
    case 'OPEN':
    case 'EOF':
    case 'CLOSE':
      return [head(frame.type, frame.epoch, 12).u64(frame.seq, 'seq').u32(frame.conn, 'conn').buf]
    case 'DATA': {
      const data = payload(frame.data)
      const w = head('DATA', frame.epoch, 12 + data.length, 12)
      return [w.u64(frame.seq, 'seq').u32(frame.conn, 'conn').buf, data]
    }
    case 'ACK':
    case 'SYNC':
    case 'SYNCED':
      return [head(frame.type, frame.epoch, 8).u64(frame.seq, 'seq').buf]
    case 'OUT': {
      const data = payload(frame.data)
      const w = head('OUT', frame.epoch, 12 + data.length, 12)
      return [w.u32(frame.conn, 'conn').u64(frame.offset, 'offset').buf, data]
    }
    case 'OUT_EOF': {
      const w = head('OUT_EOF', frame.epoch, 13)
      return [w.u32(frame.conn, 'conn').u64(frame.offset, 'offset').u8(frame.reset ? 1 : 0).buf]
    }
    case 'OUT_CLOSE':
      return [head('OUT_CLOSE', frame.epoch, 4).u32(frame.conn, 'conn').buf]
    case 'OUT_ACK': {
      const w = head('OUT_ACK', frame.epoch, 12)
      return [w.u32(frame.conn, 'conn').u64(frame.offset, 'offset').buf]
    }
    case 'HEARTBEAT':
      return [head('HEARTBEAT', frame.epoch, 0).buf]
    case 'ERROR': {
      const code = utf8(frame.code, 'code')
      const message = utf8(frame.message, 'message')
      const w = head('ERROR', frame.epoch, 2 + code.length + 2 + message.length)
      return [w.str(code).str(message).buf]
    }
    default:
      throw frameError('type', `unknown frame type ${String((frame as { type: unknown }).type)}`)
  }
}

// ---- decoding ----

/** Reads the fields of one frame held in buf[pos, end); every read is bounds-checked. */
class Reader {
  constructor (private readonly buf: Buffer, private pos: number, private readonly end: number) {}

  private take (n: number): number {
    if (this.end - this.pos < n) throw frameError('truncated', 'frame body is too short')
    const at = this.pos
    this.pos += n
    return at
  }

  get left (): number {
    return this.end - this.pos
  }

  u8 (): number {
    return this.buf.readUInt8(this.take(1))
  }

  u16 (): number {
    return this.buf.readUInt16BE(this.take(2))
  }

  u32 (): number {
    return this.buf.readUInt32BE(this.take(4))
  }

  u64 (): number {
    // Two u32 halves: no BigInt per field, and the range check is on the high half.
    const at = this.take(8)
    const high = this.buf.readUInt32BE(at)
    if (high > MAX_HIGH) throw frameError('u64', 'u64 field is above Number.MAX_SAFE_INTEGER')
    return high * TWO_32 + this.buf.readUInt32BE(at + 4)
  }

  str (): string {
    const n = this.u16()
    if (n > MAX_STRING) throw frameError('string', `string of ${n} bytes (max ${MAX_STRING})`)
    const b = this.buf.subarray(this.take(n), this.pos)
    if (!isUtf8(b)) throw frameError('string', 'string is not valid UTF-8')
    return b.toString('utf8')
  }

  magic (): void {
    const at = this.take(4)
    if (this.buf.toString('latin1', at, at + 4) !== MAGIC) {
      throw frameError('magic', `HELLO without ${MAGIC} magic`)
    }
  }

  /** A count of `size`-byte entries; checked against the bytes left before any allocation. */
  count (size: number): number {
    const n = this.u32()
    if (n * size > this.left) throw frameError('truncated', `${n} entries do not fit the frame`)
    return n
  }

  /** The rest of the frame as a subarray (no copy). */
  data (): Buffer {
    if (this.pos === this.end) throw frameError('empty', 'data is empty')
    return this.buf.subarray(this.take(this.end - this.pos), this.end)
  }

  done<F extends Frame> (frame: F): F {
    if (this.pos !== this.end) {
      const message = `${this.end - this.pos} bytes after the last field of ${frame.type}`
      throw frameError('trailing', message)
    }
    return frame
  }
}

/** Decodes the frame whose type byte is buf[start] and whose last byte is buf[end - 1]. */
function decodeFrame (buf: Buffer, start: number, end: number): Frame {
  const r = new Reader(buf, start, end)
  const type = r.u8()
  const epoch = r.u32()
  switch (type) {
    case FrameType.HELLO: {
      r.magic()
      const version = r.u16()
      const frontId = r.str()
      const window = r.u32()
      const protocol = r.str()
      const resume: ResumePoint[] = []
      for (let n = r.count(12); n > 0; n--) resume.push({ conn: r.u32(), offset: r.u64() })
      return r.done({ type: 'HELLO', epoch, version, frontId, window, protocol, resume })
    }
    case FrameType.WELCOME: {
      const version = r.u16()
      const applied = r.u64()
      const incarnation = r.str()
      const acks: ConnAck[] = []
      for (let n = r.count(12); n > 0; n--) acks.push({ conn: r.u32(), seq: r.u64() })
      return r.done({ type: 'WELCOME', epoch, version, applied, incarnation, acks })
    }
    case FrameType.OPEN:
      return r.done({ type: 'OPEN', epoch, seq: r.u64(), conn: r.u32() })
    case FrameType.DATA:
      return r.done({ type: 'DATA', epoch, seq: r.u64(), conn: r.u32(), data: r.data() })
    case FrameType.EOF:
      return r.done({ type: 'EOF', epoch, seq: r.u64(), conn: r.u32() })
    case FrameType.CLOSE:
      return r.done({ type: 'CLOSE', epoch, seq: r.u64(), conn: r.u32() })
    case FrameType.ACK:
      return r.done({ type: 'ACK', epoch, seq: r.u64() })
    case FrameType.OUT:
      return r.done({ type: 'OUT', epoch, conn: r.u32(), offset: r.u64(), data: r.data() })
    case FrameType.OUT_EOF: {
      const conn = r.u32()
      const offset = r.u64()
      const reset = r.u8()
      if (reset > 1) throw frameError('reset', `OUT_EOF reset is ${reset}`)
      return r.done({ type: 'OUT_EOF', epoch, conn, offset, reset: reset === 1 })
    }
    case FrameType.OUT_CLOSE:
      return r.done({ type: 'OUT_CLOSE', epoch, conn: r.u32() })
    case FrameType.OUT_ACK:
      return r.done({ type: 'OUT_ACK', epoch, conn: r.u32(), offset: r.u64() })
    case FrameType.HEARTBEAT:
      return r.done({ type: 'HEARTBEAT', epoch })
    case FrameType.ERROR:
      return r.done({ type: 'ERROR', epoch, code: r.str(), message: r.str() })
    case FrameType.SYNC:
      return r.done({ type: 'SYNC', epoch, seq: r.u64() })
    case FrameType.SYNCED:
      return r.done({ type: 'SYNCED', epoch, seq: r.u64() })
    default:
      throw frameError('type', `unknown frame type ${type}`)
  }
}

export interface FrameDecoderOptions {
  /**
   * Largest `len` accepted; a longer frame fails the decoder before it is buffered.
   * @default DEFAULT_MAX_FRAME
   */
  maxFrame?: number
  /**
   * Asked once a frame's length field is complete, before any of its body is held, with that
   * length and the number of frames decoded before it. False refuses the frame
   * (ERR_FTPROXY_FRAME, reason 'refused'). For limits that depend on the conversation, such
   * as the size of what a peer may send before its handshake is accepted.
   */
  admit?: (len: number, index: number) => boolean
}

/**
 * Byte stream in, frames out. Holds at most one partial frame (≤ maxFrame + 4 bytes), as the
 * pieces it arrived in, and keeps references to the pushed chunks: the caller must not reuse
 * them. DATA/OUT payloads are subarrays of the pushed chunk when the frame lies in one chunk;
 * a frame split across chunks is concatenated once, when it completes.
 */
export class FrameDecoder {
  readonly maxFrame: number
  private readonly admit: ((len: number, index: number) => boolean) | undefined
  private parts: Buffer[] = []
  private held = 0
  /** 4 + len of the partial frame once its length field is complete; 0 before. */
  private need = 0
  private error: unknown = null
  /** Frames decoded so far. */
  private decoded = 0

  constructor (opts: FrameDecoderOptions = {}) {
    const maxFrame = opts.maxFrame ?? DEFAULT_MAX_FRAME
    if (!Number.isInteger(maxFrame) || maxFrame < HEAD - 4 || maxFrame > 0xffffffff) {
      const range = `${HEAD - 4}..${0xffffffff}`
      throw new RangeError(`maxFrame must be an integer in ${range}, got ${maxFrame}`)
    }
    this.maxFrame = maxFrame
    this.admit = opts.admit
  }

  /** Bytes of the partial frame held. */
  get buffered (): number {
    return this.held
  }

  /** A push has thrown; every later push throws the same error. */
  get failed (): boolean {
    return this.error !== null
  }

  /** Every frame completed by `chunk`, in order. Throws ERR_FTPROXY_FRAME on bad input. */
  push (chunk: Buffer): Frame[] {
    if (this.error !== null) throw this.error
    try {
      return this.parse(chunk)
    } catch (err) {
      this.error = err
      this.parts = []
      this.held = 0
      throw err
    }
  }

  private parse (chunk: Buffer): Frame[] {
    const frames: Frame[] = []
    let pos = 0
    if (this.held > 0) {
      pos = this.fill(chunk)
      if (this.need === 0 || this.held < this.need) return frames
      const buf = Buffer.concat(this.parts, this.need)
      this.parts = []
      this.held = this.need = 0
      frames.push(decodeFrame(buf, 4, buf.length))
      this.decoded++
    }
    // Whole frames inside the chunk: decoded in place.
    while (chunk.length - pos >= 4) {
      const need = 4 + this.checkLen(chunk.readUInt32BE(pos))
      if (pos + need > chunk.length) {
        // A partial frame, its length checked (once: admit() may count what it admits).
        this.need = need
        this.add(chunk.subarray(pos))
        return frames
      }
      frames.push(decodeFrame(chunk, pos + 4, pos + need))
      this.decoded++
      pos += need
    }
    if (pos < chunk.length) this.fill(chunk.subarray(pos))
    return frames
  }

  /** Adds the head of `chunk` to the partial frame, up to its end; returns the bytes taken. */
  private fill (chunk: Buffer): number {
    let pos = 0
    if (this.need === 0) {
      pos = Math.min(4 - this.held, chunk.length)
      this.add(chunk.subarray(0, pos))
      if (this.held < 4) return pos
      // The length is checked the moment it is complete, before any body is held.
      const [only] = this.parts
      const lenField = this.parts.length === 1 && only !== undefined
        ? only
        : Buffer.concat(this.parts, 4)
      this.parts = [lenField]
      this.need = 4 + this.checkLen(lenField.readUInt32BE(0))
    }
    const n = Math.min(this.need - this.held, chunk.length - pos)
    this.add(chunk.subarray(pos, pos + n))
    return pos + n
  }

  private add (piece: Buffer): void {
    if (piece.length === 0) return
    this.parts.push(piece)
    this.held += piece.length
  }

  private checkLen (len: number): number {
    if (len < HEAD - 4 || len > this.maxFrame) {
      throw frameError('length', `frame length ${len} outside ${HEAD - 4}..${this.maxFrame}`)
    }
    if (this.admit && !this.admit(len, this.decoded)) {
      throw frameError('refused', `frame length ${len} refused at frame ${this.decoded}`)
    }
    return len
  }
}
