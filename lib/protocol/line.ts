// The demo server's protocol (demo-server.ts): one command per line (\n, optional \r before
// it), one reply line per command. A blank line (spaces and tabs only) gets no reply; QUIT
// answers OK and closes; a line longer than MAX_LINE is answered with an error and closes.

import type { Carry, Protocol, ReplyMark, ReplyReader, Request, Session } from './types.js'
import { MAX_LINE } from '../demo-server.js'
import { Queue } from '../util/queue.js'

const LF = 0x0a
const CR = 0x0d
const SPACE = 0x20
const TAB = 0x09
/** A verb longer than this is no command the demo server knows. */
const VERB_MAX = 32

class LineRequest implements Request {
  readonly blocking = false
  readonly compare = true
  constructor (readonly name: string, readonly size: number, readonly replies: number) {}
}

class LineReader implements ReplyReader {
  error: string | null = null
  private readonly queue = new Queue<LineRequest>()

  constructor (private readonly fallback: () => string | null) {}

  expect (req: LineRequest): void {
    this.queue.push(req)
  }

  push (data: Buffer): ReplyMark[] {
    const marks: ReplyMark[] = []
    if (this.error !== null) return marks
    for (let nl = data.indexOf(LF); nl >= 0; nl = data.indexOf(LF, nl + 1)) {
      const req = this.queue.shift()
      if (req === undefined) {
        const why = this.fallback()
        this.error = why === null ? 'a reply line with no request' : `fell back: ${why}`
        break
      }
      marks.push({ end: nl + 1, request: req, compare: true })
    }
    return marks
  }
}

class LineSession implements Session {
  fallback: string | null = null
  private readonly readers: LineReader[] = []
  /** The current line's bytes so far (no \n yet), at most MAX_LINE + 1 of them. */
  private partial: Buffer[] = []
  private partialLen = 0
  /** QUIT was answered: the server reads nothing more. */
  private closed = false
  private readonly lastVerb = Buffer.alloc(VERB_MAX)
  private lastVerbLen = -1
  private lastVerbStr = ''

  request (data: Buffer): Request[] {
    if (this.fallback !== null) return []
    if (this.closed) return [new LineRequest('', data.length, 0)]
    const out: Request[] = []
    let from = 0
    for (let nl = data.indexOf(LF); nl >= 0 && !this.closed; nl = data.indexOf(LF, from)) {
      const size = this.partialLen + nl + 1 - from
      let line = data
      let start = from
      if (this.partial.length > 0) {
        line = Buffer.concat([...this.partial, data.subarray(from, nl)])
        start = 0
        this.partial = []
        this.partialLen = 0
      }
      let end = start + size - 1
      from = nl + 1
      // The server strips one \r, and refuses a line still longer than MAX_LINE.
      if (end > start && line[end - 1] === CR) end--
      if (end - start > MAX_LINE) return this.tooLong(out)
      const req = this.frame(line, start, end, size)
      out.push(req)
      if (req.replies > 0) for (const r of this.readers) r.expect(req)
    }
    if (this.closed) {
      if (from < data.length) out.push(new LineRequest('', data.length - from, 0))
      return out
    }
    if (from < data.length) {
      this.partial.push(data.subarray(from))
      this.partialLen += data.length - from
      // Refused before its \n arrives (+1: it may still end in \r).
      if (this.partialLen > MAX_LINE + 1) return this.tooLong(out)
    }
    return out
  }

  // Nothing per connection on the server to carry, but a line cut in half at a re-seed's cut
  // would reach the new copy as its tail only.
  carry (): Carry {
    if (this.fallback !== null) return { refused: 'fallback' }
    return this.partialLen > 0 ? { refused: 'partial' } : { replay: Buffer.alloc(0) }
  }

  reader (): ReplyReader {
    const r = new LineReader(() => this.fallback)
    this.readers.push(r)
    return r
  }

  private tooLong (out: Request[]): Request[] {
    this.fallback = `a line longer than ${MAX_LINE} bytes (the server answers an error and closes)`
    this.partial = []
    return out
  }

  // As DemoStore.execute reads line[start, end): the verb is its first word (blanks: space
  // and tab).
  private frame (line: Buffer, start: number, end: number, size: number): LineRequest {
    let i = start
    while (i < end && (line[i] === SPACE || line[i] === TAB)) i++
    if (i === end) return new LineRequest('', size, 0)
    let v = i
    while (v < end && line[v] !== SPACE && line[v] !== TAB) v++
    let rest = v
    while (rest < end && (line[rest] === SPACE || line[rest] === TAB)) rest++
    const verb = this.verb(line, i, v)
    // QUIT with no argument answers OK and closes; with one it is an error like any other.
    if (verb === 'quit' && rest === end) this.closed = true
    return new LineRequest(verb, size, 1)
  }

  // The verb in lower case ('' when too long to be one); pipelines repeat the last one.
  private verb (line: Buffer, from: number, to: number): string {
    const len = to - from
    if (len > VERB_MAX) return ''
    let same = len === this.lastVerbLen
    for (let k = 0; same && k < len; k++) same = line[from + k] === this.lastVerb[k]
    if (!same) {
      line.copy(this.lastVerb, 0, from, to)
      this.lastVerbLen = len
      // As the server matches verbs: toUpperCase() (quit in any case is QUIT).
      const text = line.toString('latin1', from, to)
      this.lastVerbStr = text.toUpperCase() === 'QUIT' ? 'quit' : text.toLowerCase()
    }
    return this.lastVerbStr
  }
}

export const line: Protocol = {
  name: 'line',
  serial: true,
  uncompared: false,
  control: null,
  session: () => new LineSession(),
}
