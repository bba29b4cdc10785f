// Framing of Redis server output (RESP2 and RESP3) into replies, and telling replies from
// messages the server pushed on its own (pub/sub, client tracking, the MONITOR feed).
//
// Incremental and linear: chunks may be cut anywhere; between them the state is a few numbers
// and a stack of open aggregates. Payloads are skipped by count, never copied; only the first
// bytes of the few values that decide what a reply is (a pub/sub array's kind and count, a
// simple string under MONITOR) are read.
//
// What a reply means is read from the replies themselves, not from the requests: whether the
// connection is subscribed (RESP2 pushes are plain arrays then), whether it speaks RESP3 and
// whether it is a monitor change when the server's confirmation is read, as Redis itself
// changes them in order with its output.

import type { ReplyMark, ReplyReader, Request } from './types.js'
import { CHANNEL, PATTERN, PUBSUB, type Kind } from './resp-commands.js'
import { Queue } from '../util/queue.js'

/** What a request's replies tell the reader (beyond being counted). */
export const OP_NONE = 0
/** (P|S)SUBSCRIBE, or an UNSUBSCRIBE with arguments: one confirmation each, or one error. */
export const OP_PUBSUB = 1
/** An UNSUBSCRIBE with no argument: one confirmation per subscription of its kind, or one. */
export const OP_UNSUB_ALL = 2
/** HELLO: its reply is a map in RESP3, an array in RESP2. */
export const OP_HELLO = 3
/** RESET: +RESET ends MONITOR, subscriptions and RESP3. */
export const OP_RESET = 4
/** MONITOR: +OK starts the feed. */
export const OP_MONITOR = 5

export class RespRequest implements Request {
  constructor (
    readonly name: string,
    readonly size: number,
    readonly replies: number,
    readonly blocking: boolean,
    readonly compare: boolean,
    /** OP_*: what its replies tell the reader. */
    readonly op = OP_NONE,
    /** For the pub/sub ops: which subscriptions. */
    readonly kind: Kind = CHANNEL,
    readonly shareable = false
  ) {}

  /** See Request.closesOthers (set by the session). */
  closesOthers = false
}

export interface Settled {
  resp3: boolean
  /** Subscriptions by kind: channels, patterns, shard channels. */
  counts: [number, number, number]
  monitor: boolean
}

const S_TYPE = 0 // at a type byte
const S_LINE = 1 // in a line value (+ - : , ( # _), up to its \r
const S_LINE_LF = 2
const S_LEN = 3 // in a length line ($ = ! * % ~ > |)
const S_LEN_LF = 4
const S_BULK = 5 // in a payload
const S_BULK_CR = 6
const S_BULK_LF = 7

const CR = 0x0d
const LF = 0x0a
const PLUS = 0x2b
const MINUS = 0x2d
const COLON = 0x3a
const DOLLAR = 0x24
const STAR = 0x2a
const PERCENT = 0x25
const PUSH = 0x3e
const BANG = 0x21
const PIPE = 0x7c
const LINE_TYPES = new Set([PLUS, MINUS, COLON, 0x5f, 0x2c, 0x23, 0x28]) // + - : _ , # (
// $ = ! * % ~ > |
const LENGTH_TYPES = new Set([DOLLAR, 0x3d, BANG, STAR, PERCENT, 0x7e, PUSH, PIPE])

