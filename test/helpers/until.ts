// The one poll-with-a-deadline of the test suite: tests wait on state, never on fixed sleeps.

const POLL_MS = 10

type Truthy<T> = Exclude<T, null | undefined | false | 0 | 0n | ''>

/**
 * Polls fn (which may return a promise) every ~10 ms until it gives a truthy value, and
 * resolves with that value; rejects with `timed out: <what>` once ms have passed.
 * A rejection or throw from fn is not retried: it fails the wait at once.
 */
export async function untilValue<T> (
  fn: () => T | PromiseLike<T>, what: string, ms = 10000
): Promise<Truthy<T>> {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await fn()
    // A truthy value is exactly what Truthy<T> names; TS cannot narrow a generic by `if`.
    if (v) return v as Truthy<T>
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`)
    await new Promise((resolve) => setTimeout(resolve, POLL_MS))
  }
}

/** Polls fn until it gives a truthy value; rejects with `timed out: <what>` after ms. */
export async function until (fn: () => unknown, what: string, ms = 10000): Promise<void> {
  await untilValue(fn, what, ms)
}
