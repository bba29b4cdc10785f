// Health checks against real listeners on 127.0.0.1 port 0: a refused connect counts, a probe
// the front could not make for want of its own descriptors does not (run in a child whose
// descriptor limit is low, on the built dist/health.js).

import t from 'tap'
import type { Test } from 'tap'
import net from 'node:net'
import { HealthCheck, aliveAfterEnd } from '../lib/health.js'
import { FD_PRELUDE, distUrl, runUnderLimit } from './helpers/child.js'
import { listenLocal } from './helpers/ports.js'
import { until } from './helpers/until.js'

async function listener (t: Test): Promise<{ port: number, close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>()
  const srv = net.createServer((s) => {
    sockets.add(s)
    s.on('error', () => {})
    s.on('close', () => sockets.delete(s))
  })
  const port = await listenLocal(srv)
  const close = (): Promise<void> => new Promise((resolve) => {
    for (const s of sockets) s.destroy()
    srv.close(() => resolve())
  })
  t.teardown(() => srv.listening ? close() : undefined)
  return { port, close }
}

function check (t: Test, port: number, fall = 2): HealthCheck {
  const h = new HealthCheck({
    address: { host: '127.0.0.1', port }, interval: 20, timeout: 500, fall, rise: 1,
  })
  t.teardown(() => h.stop())
  return h
}

t.test('a listener: up; refused checks: down after fall', async (t) => {
  const srv = await listener(t)
  const h = check(t, srv.port, 3)
  const downs: string[] = []
  h.on('down', (reason) => downs.push(reason))
  h.start()
  await until(() => h.state === 'up', 'up')
  await srv.close()
  await until(() => h.state === 'down', 'down')
  t.same(downs, ['health check: ECONNREFUSED'], 'down once, with the refusal as reason')
})

t.test('probeNow: true when it answers; a refusal is final at once', async (t) => {
  const srv = await listener(t)
  const h = check(t, srv.port, 100)
  t.equal(await h.probeNow(), true)
  t.equal(h.state, 'up')
  t.equal(await aliveAfterEnd(h), true, 'alive after an end')
  await srv.close()
  t.equal(await h.probeNow(), false)
  t.equal(h.state, 'down', 'down without waiting for fall')
  t.equal(await aliveAfterEnd(h), false)
})

// ---- the front out of its own descriptors -------------------------------------------------

// Probes are counted (attempts, connects) through net.connect, which health.js calls on the
// module object. Two bursts of starved probes, each far longer than `fall`, a success between.
const HEALTH_SCRIPT = `
import net from 'node:net'
import { HealthCheck, aliveAfterEnd } from '${distUrl('health.js')}'
${FD_PRELUDE}
let attempts = 0
let connects = 0
const connect = net.connect
net.connect = (...args) => {
  attempts++
  const s = connect(...args)
  s.once('connect', () => connects++)
  return s
}
const fall = 2
const address = { host: '127.0.0.1', port: Number(process.env.PORT) }
const h = new HealthCheck({ address, interval: 20, timeout: 300, fall, rise: 1 })
const ev = { downs: [], local: [] }
h.on('down', (reason) => ev.downs.push(reason))
h.on('local_error', (err) => ev.local.push(err.code))
h.start()
await until(() => h.state === 'up', 'up')
fill()
const a0 = attempts
await until(() => attempts > a0 + 3 * fall || ev.downs.length > 0, '3 x fall starved checks')
const probed = await h.probeNow()
const alive = await aliveAfterEnd(h)
const starvedState = h.state
free()
const c0 = connects
await until(() => connects > c0, 'a check that connects')
fill()
const a1 = attempts
await until(() => attempts > a1 + 3 * fall || ev.downs.length > 0, 'a second starved burst')
free()
h.stop()
console.log(JSON.stringify({ ...ev, probed, alive, starvedState, state: h.state }))
`

t.test('out of descriptors: a probe that could not be made is neither success nor failure',
  { skip: process.platform === 'win32' ? 'needs sh and ulimit' : false }, async (t) => {
    const srv = await listener(t)
    const res = await runUnderLimit(t, 64, HEALTH_SCRIPT,
      { built: ['health', 'util/fds'], env: { PORT: String(srv.port) } })
    if (!res) return
    t.same(res.downs, [], 'no down after 3 x fall starved checks')
    t.equal(res.starvedState, 'up', 'still up while starved')
    t.equal(res.probed, null, 'probeNow: null (no answer either way)')
    t.equal(res.alive, true, 'aliveAfterEnd does not conclude dead')
    t.same(res.local, ['EMFILE', 'EMFILE'], 'local_error once per burst')
    t.equal(res.state, 'up')
  })
