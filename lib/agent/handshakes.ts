// Connections that have not completed a valid HELLO yet: how many may be open, how much each
// may make the agent hold, and one rate-limited log line for what is refused. Anyone who
// reaches the listener gets this far, so nothing here may cost more than a few KiB each.

import type net from 'node:net'
import { performance } from 'node:perf_hooks'
import { DEFAULT_MAX_FRAME, helloLen } from '../channel/codec.js'
import type { Logger } from '../logger.js'

/** Open connections (TLS handshake included) that have not completed HELLO. */
export const MAX_PENDING = 64

/** Time for the TLS handshake, then again for the HELLO. */
export const HANDSHAKE_MS = 5000

/**
 * A frame of this `len` or less may be sent by any pending connection: a HELLO whose resume
 * list names up to 256 connections (12 bytes each), about 4 KiB.
 */
const SMALL_FRAME = helloLen(256)

/**
 * Larger frames before HELLO (a front with more open connections resuming after a cut, up to
 * the codec's limit of about 87,000) share this: two of the largest at once.
 */
const LARGE_BUDGET = 2 * DEFAULT_MAX_FRAME

/** Refusals of one reason logged at most once per this. */
const LOG_EVERY_MS = 1000

/** One connection's admission: what it holds of the large budget, and whether it is in. */
export class Admission {
  reserved = 0
  /** Its HELLO is valid and being answered: the WELCOME waits for the server's incarnation. */
  answering = false
  accepted = false
}

export class Handshakes {
  /** Connections open, counted from the TCP accept. */
  private readonly open = new Set<net.Socket>()
  /** Of them, those whose HELLO was accepted. */
  private accepted = 0
  private reserved = 0
  private readonly logged = new Map<string, { at: number, suppressed: number }>()

  constructor (private readonly log: Logger) {}

  get pending (): number {
    return Math.max(0, this.open.size - this.accepted)
  }

  /** A TCP connection arrived: counted until it closes, or destroyed at once when full. */
  arrive (socket: net.Socket): boolean {
    if (this.pending >= MAX_PENDING) {
      socket.destroy()
      this.refused('too_many', { limit: MAX_PENDING })
      return false
    }
    this.open.add(socket)
    socket.once('close', () => { this.open.delete(socket) })
    return true
  }

  /** Every connection, pending or not: the agent is closing. */
  destroyAll (): void {
    for (const socket of this.open) socket.destroy()
  }

  /** Whether a frame of `len` may be held for a connection; the decoder's admit(). */
  admit (a: Admission, len: number): boolean {
    if (a.accepted || len <= SMALL_FRAME) return true
    if (this.reserved + len > LARGE_BUDGET) return false
    this.reserved += len
    a.reserved += len
    return true
  }

  /** Its HELLO was accepted: the connection is no longer pending. */
  accept (a: Admission): void {
    this.release(a)
    a.accepted = true
    this.accepted++
  }

  closed (a: Admission): void {
    this.release(a)
    if (a.accepted) this.accepted--
    a.accepted = false
  }

  /**
   * `handshake_refused` (or `event`), at most once a second per reason: a flood of
   * connections must not become a flood of log lines. `suppressed` counts those not logged.
   */
  refused (reason: string, fields: Record<string, unknown>, event = 'handshake_refused'): void {
    const key = `${event}:${reason}`
    const now = performance.now()
    const last = this.logged.get(key)
    if (last && now - last.at < LOG_EVERY_MS) {
      last.suppressed++
      return
    }
    this.logged.set(key, { at: now, suppressed: 0 })
    this.log.warn(event, { reason, ...fields, suppressed: last?.suppressed ?? 0 })
  }

  private release (a: Admission): void {
    this.reserved -= a.reserved
    a.reserved = 0
  }
}
