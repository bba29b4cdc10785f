// A timeout that counts only time the process was running. Timers of a process that was
// stopped (SIGSTOP), starved or stuck in a long pause all fire at once when it runs again,
// and a connect or probe that was never given its time would be blamed on its peer. When it
// fires much later than due, it is armed again for its full length. And the one short poll
// that a hold on input (a switchover, a re-seed's cut) waits with.

import { performance } from 'node:perf_hooks'

/** A timer this much later than due means the process itself was not running. */
export const PAUSE_MS = 250

export interface RunningTimeout {
  clear (): void
}

/**
 * Polls `done` every 2 ms (a hold on every client is short) until it holds (true), the
 * deadline (performance.now() ms) passes or `stop` says so (false).
 */
export async function pollUntil (done: () => boolean, deadline: number,
  stop: () => boolean = () => false): Promise<boolean> {
  while (!done()) {
    if (performance.now() > deadline || stop()) return false
    await new Promise((resolve) => setTimeout(resolve, 2))
  }
  return true
}

export function runningTimeout (ms: number, onTimeout: () => void): RunningTimeout {
  let timer: NodeJS.Timeout | undefined
  const arm = (): void => {
    const due = performance.now() + ms
    timer = setTimeout(() => {
      if (performance.now() - due > PAUSE_MS) arm()
      else onTimeout()
    }, ms)
  }
  arm()
  return { clear: () => clearTimeout(timer) }
}
