// The input log: every inbound client event gets a global sequence number and is kept until
// every live replica has acknowledged it. Entries hold references to the client's buffers;
// nothing is copied.

export type EntryType = 'OPEN' | 'DATA' | 'EOF' | 'CLOSE'

export interface Entry {
  readonly seq: number
  readonly type: EntryType
  readonly conn: number
  readonly data?: Buffer
}

export class InputLog {
  private entries: Entry[] = []
  private head = 0
  /** seq of the newest entry (0: none yet). */
  lastSeq = 0
  /** Bytes of DATA held. */
  bytes = 0

  append (type: EntryType, conn: number, data?: Buffer): Entry {
    const entry: Entry = data ? { seq: ++this.lastSeq, type, conn, data } : { seq: ++this.lastSeq, type, conn }
    this.entries.push(entry)
    if (data) this.bytes += data.length
    return entry
  }

  /** seq of the oldest entry held (lastSeq + 1 when empty). */
  get firstSeq (): number {
    return this.head < this.entries.length ? this.entries[this.head].seq : this.lastSeq + 1
  }

  get length (): number {
    return this.entries.length - this.head
  }

  get (seq: number): Entry | undefined {
    const i = this.head + seq - this.firstSeq
    return i >= this.head && i < this.entries.length ? this.entries[i] : undefined
  }

  /** Entries after `seq`, in order (for replaying to a replica). */
  * after (seq: number): IterableIterator<Entry> {
    for (let s = Math.max(seq + 1, this.firstSeq); s <= this.lastSeq; s++) yield this.get(s) as Entry
  }

  /** Drop every entry with seq <= upTo (all live replicas acknowledged them). */
  trim (upTo: number): void {
    while (this.head < this.entries.length && this.entries[this.head].seq <= upTo) {
      const e = this.entries[this.head++]
      if (e.data) this.bytes -= e.data.length
    }
    // Compact once the dead prefix dominates, so the array does not grow without bound.
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head)
      this.head = 0
    }
  }
}
