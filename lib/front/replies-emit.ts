// How the reply aligner (replies.ts) hands out canonical bytes: per replica, coalesced, so
// that contiguous views of one chunk go out as one (as the chunk itself when they cover it).

import type { Side } from './replies-side.js'

export class Emitter {
  private pendR = -1
  private pend: Buffer | null = null
  /** The chunk being read: emitted as itself when the views go out whole. */
  input: Buffer | null = null

  constructor (
    private readonly sides: readonly Side[],
    private readonly emit: (r: number, chunk: Buffer) => void
  ) {}

  /** Canonical bytes of r, after those given before. */
  out (r: number, buf: Buffer): void {
    const s = this.sides[r]
    if (buf.length === 0 || !s?.live || s.endDone) return
    const p = this.pend
    if (p && this.pendR === r && p.buffer === buf.buffer &&
      p.byteOffset + p.length === buf.byteOffset) {
      const whole = this.input
      this.pend = whole && whole.buffer === p.buffer && whole.byteOffset === p.byteOffset &&
        whole.length === p.length + buf.length
        ? whole
        : Buffer.from(p.buffer, p.byteOffset, p.length + buf.length)
      return
    }
    this.flush()
    this.pendR = r
    this.pend = buf
  }

  /** Hand out what is pending (before anything else is said about a replica). */
  flush (): void {
    const p = this.pend
    if (!p) return
    this.pend = null
    if (this.sides[this.pendR]?.live) this.emit(this.pendR, p)
  }
}
