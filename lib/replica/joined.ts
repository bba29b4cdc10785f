// A replica that joins in the middle of the log (a re-seed's cut) gets its transport wrapped
// in this: it starts a log of its own at seq 1, as a transport expects (an agent takes a
// session's entries only in unbroken seq order), and sees only the connections it was given.
//
//   at the cut: open(conn, replay) ──▶ OPEN, DATA(replay)   local seqs 1..k, acks swallowed
//   then: apply(entry of a known conn) ──▶ entry with the next local seq ──▶ ack(entry)
//         apply(entry of another conn) ──▶ acknowledged at once (it never had that conn)
//
// Every other event passes through unchanged.

import { EventEmitter } from 'node:events'
import type { Entry } from '../front/log.js'
import type { Prober } from '../health.js'
import type { Transport, TransportEvents } from './transport.js'

const FORWARDED = [
  'output', 'output_end', 'closed', 'failed', 'conn_failed', 'turn', 'control_refused',
  'lane_off', 'unframed', 'incarnation',
] as const

export class JoinedTransport extends EventEmitter<TransportEvents> implements Transport {
  sent = 0
  /** Local seq → the front's entry (null: one of the cut's own, not the front's). */
  private readonly pending = new Map<number, Entry | null>()
  private local = 0
  private readonly known = new Set<number>()
  private closed = false

  constructor (private readonly inner: Transport) {
    super()
    for (const name of FORWARDED) {
      inner.on(name, (...args: unknown[]) => {
        if (!this.closed) (this.emit as (n: string, ...a: unknown[]) => boolean)(name, ...args)
      })
    }
    inner.on('ack', (e) => this.acked(e))
  }

  get unacked (): number {
    let n = 0
    for (const e of this.pending.values()) if (e !== null) n++
    return n
  }

  get queued (): number {
    return this.inner.queued
  }

  get endsConfirmed (): boolean {
    return this.inner.endsConfirmed
  }

  get prober (): Prober | null {
    return this.inner.prober
  }

  get running (): boolean | undefined {
    return this.inner.running
  }

  get incarnation (): string | null | undefined {
    return this.inner.incarnation
  }

  /** A connection open at the cut: opened here, then `replay` sent on it (replies dropped). */
  open (conn: number, replay: Buffer): void {
    this.known.add(conn)
    this.push({ seq: 0, type: 'OPEN', conn }, null)
    if (replay.length > 0) this.push({ seq: 0, type: 'DATA', conn, data: replay }, null)
  }

  apply (entry: Entry): void {
    this.sent = entry.seq
    if (entry.type === 'OPEN') this.known.add(entry.conn)
    if (!this.known.has(entry.conn)) {
      // Not this replica's connection: nothing to do, and nothing may wait for it.
      queueMicrotask(() => { if (!this.closed) this.emit('ack', entry) })
      return
    }
    if (entry.type === 'CLOSE') this.known.delete(entry.conn)
    this.push(entry, entry)
  }

  pause (conn: number): void {
    this.inner.pause(conn)
  }

  resume (conn: number): void {
    this.inner.resume(conn)
  }

  close (): void {
    this.closed = true
    this.inner.close()
  }

  private push (e: Entry, front: Entry | null): void {
    const seq = ++this.local
    this.pending.set(seq, front)
    this.inner.apply(e.data ? { ...e, seq, data: e.data } : { ...e, seq })
  }

  private acked (e: Entry): void {
    const front = this.pending.get(e.seq)
    this.pending.delete(e.seq)
    if (front && !this.closed) this.emit('ack', front)
  }
}