/** Bytes kept of a value that is read: enough for a pub/sub kind or a feed line's start. */
const CAPTURE = 32
/** The start of a MONITOR feed line: +<seconds>.<micros> [<db> <client>] … */
const FEED = /^\d+\.\d{6} \[/
const MESSAGES = new Set(['message', 'pmessage', 'smessage'])

export class RespReader implements ReplyReader {
  error: string | null = null
  private readonly queue = new Queue<RespRequest>()
  /** Replies the head of the queue still owes. */
  private left = 0
  private marks: ReplyMark[] = []
  // The wire.
  private st = S_TYPE
  private type = 0
  private num = 0
  private numLen = 0
  private neg = false
  private bulkLeft = 0
  /** Elements still to read in each open aggregate, and whether it is an attribute. */
  private readonly rem: number[] = []
  private readonly attr: boolean[] = []
  private depth = 0
  // The top-level value being read.
  private topType = 0
  private topLen = 0
  /** The top value is a small array or push: its elements 0 and 2 are read. */
  private capTop = false
  /** Which element the current value is (0 or 2), -1 for a top-level line, null: not read. */
  private capIdx: number | null = null
  private readonly cap = Buffer.alloc(CAPTURE)
  private capLen = 0
  private capOver = false
  private cap0: string | null = null
  private cap2: number | null = null
  private capLine: string | null = null
  // The connection, as the replies show it.
  private resp3 = false
  private chan = 0
  private pat = 0
  private shard = 0
  private monitor = false

  constructor (private readonly fallback: () => string | null) {}

  /** A request framed on the session: its replies come after those of earlier ones. */
  expect (req: RespRequest): void {
    if (this.queue.length === 0) this.left = req.replies
    this.queue.push(req)
  }

  /**
   * The connection's state as the server's replies show it, once every request framed so far
   * is answered (null before): then it is the server's own state, not a guess from requests.
   */
  settled (): Settled | null {
    if (this.queue.length > 0 || this.error !== null) return null
    return {
      resp3: this.resp3,
      counts: [this.chan, this.pat, this.shard],
      monitor: this.monitor,
    }
  }

  push (data: Buffer): ReplyMark[] {
    if (this.error !== null) return []
    const marks: ReplyMark[] = []
    this.marks = marks
    let i = 0
    while (i < data.length && this.error === null) {
      switch (this.st) {
        case S_TYPE: i = this.typeByte(data, i); break
        case S_LINE: i = this.lineValue(data, i); break
        case S_LEN: i = this.lengthLine(data, i); break
        case S_BULK: i = this.payload(data, i); break
        case S_BULK_CR: i = this.expect1(data, i, CR, S_BULK_LF); break
        default: i = this.lineEnd(data, i) // S_LINE_LF, S_LEN_LF, S_BULK_LF
      }
    }
    return marks // those before an error, if any, are sound
  }

  private fail (reason: string): number {
    this.error ??= reason
    return Infinity
  }

  private typeByte (data: Buffer, i: number): number {
    const t = data[i] as number
    this.type = t
    if (LINE_TYPES.has(t)) {
      this.startScalar()
      this.st = S_LINE
    } else if (LENGTH_TYPES.has(t)) {
      this.num = 0
      this.numLen = 0
      this.neg = false
      this.st = S_LEN
    } else {
      return this.fail(`reply: unknown type byte 0x${t.toString(16)}`)
    }
    return i + 1
  }

  // A scalar starts: the top value's type, and whether its bytes are read.
  private startScalar (): void {
    this.capLen = 0
    this.capOver = false
    this.capIdx = null
    if (this.depth === 0) {
      this.topType = this.type
      if (this.monitor && this.type === PLUS) this.capIdx = -1
    } else if (this.depth === 1 && this.capTop) {
      const idx = this.topLen - (this.rem[0] as number)
      if (idx === 0 || idx === 2) this.capIdx = idx
    }
  }

  private keep (data: Buffer, from: number, to: number): void {
    const room = CAPTURE - this.capLen
    if (to - from > room) this.capOver = true
    const n = Math.min(room, to - from)
    if (n > 0) this.capLen += data.copy(this.cap, this.capLen, from, from + n)
  }

  private lineValue (data: Buffer, from: number): number {
    const cr = data.indexOf(CR, from)
    const to = cr < 0 ? data.length : cr
    if (this.capIdx !== null) this.keep(data, from, to)
    if (cr < 0) return data.length
    this.st = S_LINE_LF
    return cr + 1
  }

  private expect1 (data: Buffer, i: number, byte: number, next: number): number {
    if (data[i] !== byte) return this.fail('reply: missing CRLF')
    this.st = next
    return i + 1
  }

  private lineEnd (data: Buffer, i: number): number {
    if (data[i] !== LF) return this.fail('reply: missing CRLF')
    const st = this.st
    this.st = S_TYPE
    if (st === S_LEN_LF) return this.header(i + 1)
    this.scalarDone(i + 1)
    return i + 1
  }

  private lengthLine (data: Buffer, from: number): number {
    for (let i = from; i < data.length; i++) {
      const b = data[i] as number
      if (b >= 0x30 && b <= 0x39 && this.numLen < 15) {
        this.num = this.num * 10 + b - 0x30
        this.numLen++
      } else if (b === MINUS && this.numLen === 0 && !this.neg) {
        this.neg = true
      } else if (b === CR && this.numLen > 0) {
        this.st = S_LEN_LF
        return i + 1
      } else {
        // Includes '?': streamed lengths, which Redis 7 never sends.
        return this.fail(`reply: bad length line for type ${String.fromCharCode(this.type)}`)
      }
    }
    return data.length
  }

  // A length line was read; `next` is the offset after it.
  private header (next: number): number {
    const t = this.type
    const n = this.num
    if (this.neg) {
      // Only RESP2's null bulk string and null array have a length, -1.
      if (n !== 1 || (t !== DOLLAR && t !== STAR)) return this.fail('reply: negative length')
      this.startScalar()
      this.scalarDone(next)
      return next
    }
    if (t === STAR || t === 0x7e || t === PUSH) return this.open(n, false, next)
    if (t === PERCENT) return this.open(2 * n, false, next)
    if (t === PIPE) return this.open(2 * n, true, next)
    this.startScalar()
    this.bulkLeft = n
    this.st = n > 0 ? S_BULK : S_BULK_CR
    return next
  }

  private open (n: number, isAttr: boolean, next: number): number {
    if (this.depth === 0 && !isAttr) {
      this.topType = this.type
      this.topLen = n
      this.capTop = (this.type === STAR || this.type === PUSH) && n <= 5
    }
    if (n === 0) {
      // An empty aggregate is a value; an empty attribute is nothing.
      if (!isAttr) this.valueDone(next)
      return next
    }
    this.rem[this.depth] = n
    this.attr[this.depth] = isAttr
    this.depth++
    return next
  }

  private payload (data: Buffer, from: number): number {
    const take = Math.min(this.bulkLeft, data.length - from)
    if (this.capIdx !== null) this.keep(data, from, from + take)
    this.bulkLeft -= take
    if (this.bulkLeft === 0) this.st = S_BULK_CR
    return from + take
  }

  private scalarDone (end: number): void {
    const idx = this.capIdx
    if (idx !== null) {
      const text = this.cap.toString('latin1', 0, this.capLen)
      if (idx === -1) this.capLine = text
      else if (idx === 0 && !this.capOver && (this.type === DOLLAR || this.type === PLUS)) {
        this.cap0 = text
      } else if (idx === 2 && this.type === COLON) this.cap2 = Number(text)
      this.capIdx = null
    }
    this.valueDone(end)
  }

  // A value ended at `end`: it may end its aggregates, and the top-level reply.
  private valueDone (end: number): void {
    for (;;) {
      if (this.depth === 0) return this.topDone(end)
      const d = this.depth - 1
      const left = (this.rem[d] as number) - 1
      this.rem[d] = left
      if (left > 0) return
      this.depth = d
      if (this.attr[d] === true) return // an attribute is not a value of its parent
    }
  }

  private topDone (end: number): void {
    this.classify(end)
    this.capTop = false
    this.cap0 = null
    this.cap2 = null
    this.capLine = null
  }

  // One top-level value: a reply to the head request, or a message the server pushed.
  private classify (end: number): void {
    const t = this.topType
    if (this.monitor && t === PLUS && this.capLine !== null && FEED.test(this.capLine)) {
      return this.mark(end, null, false) // MONITOR feed: times and addresses differ
    }
    const head = this.queue.peek()
    const kind = t === STAR || t === PUSH ? this.cap0 : null
    const confirms = head !== undefined && kind === head.name &&
      (head.op === OP_PUBSUB || head.op === OP_UNSUB_ALL)
    // RESP3: every push is out of band but the (un)subscribe confirmations of a request.
    if (t === PUSH && !confirms) return this.mark(end, null, true)
    // RESP2 while subscribed: messages are plain arrays; Redis refuses every command whose
    // reply could look like one (only (UN)SUBSCRIBE, PING, QUIT, RESET run).
    if (t === STAR && !confirms && !this.resp3 && this.subscribed() && kind !== null &&
      (MESSAGES.has(kind) || PUBSUB.has(kind))) {
      return this.mark(end, null, true)
    }
    if (head === undefined) {
      const fallback = this.fallback()
      this.fail(fallback === null ? 'reply: a reply with no request' : `fell back: ${fallback}`)
      return
    }
    this.reply(end, head)
  }

  private reply (end: number, head: RespRequest): void {
    this.mark(end, head, head.compare)
    this.left--
    const t = this.topType
    switch (head.op) {
      case OP_PUBSUB: case OP_UNSUB_ALL:
        // An error (NOAUTH, NOPERM) is the only reply, where several were owed.
        if (t === MINUS || t === BANG) this.pad(end, head)
        else if (this.cap0 === head.name && this.cap2 !== null) this.count(head.kind, this.cap2)
        if (head.op === OP_UNSUB_ALL && this.countOf(head.kind) === 0) this.pad(end, head)
        break
      case OP_HELLO:
        if (t === PERCENT) this.resp3 = true
        else if (t === STAR) this.resp3 = false
        break
      case OP_RESET:
        if (t === PLUS) this.reset()
        break
      case OP_MONITOR:
        if (t === PLUS) this.monitor = true
        break
    }
    if (this.left <= 0) {
      this.queue.shift()
      this.left = this.queue.peek()?.replies ?? 0
    }
  }

  // The head owes no more replies than it got: the rest are marked where the last one ended,
  // so every request gets exactly `replies` marks.
  private pad (end: number, head: RespRequest): void {
    for (; this.left > 0; this.left--) this.mark(end, head, head.compare)
  }

  private mark (end: number, request: Request | null, compare: boolean): void {
    this.marks.push({ end, request, compare })
  }

  private subscribed (): boolean {
    return this.chan + this.pat + this.shard > 0
  }

  // A confirmation's count: channels + patterns, or shard channels for the S commands.
  private count (kind: Kind, n: number): void {
    if (kind === CHANNEL) this.chan = n - this.pat
    else if (kind === PATTERN) this.pat = n - this.chan
    else this.shard = n
  }

  private countOf (kind: Kind): number {
    return kind === CHANNEL ? this.chan : kind === PATTERN ? this.pat : this.shard
  }

  private reset (): void {
    this.resp3 = false
    this.chan = 0
    this.pat = 0
    this.shard = 0
    this.monitor = false
  }
}
