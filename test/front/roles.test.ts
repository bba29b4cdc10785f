// The role decisions, driven with a fake arbiter and fake transports: what the front does
// when a failover finds no backup, loses the arbiter, or loses its chosen backup midway;
// what stopping means; a switchover that loses the test-and-set; a splice that fails.

import t from 'tap'
import { performance } from 'node:perf_hooks'
import { fakeFront } from '../helpers/fake-front.js'
import { until } from '../helpers/until.js'

t.test('failover with no backup left: the stale set is recorded and serving stops', async (t) => {
  const f = await fakeFront()
  const stopped: string[] = []
  f.front.on('stopped', (reason) => stopped.push(reason))
  f.connect()
  f.roles.fail(f.replica('b'), 'test: backup gone')
  t.equal(f.replica('b').role, 'stale', 'a backup that missed input is stale')
  await until(() => f.arbiter.stored.stale.includes('b'), 'b recorded stale')
  t.equal(f.lifecycle.state, 'serving', 'the primary alone still serves')

  f.roles.fail(f.replica('a'), 'test: primary gone')
  await until(() => stopped.length > 0, 'serving to stop')
  t.match(stopped[0], /primary a failed .* no backup can take over/)
  t.equal(f.lifecycle.state, 'stopped')
  t.equal(f.hooks.stop, 1, 'the listener and clients were dropped once')
  t.equal(f.replica('a').role, 'stale')
  t.same([...f.arbiter.stored.stale].sort(), ['a', 'b'], 'the arbiter knows both missed input')
  t.equal(f.arbiter.stored.primary, 'a', 'no replica was named primary that cannot serve')
  t.ok(await f.events.next('serving_stopped'))
  t.notOk(f.events.find('failover'), 'no failover was reported')
})

t.test('the arbiter is lost during a failover: serving stops, nobody is promoted', async (t) => {
  for (const outcome of ['lose', 'throw'] as const) {
    t.test(`test-and-set: ${outcome}`, async (t) => {
      const f = await fakeFront()
      const epoch = f.arbiter.stored.epoch
      f.connect()
      f.arbiter.outcomes.push(outcome)
      f.roles.fail(f.replica('a'), 'test: primary gone')
      await until(() => f.lifecycle.state === 'stopped', 'serving to stop')
      t.equal(f.replica('b').role, 'backup', 'b was not promoted')
      t.equal(f.roles.primary.name, 'a', 'the front never switched its primary')
      t.equal(f.arbiter.stored.epoch, epoch, 'the arbiter was not moved')
      t.equal(f.hooks.stop, 1)
      const why = await f.events.next('serving_stopped')
      t.match(why.reason, outcome === 'lose'
        ? /lost the arbiter's test-and-set for epoch/
        : /could not record epoch \d+ on the arbiter: arbiter unreachable/)
      t.ok(f.events.find(outcome === 'lose' ? 'arbiter_lost' : 'arbiter_error'))
    })
  }
})

t.test('the chosen backup fails during the test-and-set: the next backup takes over', async (t) => {
  const f = await fakeFront(['a', 'b', 'c'])
  const { socket } = f.connect()
  let open!: () => void
  f.arbiter.gate = new Promise((resolve) => { open = resolve })
  f.roles.fail(f.replica('a'), 'test: primary gone')
  t.equal(f.lifecycle.state, 'failing_over')
  f.roles.fail(f.replica('b'), 'test: b gone too')
  t.equal(f.replica('b').role, 'stale')
  open()
  f.arbiter.gate = null
  const ev = await f.events.next('failover')
  t.match(ev, { from: 'b', to: 'c', reason: 'test: primary gone; then b failed' })
  t.equal(f.roles.primary.name, 'c')
  t.equal(f.replica('c').role, 'primary')
  t.equal(f.arbiter.stored.primary, 'c', 'the arbiter names c')
  t.same([...f.arbiter.stored.stale].sort(), ['a', 'b'])
  t.equal(f.lifecycle.state, 'serving')
  t.equal(socket.destroyed, false, 'the client kept its connection')
})

