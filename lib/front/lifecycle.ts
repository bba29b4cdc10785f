// The front's lifecycle: one value, changed in one place, every change logged.
//
//   starting ──▶ serving ◀──▶ failing_over     any ──▶ stopped  (cannot serve safely)
//                   ▲ └─────▶ switching        any ──▶ closing  (close() called)
//                   └───────────┘

import type { Logger } from '../logger.js'

export type FrontState =
  'starting' | 'serving' | 'failing_over' | 'switching' | 'stopped' | 'closing'

export class Lifecycle {
  private current: FrontState = 'starting'

  constructor (private readonly log: Logger) {}

  get state (): FrontState {
    return this.current
  }

  /** Client input is taken and replicas are driven (also during a failover or switchover). */
  get active (): boolean {
    const s = this.current
    return s === 'serving' || s === 'failing_over' || s === 'switching'
  }

  /** Whether it is `s` now (a method, so that a check after an await is not narrowed away). */
  is (s: FrontState): boolean {
    return this.current === s
  }

  /** The one setter. Closing is final: nothing moves the front out of it. */
  set (to: FrontState, reason: string): void {
    if (to === this.current || this.current === 'closing') return
    this.log.info('front_state', { from: this.current, to, reason })
    this.current = to
  }
}
