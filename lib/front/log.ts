// The input log: every inbound client event gets a global sequence number and is kept until
// every serving replica has acknowledged it. Entries hold references to the client's
// buffers; nothing is copied.
//
// A replica acknowledges a connection's entries in that connection's order (one socket, one
// stream), but connections complete independently: a server that stops reading one client
// must not pin every other client's entries. So entries are held per connection, and the
// whole log in seq order is the merge of those queues (since()).

export type EntryType = 'OPEN' | 'DATA' | 'EOF' | 'CLOSE'

export interface Entry {
  readonly seq: number
  readonly type: EntryType
  readonly conn: number
  readonly data?: Buffer
}

interface Queue {
  entries: Entry[]
  head: number
}

export class InputLog {
  /** seq of the newest entry (0: none yet). */
  lastSeq = 0
  /** Entries held. */
  length = 0
  /** Bytes of DATA held. */
  bytes = 0
  private readonly queues = new Map<number, Queue>()

  append (type: EntryType, conn: number, data?: Buffer): Entry {
    const entry: Entry = data ? { seq: ++this.lastSeq, type, conn, data } : { seq: ++this.lastSeq, type, conn }
    let q = this.queues.get(conn)
    if (!q) this.queues.set(conn, q = { entries: [], head: 0 })
    q.entries.push(entry)
    this.length++
    if (data) this.bytes += data.length
    return entry
  }

  /** Every serving replica has `conn`'s entries up to seq `upTo`: drop them. */
  release (conn: number, upTo: number): void {
    const q = this.queues.get(conn)
    if (!q) return
    while (q.head < q.entries.length && q.entries[q.head].seq <= upTo) this.drop(q.entries[q.head++])
    if (q.head === q.entries.length) {
      q.entries = []
      q.head = 0
    } else if (q.head > 64 && q.head * 2 > q.entries.length) {
      q.entries = q.entries.slice(q.head)
      q.head = 0
    }
  }

  /** The connection is finished: drop whatever of it is left. */
  forget (conn: number): void {
    const q = this.queues.get(conn)
    if (!q) return
    for (let i = q.head; i < q.entries.length; i++) this.drop(q.entries[i])
    this.queues.delete(conn)
  }

  /** Entries held for `conn`, oldest first. */
  held (conn: number): Entry[] {
    const q = this.queues.get(conn)
    return q ? q.entries.slice(q.head) : []
  }

  /** Every held entry with seq > `after`, in seq order (to replay to a replica). */
  since (after: number): Entry[] {
    const out: Entry[] = []
    for (const q of this.queues.values()) {
      for (let i = q.head; i < q.entries.length; i++) if (q.entries[i].seq > after) out.push(q.entries[i])
    }
    return out.sort((a, b) => a.seq - b.seq)
  }

  private drop (e: Entry): void {
    this.length--
    if (e.data) this.bytes -= e.data.length
  }
}