t.test('stopServing: one stop, and nothing changes roles after it', async (t) => {
  const f = await fakeFront()
  const { socket } = f.connect()
  let stops = 0
  f.front.on('stopped', () => { stops++ })
  f.roles.stopServing('test: stop')
  f.roles.stopServing('test: again')
  t.equal(f.lifecycle.state, 'stopped')
  t.equal(stops, 1, 'stopped is emitted once')
  t.equal(f.hooks.stop, 1, 'the front is torn down once')
  const calls = f.arbiter.calls
  f.roles.fail(f.replica('a'), 'test: primary gone after the stop')
  f.roles.fail(f.replica('b'), 'test: backup gone after the stop')
  t.equal(f.replica('a').role, 'primary', 'no failover once stopped')
  t.equal(f.replica('b').role, 'backup', 'no retirement once stopped')
  t.equal(f.arbiter.calls, calls, 'the arbiter is not asked again')
  const refused = { code: 'ERR_FTPROXY_NOT_IN_SYNC' }
  await t.rejects(f.roles.switchover(), refused, 'no switchover once stopped')
  t.equal(socket.destroyed, false, 'dropping clients is the stop hook\'s job')
  const ev = await f.events.next('front_state', (e) => e.to === 'stopped')
  t.match(ev, { from: 'serving', reason: 'test: stop' })
})

t.test('a switchover that loses the test-and-set stops serving, keeps the primary', async (t) => {
  const f = await fakeFront()
  const { c } = f.connect()
  for (const tr of f.transports.values()) tr.ackAll()
  f.transport('a').output(c.id, 'hi\n')
  f.transport('b').output(c.id, 'hi\n')
  f.arbiter.outcomes.push('lose')
  await t.rejects(f.roles.switchover('b'), { code: 'ERR_FTPROXY_ARBITER_LOST' })
  t.equal(f.lifecycle.state, 'stopped')
  t.equal(f.roles.primary.name, 'a')
  t.equal(f.replica('b').role, 'backup')
  t.equal(f.hooks.hold, 1, 'input was held')
  t.equal(f.hooks.release, 1, 'and let go')
  t.equal(f.hooks.stop, 1)
  t.notOk(f.events.find('switchover'))
})

t.test('a switchover that wins moves the primary and keeps the old one as a backup', async (t) => {
  const f = await fakeFront()
  const { c, socket } = f.connect()
  for (const tr of f.transports.values()) tr.ackAll()
  f.transport('a').output(c.id, 'hi\n')
  f.transport('b').output(c.id, 'hi\n')
  const info = await f.roles.switchover()
  t.match(info, { from: 'a', to: 'b', reason: 'switchover' })
  t.equal(f.replica('a').role, 'backup')
  t.equal(f.arbiter.stored.primary, 'b')
  t.equal(f.lifecycle.state, 'serving')
  f.transport('b').output(c.id, 'more\n')
  f.transport('a').output(c.id, 'more\n')
  t.equal(socket.text, 'hi\nmore\n', 'the client got each byte once')
})

t.test('splice_failed: only the connection whose released bytes differ is closed', async (t) => {
  const f = await fakeFront(['a', 'b'], 'output_commit: none')
  const one = f.connect()
  const two = f.connect()
  const a = f.transport('a')
  const b = f.transport('b')
  a.output(one.c.id, 'hello')
  a.output(two.c.id, 'ok')
  b.output(one.c.id, 'he')
  t.equal(one.socket.text, 'hello', 'released before the backup produced it')
  f.roles.fail(f.replica('a'), 'test: primary gone')
  await f.events.next('failover')
  b.output(one.c.id, 'LLO')
  b.output(two.c.id, 'ok, then more')
  const ev = await f.events.next('splice_failed')
  t.match(ev, { conn: one.c.id, replica: 'b', offset: 2 })
  t.equal(one.socket.destroyed, true, 'the connection that cannot be spliced is closed')
  t.equal(two.socket.destroyed, false, 'the other one goes on')
  t.equal(two.socket.text, 'ok, then more', 'spliced: no byte lost or repeated')
  t.equal(f.lifecycle.state, 'serving')
})

