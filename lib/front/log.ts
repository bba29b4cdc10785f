// The input log: every inbound client event gets a global sequence number and is kept until
// every serving replica has acknowledged it. Entries hold references to the client's
// buffers; nothing is copied.
//
// A replica acknowledges a connection's entries in that connection's order (one socket, one
// stream), but connections complete independently: a server that stops reading one client
// must not pin every other client's entries. So entries are held per connection; the whole
// log in seq order is the merge of those queues.

import { Queue } from '../util/queue.js'

export type EntryType = 'OPEN' | 'DATA' | 'EOF' | 'CLOSE'

export interface Entry {
  readonly seq: number
  readonly type: EntryType
  readonly conn: number
  readonly data?: Buffer
}

export class InputLog {
  /** seq of the newest entry (0: none yet). */
  lastSeq = 0
  /** Entries held. */
  length = 0
  /** Bytes of DATA held. */
  bytes = 0
  private readonly queues = new Map<number, Queue<Entry>>()

  append (type: EntryType, conn: number, data?: Buffer): Entry {
    const seq = ++this.lastSeq
    const entry: Entry = data ? { seq, type, conn, data } : { seq, type, conn }
    let q = this.queues.get(conn)
    if (!q) this.queues.set(conn, q = new Queue())
    q.push(entry)
    this.length++
    if (data) this.bytes += data.length
    return entry
  }

  /** Every serving replica has `conn`'s entries up to seq `upTo`: drop them. */
  release (conn: number, upTo: number): void {
    const q = this.queues.get(conn)
    if (!q) return
    for (let e = q.peek(); e && e.seq <= upTo; e = q.peek()) this.drop(q.shift() as Entry)
  }

  /** The connection is finished: drop whatever of it is left. */
  forget (conn: number): void {
    const q = this.queues.get(conn)
    if (!q) return
    for (const e of q) this.drop(e)
    this.queues.delete(conn)
  }

  /** Entries held for `conn`, oldest first. */
  held (conn: number): Entry[] {
    const q = this.queues.get(conn)
    return q ? [...q] : []
  }

  private drop (e: Entry): void {
    this.length--
    if (e.data) this.bytes -= e.data.length
  }
}
