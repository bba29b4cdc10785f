// Framing of Redis client input, byte for byte as Redis 7.0 frames it (networking.c,
// processMultibulkBuffer and processInlineBuffer), so that a request ftproxy counts is a
// command Redis runs, and input Redis refuses as a protocol error is refused here too.
//
// Incremental: chunks may be cut anywhere; the state between them is a few numbers (no input
// is kept, except an inline line of at most 64 KiB and the few arguments a rule needs).
// Payloads of arguments are skipped by count, never copied or converted.

/** Where the framer hands each complete request. */
export interface CommandSink {
  /** How many arguments after the name to read as strings (by lower-case name). */
  capture (name: string): number
  /**
   * A complete request: its size in bytes, its word count (0: Redis skips it silently), its
   * lower-case name, and the arguments capture() asked for (null: longer than CAPTURE_MAX).
   * Returns false to stop framing (the rest of the input is not for the framer).
   */
  command (size: number, argc: number, name: string, args: Array<string | null>): boolean
}

/** Redis's PROTO_INLINE_MAX_SIZE: an inline request longer than this may be refused. */
const INLINE_MAX = 64 * 1024
/** Redis's default proto-max-bulk-len (512 MiB): a longer argument is a protocol error. */
const BULK_MAX = 512 * 1024 * 1024
/** Redis's INT_MAX limit on the argument count of a multibulk request. */
const COUNT_MAX = 2147483647
/** Redis's LONG_STR_SIZE: string2ll refuses a number of this many characters or more. */
const LONG_STR_SIZE = 21
/** Command names longer than this are no command ftproxy knows. */
const NAME_MAX = 64
/** Longest argument read as a string. */
const CAPTURE_MAX = 64 * 1024

const STAR = 0x2a
const DOLLAR = 0x24
const CR = 0x0d
const LF = 0x0a
const MINUS = 0x2d

const S_START = 0 // at the first byte of a request
const S_COUNT = 1 // in the *<count> line
const S_COUNT_END = 2 // the byte after its \r (Redis skips it unchecked)
const S_DOLLAR = 7 // at the $ of an argument's length line
const S_LEN = 3 // in a $<len> line, after the $
const S_LEN_END = 4 // the byte after its \r
const S_BULK = 5 // in an argument's payload and the two bytes after it (skipped unchecked)
const S_INLINE = 6 // in an inline line

const NO_ARGS: Array<string | null> = []

export class RequestFramer {
  /** The protocol error, once met (why Redis would refuse the input). */
  error: string | null = null
  private st = S_START
  /** Bytes of the current request in earlier chunks. */
  private carried = 0
  /** Where the current request starts in the chunk being framed. */
  private start = 0
  private argc = 0
  private argi = 0
  private name = ''
  private args = NO_ARGS
  private captureN = 0
  /** The number line being read (after * or $). */
  private readonly line = new Uint8Array(LONG_STR_SIZE)
  private lineLen = 0
  /** Payload bytes still to come in the current argument, plus the two after it. */
  private bulkLeft = 0
  private bulkLen = 0
  /** The argument being read as a string, or null when it is skipped. */
  private cap: Buffer | null = null
  /** The name is being read (into `nameBuf`: no allocation per request). */
  private capName = false
  private readonly nameBuf = new Uint8Array(NAME_MAX)
  /** The pieces of an inline line so far (it has no \n yet), and their length. */
  private inline: Buffer[] = []
  private inlineLen = 0
  // The last name seen, to skip converting it again (pipelines repeat commands).
  private readonly lastName = new Uint8Array(NAME_MAX)
  private lastNameLen = -1
  private lastNameStr = ''
  private lastCapture = 0

  constructor (private readonly sink: CommandSink) {}

  /** Frames a chunk; returns where it stopped (data.length unless stopped or failed). */
  push (data: Buffer): number {
    const n = data.length
    let i = 0
    this.start = 0
    while (i < n) {
      switch (this.st) {
        case S_START:
          this.start = i
          this.carried = 0
          if (data[i] === STAR) {
            this.st = S_COUNT
            this.lineLen = 0
            i++
          } else {
            this.st = S_INLINE
          }
          break
        case S_COUNT: case S_LEN: i = this.numberLine(data, i); break
        case S_DOLLAR:
          if (data[i] !== DOLLAR) {
            i = this.fail("protocol error: expected '$'", i)
          } else {
            this.st = S_LEN
            i++
          }
          break
        case S_COUNT_END: i = this.countEnd(i + 1); break
        case S_LEN_END: i = this.lenEnd(i + 1); break
        case S_BULK: i = this.bulk(data, i); break
        default: i = this.inlineLine(data, i)
      }
      if (i < 0) return -i - 1
    }
    if (this.st !== S_START) this.carried += n - this.start
    return n
  }

  // Stops framing at offset `at` (returned as -at-1 through the loop).
  private fail (reason: string, at: number): number {
    this.error = reason
    return -at - 1
  }

