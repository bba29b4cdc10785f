// Health checks against real listeners on 127.0.0.1 port 0: a refused connect counts, a probe
// the front could not make for want of its own descriptors does not (run in a child whose
// descriptor limit is low, on the built dist/health.js).

import t from 'tap'
import type { Test } from 'tap'
import assert from 'node:assert'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { HealthCheck, aliveAfterEnd } from '../lib/health.js'
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

const DIST = fileURLToPath(new URL('../dist/', import.meta.url))

// The child must run the code under test, not an older build of it.
function distFresh (t: Test, pairs: Array<[lib: string, dist: string]>): boolean {
  const root = fileURLToPath(new URL('../', import.meta.url))
  for (const [lib, dist] of pairs) {
    const built = fs.statSync(DIST + dist, { throwIfNoEntry: false })
    if (!built || built.mtimeMs < fs.statSync(root + lib).mtimeMs) {
      t.fail(`dist/${dist} is missing or older than ${lib}: run npm run build`)
      return false
    }
  }
  return true
}

/** Runs an ES module under `ulimit -n <limit>`; resolves with the last JSON line it printed. */
async function underFdLimit (
  t: Test, limit: number, script: string, env: Record<string, string> = {}
): Promise<Record<string, unknown>> {
  const sh = `ulimit -n ${limit} && exec "$0" --input-type=module -e "$FTPROXY_TEST_SCRIPT"`
  const child = spawn('sh', ['-c', sh, process.execPath], {
    env: { ...process.env, ...env, FTPROXY_TEST_SCRIPT: script },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let out = ''
  let err = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { err += d.toString() })
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve))
  assert.equal(code, 0, `child exited ${code}: ${err}`)
  return JSON.parse(out.trim().split('\n').at(-1) ?? '') as Record<string, unknown>
}

// Probes are counted (attempts, connects) through net.connect, which health.js calls on the
// module object. Two bursts of starved probes, each far longer than `fall`, a success between.
const HEALTH_SCRIPT = `
import fs from 'node:fs'
import net from 'node:net'
import { HealthCheck, aliveAfterEnd } from '${pathToFileURL(DIST + 'health.js').href}'
const held = []
const fill = () => {
  try { for (;;) held.push(fs.openSync('/dev/null', 'r')) } catch (err) {
    if (err.code !== 'EMFILE') throw err
  }
}
const free = () => { while (held.length) fs.closeSync(held.pop()) }
const until = async (fn, what, ms = 10000) => {
  const end = Date.now() + ms
  while (!fn()) {
    if (Date.now() > end) throw new Error('timed out: ' + what)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}
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
    if (!distFresh(t, [['lib/health.ts', 'health.js'], ['lib/util/fds.ts', 'util/fds.js']])) {
      return
    }
    const srv = await listener(t)
    const res = await underFdLimit(t, 64, HEALTH_SCRIPT, { PORT: String(srv.port) })
    t.same(res.downs, [], 'no down after 3 x fall starved checks')
    t.equal(res.starvedState, 'up', 'still up while starved')
    t.equal(res.probed, null, 'probeNow: null (no answer either way)')
    t.equal(res.alive, true, 'aliveAfterEnd does not conclude dead')
    t.same(res.local, ['EMFILE', 'EMFILE'], 'local_error once per burst')
    t.equal(res.state, 'up')
  })
