// The arbiter seam: every backend (file now; tas and etcd later) implements `Arbiter`.
// The front moves {epoch, primary, stale} only by compare-and-set; whoever loses one may not
// serve (split brain). Epochs only grow, so a CAS that keeps the epoch is refused by backends.

export interface ArbiterState {
  epoch: number          // 0 = nothing decided yet
  primary: string | null // replica name
  stale: string[]        // replicas that missed inputs and may never serve until re-seeded
  owner: string          // id of the front that wrote it (hostname:pid:random); '' before any write
  /**
   * Per replica, the server process the state vouches for (see front/incarnation.ts):
   * another process there lost the state. STOPPED: the front stopped it on purpose.
   */
  incarnations: Record<string, string>
}

/** Recorded for a supervised server that the front stopped with itself (a clean close). */
export const STOPPED = 'stopped'

export interface Arbiter {
  /**
   * Take ownership (file: the state_dir lock) and read the current state (epoch 0, primary
   * null, stale [] when none).
   */
  open(): Promise<ArbiterState>
  /**
   * Test-and-set: write `next` only if the stored state's epoch still equals `expectEpoch`.
   * Resolves true if written, false if lost (someone else moved it). `next.epoch` must be
   * greater than `expectEpoch`; `next.owner` is replaced by this arbiter's own id.
   */
  compareAndSet(expectEpoch: number, next: ArbiterState): Promise<boolean>
  /** Release ownership. Idempotent. */
  close(): Promise<void>
}

/** The state before anything was decided. */
export function initialState (): ArbiterState {
  return { epoch: 0, primary: null, stale: [], owner: '', incarnations: {} }
}