  private numberLine (data: Buffer, from: number): number {
    for (let i = from; i < data.length; i++) {
      const b = data[i] as number
      if (b === CR) {
        this.st = this.st === S_COUNT ? S_COUNT_END : S_LEN_END
        return i + 1
      }
      // Refused as soon as the line can no longer be a number Redis accepts.
      const pos = this.lineLen
      if (pos >= LONG_STR_SIZE - 1 || !((b >= 0x30 && b <= 0x39) || (b === MINUS && pos === 0))) {
        return this.fail(this.st === S_COUNT
          ? 'protocol error: invalid multibulk length'
          : 'protocol error: invalid bulk length', i)
      }
      this.line[pos] = b
      this.lineLen = pos + 1
    }
    return data.length
  }

  private countEnd (next: number): number {
    const count = string2ll(this.line, this.lineLen)
    if (count === null || count > COUNT_MAX) {
      return this.fail('protocol error: invalid multibulk length', next)
    }
    if (count <= 0) return this.complete(next, 0) // Redis skips it: no command, no reply
    this.argc = count
    this.argi = 0
    this.args = NO_ARGS
    this.captureN = 0
    this.startLen()
    return next
  }

  private startLen (): void {
    this.st = S_DOLLAR
    this.lineLen = 0
  }

  private lenEnd (next: number): number {
    const len = string2ll(this.line, this.lineLen)
    if (len === null || len < 0 || len > BULK_MAX) {
      return this.fail('protocol error: invalid bulk length', next)
    }
    this.bulkLen = len
    this.bulkLeft = len + 2
    this.capName = this.argi === 0 && len <= NAME_MAX
    const wanted = this.argi > 0 && this.argi <= this.captureN && len <= CAPTURE_MAX
    this.cap = wanted ? Buffer.allocUnsafe(len) : null
    this.st = S_BULK
    return next
  }

  private bulk (data: Buffer, from: number): number {
    const take = Math.min(this.bulkLeft, data.length - from)
    const at = this.bulkLen + 2 - this.bulkLeft // payload offset of data[from]
    const kept = Math.min(take, this.bulkLen - at) // payload bytes (not the two after it)
    if (this.capName) {
      // A few bytes: a loop beats Buffer#copy's overhead.
      for (let k = 0; k < kept; k++) this.nameBuf[at + k] = data[from + k] as number
    } else if (this.cap !== null && kept > 0) {
      data.copy(this.cap, at, from, from + kept)
    }
    this.bulkLeft -= take
    const i = from + take
    if (this.bulkLeft > 0) return i
    this.argument()
    if (++this.argi === this.argc) return this.complete(i, this.argc)
    this.startLen()
    return i
  }

  // The argument just read: the name, or one the sink asked for.
  private argument (): void {
    const cap = this.cap
    this.cap = null
    if (this.argi === 0) {
      this.nameOf()
      this.captureN = Math.min(this.lastCapture, this.argc - 1)
      this.args = this.captureN > 0 ? [] : NO_ARGS
    } else if (this.argi <= this.captureN) {
      this.args.push(cap === null ? null : cap.toString('latin1'))
    }
  }

  // Sets `name` (and how many arguments to read) from the name just read into nameBuf.
  private nameOf (): void {
    if (!this.capName) {
      this.name = ''
      this.lastNameLen = -1
      this.lastCapture = this.sink.capture('')
      return
    }
    this.capName = false
    const len = this.bulkLen
    let same = len === this.lastNameLen
    for (let k = 0; same && k < len; k++) same = this.nameBuf[k] === this.lastName[k]
    if (!same) {
      this.lastName.set(this.nameBuf.subarray(0, len))
      this.lastNameLen = len
      this.lastNameStr = asciiLower(this.nameBuf.subarray(0, len))
      this.lastCapture = this.sink.capture(this.lastNameStr)
    }
    this.name = this.lastNameStr
  }

  // A request ends at `end`; hands it over. Negative: stop there.
  private complete (end: number, argc: number): number {
    const size = this.carried + end - this.start
    const name = argc === 0 ? '' : this.name
    const args = this.args
    this.st = S_START
    this.carried = 0
    this.start = end
    this.args = NO_ARGS
    return this.sink.command(size, argc, name, args) ? end : -end - 1
  }

