// The front's running totals since start, read by the metrics endpoint: one place that
// names them all and starts them at zero.

/** Running totals since start, for metrics. */
export interface FrontCounters {
  bytes_in: number
  bytes_out: number
  log_entries: number
  connections_total: number
  connections_rejected: number
  failovers: number
  switchovers: number
  divergences: number
  /** Turns completed on the replicas this front drives directly (serial protocols). */
  turns: number
  /** How long those turns waited for their replies: counts per TURN_WAIT_BOUNDS_MS bucket. */
  turn_wait_buckets: number[]
  /** Sum of those waits (ms). */
  turn_wait_ms: number
  /** Backup replies counted and dropped, not compared (they legitimately differ). */
  uncompared_replies: number
  /** Re-seeds that succeeded, that failed, and connections closed at their cuts. */
  reseeds: number
  reseed_failures: number
  reseed_closed: number
}

/** Upper bounds (ms) of the turn-wait histogram's buckets; the last bucket is +Inf. */
export const TURN_WAIT_BOUNDS_MS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000]

/** Counters start at zero. */
export function newCounters (): FrontCounters {
  return {
    bytes_in: 0,
    bytes_out: 0,
    log_entries: 0,
    connections_total: 0,
    connections_rejected: 0,
    failovers: 0,
    switchovers: 0,
    divergences: 0,
    turns: 0,
    turn_wait_buckets: new Array<number>(TURN_WAIT_BOUNDS_MS.length + 1).fill(0),
    turn_wait_ms: 0,
    uncompared_replies: 0,
    reseeds: 0,
    reseed_failures: 0,
    reseed_closed: 0,
  }
}
