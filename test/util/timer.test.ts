import t from 'tap'
import { performance } from 'node:perf_hooks'
import { PAUSE_MS, runningTimeout } from '../../lib/util/timer.js'

// Keep the event loop from running for `ms`, as a stopped or starved process would.
function block (ms: number): void {
  const end = performance.now() + ms
  while (performance.now() < end);
}

const fired = (ms: number): Promise<number> => new Promise((resolve) => {
  const t0 = performance.now()
  runningTimeout(ms, () => resolve(performance.now() - t0))
})

t.test('fires after its time when the process runs', async (t) => {
  const took = await fired(50)
  t.ok(took >= 49 && took < 50 + PAUSE_MS, `fired after ${took.toFixed(1)} ms`)
})

t.test('time the process was not running does not count', async (t) => {
  const t0 = performance.now()
  let at = -1
  runningTimeout(50, () => { at = performance.now() - t0 })
  block(50 + 2 * PAUSE_MS) // the timer is due long before the loop runs again
  await new Promise((resolve) => setTimeout(resolve, 10))
  t.equal(at, -1, 'not fired at once when the process runs again')
  await new Promise<void>((resolve) => {
    const poll = setInterval(() => { if (at >= 0) { clearInterval(poll); resolve() } }, 5)
  })
  const after = `fired ${at.toFixed(1)} ms after arming: its full time after the pause`
  t.ok(at >= 50 + 2 * PAUSE_MS + 45, after)
})

t.test('clear() stops it', async (t) => {
  let n = 0
  const timer = runningTimeout(20, () => { n++ })
  timer.clear()
  await new Promise((resolve) => setTimeout(resolve, 60))
  t.equal(n, 0)
})