  private inlineLine (data: Buffer, from: number): number {
    const nl = data.indexOf(LF, from)
    const upTo = nl < 0 ? data.length : nl
    // Redis refuses a line once more than INLINE_MAX bytes are buffered without a \n; whether
    // that happens to a longer line depends on how its reads were cut, so it is refused here.
    if (this.inlineLen + upTo - from > INLINE_MAX) {
      return this.fail('protocol error: too big inline request', upTo)
    }
    if (nl < 0) {
      this.inline.push(data.subarray(from))
      this.inlineLen += data.length - from
      return data.length
    }
    let line = data.subarray(from, nl)
    if (this.inline.length > 0) line = Buffer.concat([...this.inline, line])
    this.inline = []
    this.inlineLen = 0
    // Redis finds the \n with strchr, which stops at a NUL: such a line never runs.
    if (line.includes(0)) return this.fail('protocol error: NUL byte in an inline request', nl)
    if (line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, -1)
    const words = splitArgs(line.toString('latin1'))
    if (words === null) return this.fail('protocol error: unbalanced quotes in request', nl)
    const name = words.length > 0 ? asciiLower(Buffer.from(words[0] as string, 'latin1')) : ''
    this.name = name
    const want = words.length > 0 ? this.sink.capture(name) : 0
    this.args = want > 0 ? words.slice(1, 1 + want).map(capped) : NO_ARGS
    return this.complete(nl + 1, words.length)
  }
}

function capped (word: string): string | null {
  return word.length > CAPTURE_MAX ? null : word
}

// Lower case as Redis compares names (strcasecmp: ASCII letters only).
function asciiLower (b: Uint8Array): string {
  let s = ''
  for (let i = 0; i < b.length; i++) {
    const c = b[i] as number
    s += String.fromCharCode(c >= 0x41 && c <= 0x5a ? c | 0x20 : c)
  }
  return s
}

/**
 * Redis's string2ll: a decimal long long with no sign but '-', no leading zero, fewer than 21
 * characters; null when Redis would refuse it. Exact at the int64 bounds.
 */
export function string2ll (b: Uint8Array, len: number): number | null {
  if (len === 0 || len >= LONG_STR_SIZE) return null
  if (len === 1 && b[0] === 0x30) return 0
  const neg = b[0] === MINUS
  let i = neg ? 1 : 0
  if (i === len) return null
  const first = b[i] as number
  if (first < 0x31 || first > 0x39) return null
  let v = 0
  let digits = ''
  for (; i < len; i++) {
    const c = b[i] as number
    if (c < 0x30 || c > 0x39) return null
    v = v * 10 + c - 0x30
    digits += String.fromCharCode(c)
  }
  // Past 2^53 the sum is inexact: check the int64 range on the digits themselves.
  if (digits.length >= 19 && BigInt(digits) > (neg ? 1n << 63n : (1n << 63n) - 1n)) return null
  return neg ? -v : v
}

const isSpace = (c: string | undefined): boolean =>
  c === ' ' || c === '\n' || c === '\r' || c === '\t' || c === '\v' || c === '\f'
const isHex = (c: string | undefined): boolean => c !== undefined && /^[0-9a-fA-F]$/.test(c)

/**
 * Redis's sdssplitargs: words separated by blanks, "double quotes" with C escapes (\n, \xHH),
 * 'single quotes' with \'. Null where Redis refuses the line (unbalanced quotes, or a closing
 * quote not followed by a blank).
 */
export function splitArgs (line: string): string[] | null {
  const words: string[] = []
  let p = 0
  for (;;) {
    while (p < line.length && isSpace(line[p])) p++
    if (p >= line.length) return words
    const word = readWord(line, p)
    if (word === null) return null
    words.push(word.text)
    p = word.end
  }
}

const ESCAPES: Record<string, string> = { n: '\n', r: '\r', t: '\t', b: '\b', a: '\x07' }

// A closing quote must end the word (Redis: "closing quote must be followed by a space");
// a line that ends inside quotes (p past its end) is unbalanced. Either way: null.
function closeQuote (line: string, p: number, text: string): { text: string, end: number } | null {
  if (p >= line.length) return null
  if (p + 1 < line.length && !isSpace(line[p + 1])) return null
  return { text, end: p + 1 }
}

function readWord (line: string, from: number): { text: string, end: number } | null {
  let p = from
  let text = ''
  let quote = '' // '"' or "'" while inside quotes
  for (;;) {
    const c = line[p]
    if (quote === '"') {
      if (c === '\\' && line[p + 1] === 'x' && isHex(line[p + 2]) && isHex(line[p + 3])) {
        text += String.fromCharCode(parseInt(line.slice(p + 2, p + 4), 16))
        p += 3
      } else if (c === '\\' && p + 1 < line.length) {
        p++
        const e = line[p] as string
        text += ESCAPES[e] ?? e
      } else if (c === '"' || c === undefined) {
        return closeQuote(line, p, text)
      } else {
        text += c
      }
    } else if (quote === "'") {
      if (c === '\\' && line[p + 1] === "'") {
        p++
        text += "'"
      } else if (c === "'" || c === undefined) {
        return closeQuote(line, p, text)
      } else {
        text += c
      }
    } else if (c === undefined || c === ' ' || c === '\n' || c === '\r' || c === '\t') {
      return { text, end: p }
    } else if (c === '"' || c === "'") {
      quote = c
    } else {
      text += c
    }
    p++
  }
}
