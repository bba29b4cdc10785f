// The seam between the front and a replica: how log entries reach a server and how its output
// comes back. `direct` is the Applier itself (TCP straight to the server); `agent` speaks the
// log channel to an agent beside the server, which runs an Applier there.

import type { EventEmitter } from 'node:events'
import type { Entry } from '../front/log.js'
import type { Prober } from '../health.js'

export interface TransportEvents {
  /** The entry reached the server (direct: written to its socket; agent: the agent's ACK). */
  ack: [entry: Entry]
  output: [conn: number, data: Buffer]
  /** The server ended (err: reset) its side of `conn`; no more output will come. */
  output_end: [conn: number, err: Error | null]
  /** The server-side socket of `conn` is closed. */
  closed: [conn: number]
  /** The replica cannot be driven any more (unreachable, fenced, server down). */
  failed: [err: Error]
  /**
   * This one client connection cannot be served on this replica because the front itself is
   * out of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM, EADDRNOTAVAIL on the connect; see
   * isLocalResourceError): not the replica's fault, and the replica goes on serving the
   * others. The transport acks the connection's entries without writing them (its OPEN now,
   * later DATA, EOF, CLOSE as they come), emits no output, output_end or closed for it. The
   * front must close the client, so that every replica sees the connection end.
   * Direct only (Applier), and only when someone listens: an Applier with no listener for it
   * emits `failed` instead, as before (the agent: its EMFILE is its own, and it has no frame
   * to report a single connection). The agent transport never emits it.
   */
  conn_failed: [conn: number, err: Error]
  /** Serial mode: a turn ended after waiting `ms` for the server (direct replicas only). */
  turn: [ms: number]
  /**
   * Serial mode: the server refused the control connection's check that a blocking request
   * was taken (e.g. it requires AUTH): such turns end without it, once (direct replicas).
   */
  control_refused: [reason: string]
  /** Serial mode: the server's settings rule the shared lane out; every connection takes turns. */
  lane_off: [reason: string]
  /** Serial mode: the server's output on `conn` cannot be framed; it is ordered raw from now. */
  unframed: [conn: number, reason: string]
  /**
   * Agent replicas: the agent's handshake named its server's incarnation (lib/incarnation.ts),
   * on every (re)connect; null: it cannot tell. The front compares it with the one recorded.
   */
  incarnation: [id: string | null]
}

export interface Transport extends EventEmitter<TransportEvents> {
  /** The last seq handed to apply(). */
  readonly sent: number
  /** Entries handed to apply() and not yet acknowledged. */
  readonly unacked: number
  /** Entries held, acknowledged or not, that the server has not been given yet. */
  readonly queued: number
  /**
   * Whether an output_end is already known to be the server's own (the agent checked its
   * server is alive before reporting it); otherwise the front probes the server.
   */
  readonly endsConfirmed: boolean
  /**
   * Health probes through the transport's own control connection (serial resp), so that
   * checks open no connections to the server; null: the health check connects itself.
   */
  readonly prober: Prober | null
  /**
   * Its server still has work from it (a turn waiting for replies, lane requests
   * unanswered, entries queued): a re-seed's cut waits until no transport has. Absent:
   * it cannot tell (then `queued` is all there is).
   */
  readonly running?: boolean
  /** Agent replicas: the server's incarnation as the agent last named it (else absent). */
  readonly incarnation?: string | null
  /** Hand over the next entry; entries come in seq order. */
  apply (entry: Entry): void
  /** Stop / restart reading the server's output for `conn` (backpressure). */
  pause (conn: number): void
  resume (conn: number): void
  /** Stop for good; no event is emitted after. */
  close (): void
}