t.test('a failover during a switchover: input stays held until the switchover ends', async (t) => {
  t.test('the switchover gives up first, the failover ends after', async (t) => {
    const f = await fakeFront(['a', 'b', 'c'])
    f.connect() // its OPEN is not acknowledged: the switchover waits to get in sync
    const switching = f.roles.switchover('b')
    let open!: () => void
    f.arbiter.gate = new Promise((resolve) => { open = resolve })
    f.roles.fail(f.replica('a'), 'test: primary gone')
    t.equal(f.lifecycle.state, 'failing_over')
    t.equal(f.roles.holding, true, 'the switchover still holds input')
    await t.rejects(switching, { code: 'ERR_FTPROXY_NOT_IN_SYNC' })
    t.equal(f.roles.holding, false, 'it let input go when it gave up')
    t.equal(f.hooks.release, 1)
    open()
    f.arbiter.gate = null
    await f.events.next('failover')
    t.equal(f.lifecycle.state, 'serving', 'nothing is left holding input')
    t.equal(f.roles.primary.name, 'b')
  })

  t.test('the failover ends first, the switchover gives up after', async (t) => {
    const f = await fakeFront(['a', 'b', 'c'])
    f.connect()
    const switching = f.roles.switchover('b')
    const outcome = switching.then(() => 'switched', (err: { code: string }) => err.code)
    f.roles.fail(f.replica('a'), 'test: primary gone')
    t.equal(f.lifecycle.state, 'failing_over')
    await new Promise<void>((resolve) => f.front.once('failover', () => resolve()))
    t.equal(f.lifecycle.state, 'switching', 'back to the switchover, which still holds input')
    t.equal(f.roles.holding, true)
    t.equal(await outcome, 'ERR_FTPROXY_NOT_IN_SYNC')
    t.equal(f.lifecycle.state, 'serving')
    t.equal(f.roles.holding, false)
    t.equal(f.hooks.release, 1)
  })
})

t.test('the chosen backup fails midway and none is left: the reason says all of it', async (t) => {
  const f = await fakeFront()
  f.connect()
  let open!: () => void
  f.arbiter.gate = new Promise((resolve) => { open = resolve })
  f.roles.fail(f.replica('a'), 'test: primary gone')
  f.roles.fail(f.replica('b'), 'test: b gone too')
  open()
  f.arbiter.gate = null
  const ev = await f.events.next('serving_stopped')
  t.match(ev.reason, /failed \(test: primary gone; then b failed\) and no backup can take over/)
  t.equal(f.lifecycle.state, 'stopped')
})

t.test('closing is final: no later change of state undoes it', async (t) => {
  const f = await fakeFront()
  f.lifecycle.set('closing', 'test')
  f.lifecycle.set('serving', 'a late start() must not reopen')
  t.equal(f.lifecycle.state, 'closing')
  t.equal(f.lifecycle.active, false)
  f.roles.fail(f.replica('a'), 'test: a replica exits during the close')
  t.equal(f.replica('a').role, 'primary', 'no failover while closing')
})

t.test('a full state disk during a failover: serving stops and says ENOSPC', async (t) => {
  const f = await fakeFront()
  f.connect()
  f.arbiter.outcomes.push('enospc')
  f.roles.fail(f.replica('a'), 'test: primary gone')
  const why = await f.events.next('serving_stopped')
  t.match(why.reason, /could not record epoch \d+ on the arbiter: ENOSPC \(no space left/)
  t.match(f.events.find('arbiter_error'), { code: 'ERR_FTPROXY_STATE', cause: 'ENOSPC' })
  t.equal(f.replica('b').role, 'backup', 'an unrecorded failover is not acted on')
})

t.test('time the front itself was not running is no replica\'s stall', async (t) => {
  const f = await fakeFront() // timeouts.stall: 3 s
  const { c } = f.connect()
  const t0 = performance.now()
  f.roles.checkStalls(100, t0)
  f.transport('b').output(c.id, 'ahead') // the primary owes these bytes from now on
  f.roles.checkStalls(100, t0 + 100)
  // The front is stopped for 10 s, then runs again: its first check comes 10 s late.
  f.roles.checkStalls(100, t0 + 10_100)
  t.equal(f.replica('a').role, 'primary', 'the pause is not held against the primary')
  t.match(await f.events.next('front_paused'), { ms: 9900 })
  // The debt runs on from where it was: a real stall is still found once it has been owed
  // for 3 s of running time (100 ms before the pause, the rest after it).
  let now = t0 + 10_100
  while (now < t0 + 10_100 + 2800) f.roles.checkStalls(100, now += 100)
  t.equal(f.replica('a').role, 'primary', 'not yet: 3 s have not passed while running')
  while (now < t0 + 10_100 + 3300) f.roles.checkStalls(100, now += 100)
  const down = await f.events.next('replica_down', (e) => e.replica === 'a')
  t.match(down.reason, /^stall: /)
})
