// Re-seeds that fail, with supervised demo servers under shared-key load: a command that
// exits 1, one that hangs past reseed.timeout (after `cut`, or before ever saying `ready`),
// one that says `ready` and dies. Each time the target stays stale, the front backs off, a
// command it killed is gone with its process group, and the clients see nothing (every INCR
// answered once, in one order per key, no connection closed). Also: a one-phase command (no
// `ready`) is run a second time under the hold and makes a real copy; a kill -9'd idle backup
// is re-seeded at the first attempt; close() stops a command under way; POST /reseed's
// answers; `auto: false`.

import t from 'tap'
import type { Test } from 'tap'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { Admin } from '../../lib/admin.js'
import { formatHostPort } from '../../lib/address.js'
import { nullLogger } from '../../lib/logger.js'
import { BIN, Client, demoPair, frontYaml, TestFront } from '../helpers/cluster.js'
import type { Event } from '../helpers/events.js'
import { freePorts } from '../helpers/ports.js'
import { SharedIncr } from '../helpers/shared-incr.js'
import { until, untilValue } from '../helpers/until.js'

async function supervisedPair (t: Test, extra: string): Promise<TestFront> {
  const [pa, pb] = await freePorts(2)
  const replicas = [
    { name: 'a', port: pa as number, command: ['ftproxy', 'demo-server', '--port', String(pa)] },
    { name: 'b', port: pb as number, command: ['ftproxy', 'demo-server', '--port', String(pb)] },
  ]
  return await new TestFront().start(t, frontYaml(t, replicas, `protocol: line\n${extra}`))
}

function replicaStatus (f: TestFront, name: string) {
  const r = f.front.status().replicas.find((x) => x.name === name)
  if (!r) throw new Error(`no replica ${name}`)
  return r
}

function pidOf (f: TestFront, name: string): number {
  const pid = replicaStatus(f, name).pid
  if (pid === undefined) throw new Error(`${name} has no pid`)
  return pid
}

// A directory of its own: t.testdir() is frontYaml's state_dir, wiped when called again.
function tempDir (t: Test): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ftproxy-reseed-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** The longest time between two replies to any client since reset(), the open one included. */
class Gaps {
  private last = performance.now()
  private longest = 0

  constructor (clients: Client[]) {
    for (const c of clients) c.socket.on('data', () => this.beat())
  }

  private beat (): void {
    const now = performance.now()
    this.longest = Math.max(this.longest, now - this.last)
    this.last = now
  }

  reset (): void {
    this.last = performance.now()
    this.longest = 0
  }

  get max (): number {
    return Math.round(Math.max(this.longest, performance.now() - this.last))
  }
}

/** No such process any more (a zombie that init has not reaped yet counts as gone). */
function gone (pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH'
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z'
  } catch {
    return true
  }
}

// ---- the commands ---------------------------------------------------------------------------

// Every script notes its pid, its child's pid and what its stdin said in `dir/notes`, and
// starts a child in its process group (it must die with the command). With `ignoreTerm`,
// both ignore SIGTERM, so only the front's SIGKILL ends them. `then()` runs once the child
// is up.
function script (dir: string, body: string, ignoreTerm = false): string {
  const trap = ignoreTerm ? "process.on('SIGTERM', () => {});" : ''
  const file = path.join(dir, 'reseed.cjs')
  writeFileSync(file, `
const fs = require('fs')
const { spawn } = require('child_process')
const note = (s) => fs.appendFileSync(${JSON.stringify(path.join(dir, 'notes'))}, s + '\\n')
note('pid ' + process.pid)
${trap}
process.stdin.on('data', (d) => note('stdin ' + String(d).trim()))
const env = { ...process.env }
delete env.NODE_OPTIONS
const kid = spawn(process.execPath,
  ['-e', "${trap} setInterval(() => {}, 1000); console.log('up')"],
  { stdio: ['ignore', 'pipe', 'ignore'], env })
note('pid ' + kid.pid)
kid.stdout.once('data', () => then())
function then () { ${body} }
`)
  return JSON.stringify([process.execPath, file])
}

function notes (dir: string): string[] {
  try {
    return readFileSync(path.join(dir, 'notes'), 'utf8').split('\n').filter((l) => l !== '')
  } catch {
    return []
  }
}

const pids = (dir: string): number[] =>
  notes(dir).filter((l) => l.startsWith('pid ')).map((l) => Number(l.slice(4)))

const EXIT_1 = "process.stderr.write('no copy today\\n'); process.exit(1)"
const HANG = 'setInterval(() => {}, 1000)'
const READY_HANG = `process.stdout.write('ready\\n'); ${HANG}`
const HANG_PREPARE = HANG
const READY_DIE_AT_CUT = "process.stdout.write('ready\\n'); " +
  "process.stdin.on('data', (d) => { if (String(d).includes('cut')) process.exit(1) })"
const READY_DIE = "process.stdout.write('ready\\n'); process.exit(1)"

const RESEED_DEMO = 'reseed: { command: [ftproxy, demo-reseed], timeout: 20s }\n'

// ---- a re-seed that fails ---------------------------------------------------------------------

interface Failed {
  f: TestFront
  load: SharedIncr
  dir: string
  /** Reply gaps since reseed_started. */
  gaps: Gaps
  /** Date.now() when reseed_started and reseed_failed were seen. */
  startedAt: number
  failedAt: number
  failed: Event
}

/**
 * Supervised a and b, 4 clients of shared-key load; kill -9 of backup b (it comes back
 * empty: stale), whose automatic re-seed runs `body` and fails.
 */
async function failingReseed (t: Test, body: string,
  opts: { timeout?: string, cut?: string, ignoreTerm?: boolean } = {}): Promise<Failed> {
  const dir = tempDir(t)
  t.teardown(() => {
    for (const pid of pids(dir)) {
      try { process.kill(pid, 'SIGKILL') } catch {}
    }
  })
  const command = script(dir, body, opts.ignoreTerm)
  const f = await supervisedPair(t,
    `reseed: { command: ${command}, timeout: ${opts.timeout ?? '20s'}, ` +
    `cut_timeout: ${opts.cut ?? '5s'} }\n`)
  const load = await SharedIncr.open(f.port, 4)
  t.teardown(() => load.close())
  load.start()
  await until(() => load.replies > 300, 'load under way')
  t.equal(f.all('protected').length, 1, 'protected at the start')
  process.kill(pidOf(f, 'b'), 'SIGKILL')
  await f.waitEvent('reseed_started', (e) => e.replica === 'b', 15000)
  const startedAt = Date.now()
  const gaps = new Gaps(load.clients)
  const failed = await f.waitEvent('reseed_failed', (e) => e.replica === 'b', 20000)
  return { f, load, dir, gaps, startedAt, failedAt: Date.now(), failed }
}

/** What every failure leaves: b stale with a backoff, the load served on, nobody protected. */
async function expectFailed (t: Test, run: Failed, reason: string): Promise<void> {
  const { f, load, failed } = run
  t.match(failed, {
    code: 'ERR_FTPROXY_RESEED_FAILED', reason, source: 'a', attempt: 1, retry_in_ms: 10_000,
  }, `reseed_failed: ${reason}`)
  t.equal(f.role('b'), 'stale', 'b stays stale')
  const rs = replicaStatus(f, 'b').reseed
  t.match(rs, { attempts: 1, failures: 1, last_error: String }, '/status: one failure')
  t.ok(rs.retry_in_ms > 0 && rs.retry_in_ms <= 10_000, `/status: retry in ${rs.retry_in_ms} ms`)
  const s = f.front.status()
  t.match(s.reseed, { running: null, total: 0, failed: 1 }, '/status: reseed counts')
  t.match(s, { protected: false, serving: true, primary: 'a' }, 'a serves, unprotected')
  // Input is not held after the failure: the load goes on without a pause.
  run.gaps.reset()
  const n = load.replies
  await until(() => load.replies > n + 500, 'load goes on after the failure')
  t.ok(run.gaps.max < 500, `no pause after the failure (longest gap ${run.gaps.max} ms)`)
}

/** The clients saw nothing: every INCR answered, 1..N per key, no connection closed. */
async function expectUnaffected (t: Test, run: Failed): Promise<void> {
  await run.load.stop()
  run.load.check(t)
  t.equal(run.f.all('divergence').length, 0, 'no divergence')
  t.equal(run.f.all('protected').length, 1, 'protection never came back')
  t.equal(run.f.front.status().protected, false, 'not protected')
}

async function expectGroupGone (t: Test, dir: string): Promise<void> {
  const all = pids(dir)
  t.equal(all.length, 2, 'the command and its child noted their pids')
  await until(() => all.every(gone), 'the command\'s process group to be gone', 10000)
  t.pass(`processes ${all.join(', ')} are gone`)
}

t.test('a command that exits 1: failed, stale, backed off 10 s then 20 s', async (t) => {
  const run = await failingReseed(t, EXIT_1)
  await expectFailed(t, run, 'exit')
  const { f } = run
  t.ok(f.find('reseed_output', (e) => e.replica === 'b' && e.stream === 'stderr' &&
    e.line === 'no copy today'), 'its stderr is logged')
  t.notOk(notes(run.dir).some((l) => l.startsWith('stdin')), 'it was never told to cut')
  // The retry waits out the backoff (10 s, looked at once a second), then doubles it.
  await f.waitEvent('reseed_started', (e) => e.replica === 'b' && e !== f.find('reseed_started'),
    20000)
  const waited = Date.now() - run.failedAt
  t.ok(waited >= 9500 && waited < 14000, `retried ${waited} ms after the failure`)
  // Its child outlived it: ten seconds on, nothing the failed command started should run.
  t.ok(pids(run.dir).slice(0, 2).every(gone), 'the failed command left nothing running')
  const second = await f.waitEvent('reseed_failed', (e) => e !== run.failed, 20000)
  t.match(second, { attempt: 2, retry_in_ms: 20_000 }, 'the second failure backs off 20 s')
  t.match(replicaStatus(f, 'b').reseed, { attempts: 2, failures: 2 })
  t.equal(f.role('b'), 'stale')
  await expectUnaffected(t, run)
})

t.test('ready, then a hang after cut past the timeout: killed, input released', async (t) => {
  const run = await failingReseed(t, READY_HANG, { timeout: '2s' })
  const took = run.failedAt - run.startedAt
  const held = run.gaps.max
  await expectFailed(t, run, 'timeout')
  t.ok(took >= 1800 && took < 4000, `failed ${took} ms after it started (timeout 2 s)`)
  t.ok(notes(run.dir).includes('stdin cut'), 'it was told to cut (input was held)')
  t.ok(held < 2500, `input was held at most until the timeout (longest gap ${held} ms)`)
  await expectGroupGone(t, run.dir)
  await expectUnaffected(t, run)
})

t.test('a cut phase that hangs past reseed.cut_timeout: killed then, not at the timeout',
  async (t) => {
    const run = await failingReseed(t, READY_HANG, { timeout: '20s', cut: '500ms' })
    const took = run.failedAt - run.startedAt
    const held = run.gaps.max
    await expectFailed(t, run, 'cut_timeout')
    t.ok(took < 4000, `failed ${took} ms after it started (cut_timeout 500 ms, timeout 20 s)`)
    t.ok(notes(run.dir).includes('stdin cut'), 'it was told to cut (input was held)')
    t.ok(held >= 400 && held < 1500, `input held about cut_timeout (longest gap ${held} ms)`)
    await expectGroupGone(t, run.dir)
    await expectUnaffected(t, run)
  })

t.test('the same, ignoring SIGTERM: SIGKILL ends its whole process group', async (t) => {
  const run = await failingReseed(t, READY_HANG, { timeout: '2s', ignoreTerm: true })
  const took = run.failedAt - run.startedAt
  const held = run.gaps.max
  await expectFailed(t, run, 'timeout')
  // At the timeout, or once SIGKILL (3 s on) ended it: the hold is what matters (below).
  t.ok(took >= 1800 && took < 6500, `failed ${took} ms after it started (timeout 2 s)`)
  t.ok(held < 2500, `input held at most until the timeout (longest gap ${held} ms)`)
  await expectGroupGone(t, run.dir)
  await expectUnaffected(t, run)
})

t.test('a hang before ready past the timeout: killed, input never held', async (t) => {
  const run = await failingReseed(t, HANG_PREPARE, { timeout: '2s' })
  const took = run.failedAt - run.startedAt
  const held = run.gaps.max
  await expectFailed(t, run, 'timeout')
  t.ok(took >= 1800 && took < 4000, `failed ${took} ms after it started (timeout 2 s)`)
  t.ok(held < 500, `no pause while it hung (longest gap ${held} ms)`)
  t.notOk(notes(run.dir).some((l) => l.startsWith('stdin')), 'it was never told to cut')
  await expectGroupGone(t, run.dir)
  await expectUnaffected(t, run)
})

t.test('ready, then exit 1 on cut: failed, stale, service unaffected', async (t) => {
  const run = await failingReseed(t, READY_DIE_AT_CUT)
  await expectFailed(t, run, 'exit')
  t.ok(notes(run.dir).includes('stdin cut'), 'it got cut')
  await expectUnaffected(t, run)
})

t.test('ready, then exit 1 before cut: failed, stale, service unaffected', async (t) => {
  const run = await failingReseed(t, READY_DIE)
  await expectFailed(t, run, 'exit')
  await expectUnaffected(t, run)
})

// ---- a one-phase command ------------------------------------------------------------------------

// `ftproxy demo-reseed` wrapped so that it never says `ready`: it tells its child `cut`
// itself, and so copies at once. The front runs such a command once (a copy worth nothing
// once service went on), then again under the hold with `cut` on its stdin. Each run notes
// what its stdin said and how the copy ended.
function oneShot (dir: string): string {
  const file = path.join(dir, 'one-shot.cjs')
  writeFileSync(file, `
const fs = require('fs')
const { spawn } = require('child_process')
let stdin = ''
process.stdin.on('data', (d) => { stdin += d })
const child = spawn(process.execPath, [${JSON.stringify(BIN)}, 'demo-reseed'],
  { stdio: ['pipe', 'pipe', 'inherit'] })
let out = ''
child.stdout.on('data', (d) => {
  out += d
  if (out.startsWith('ready\\n') && !child.stdin.writableEnded) child.stdin.end('cut\\n')
})
child.on('exit', (code) => {
  const run = { pid: process.pid, stdin, code }
  fs.appendFileSync(${JSON.stringify(path.join(dir, 'runs'))}, JSON.stringify(run) + '\\n')
  process.stdout.write(out.replace(/^ready\\n/, ''))
  process.exit(code === null ? 1 : code)
})
`)
  return JSON.stringify([process.execPath, file])
}

/** Whether the server on loopback `port` accepts a connection now. */
function answers (port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

// auto: false, and the re-seed asked for once b's new server answers: the test, not a
// timer, decides when the two runs happen.
t.test('a one-phase command is run again under the hold, and its copy is exact', async (t) => {
  const dir = tempDir(t)
  const f = await supervisedPair(t,
    `reseed: { command: ${oneShot(dir)}, timeout: 20s, auto: false }\n`)
  const load = await SharedIncr.open(f.port, 4)
  t.teardown(() => load.close())
  load.start()
  await until(() => load.replies > 300, 'load under way')
  const pidB = pidOf(f, 'b')
  process.kill(pidB, 'SIGKILL')
  const portB = f.cfg.replicas[1]?.address?.port as number
  await until(async () => f.role('b') === 'stale' && replicaStatus(f, 'b').health === 'up' &&
    (replicaStatus(f, 'b').pid ?? pidB) !== pidB && await answers(portB),
  'b restarted, stale and answering', 15000)
  const done = await f.front.reseed('b')
  t.match(done, { replica: 'b', source: 'a', reason: 'requested', reattached: 4, closed: 0 })
  t.comment(`re-seed took ${done.duration_ms} ms, input held ${done.pause_ms} ms`)
  const runs = readFileSync(path.join(dir, 'runs'), 'utf8').trim().split('\n')
    .map((l) => JSON.parse(l) as { pid: number, stdin: string, code: number })
  t.equal(runs.length, 2, 'run twice')
  t.match(runs[0], { stdin: '', code: 0 }, 'first run: no cut, before any hold')
  t.match(runs[1], { stdin: 'cut\n', code: 0 }, 'second run: cut on its stdin, under the hold')
  t.equal(f.all('reseed_output').filter((e) => e.replica === 'b' &&
    /^copied \d+ entries/.test(String(e.line))).length, 2, 'each run\'s copy line is logged')
  t.match(f.front.status(),
    { protected: true, replicas: [{ role: 'primary' }, { role: 'backup' }] }, 'b backs up a')

  // b was an exact copy: it took over, and each key's count goes on from where a left it.
  const before = load.replies
  process.kill(pidOf(f, 'a'), 'SIGKILL')
  await f.waitEvent('failover', (e) => e.from === 'a', 15000)
  t.equal(f.front.status().primary, 'b', 'b serves')
  await until(() => load.replies > before + 500, 'load goes on after the failover')
  await load.stop()
  load.check(t)
  t.equal(f.all('divergence').length, 0, 'no divergence')
})

// The supervisor's exit event makes b stale at once, while its health check still says up
// (no connection was open, so nothing probed it): the automatic re-seed must still wait for
// the restarted server to answer, not fail on it and back off 10 s.

t.test('kill -9 of an idle backup: the first automatic re-seed succeeds', async (t) => {
  const f = await supervisedPair(t, RESEED_DEMO)
  const c = await Client.open(f.port)
  c.send('INCR k\n')
  await c.waitLines(1)
  c.close()
  await until(() => f.front.status().connections === 0, 'the client gone')
  const t0 = Date.now()
  process.kill(pidOf(f, 'b'), 'SIGKILL')
  const first = await untilValue(() => f.find('reseeded') ?? f.find('reseed_failed'),
    'the first attempt to end', 30000)
  const ms = Date.now() - t0
  t.equal(first.event, 'reseeded', `the first attempt joined b (${String(first.error ?? '')})`)
  t.ok(ms < 5000, `re-seeded ${ms} ms after the kill`)
})

// front.close() during a re-seed: the command (here hung in its prepare) must not outlive it.
t.test('close() during a re-seed stops the command', async (t) => {
  const dir = tempDir(t)
  t.teardown(() => {
    for (const pid of pids(dir)) {
      try { process.kill(pid, 'SIGKILL') } catch {}
    }
  })
  const f = await supervisedPair(t, `reseed: { command: ${script(dir, HANG_PREPARE)}, ` +
    'timeout: 20s }\n')
  process.kill(pidOf(f, 'b'), 'SIGKILL')
  await f.waitEvent('reseed_started', (e) => e.replica === 'b', 15000)
  await until(() => pids(dir).length === 2, 'the command and its child running')
  await f.front.close()
  // It honours SIGTERM: gone at once, not after reseed.timeout (20 s) nor SIGKILL (3 s).
  await until(() => pids(dir).every(gone), 'the command and its child to be gone', 2000)
  t.pass('the command and its child are gone within 2 s of close()')
})

// ---- POST /reseed, auto: false ------------------------------------------------------------------

async function startAdmin (t: Test, f: TestFront): Promise<string> {
  const admin = new Admin(f.front, { listen: { host: '127.0.0.1', port: 0 }, log: nullLogger() })
  t.teardown(() => admin.close())
  return `http://${formatHostPort(await admin.start())}`
}

async function postReseed (base: string, replica: string):
Promise<{ status: number, body: Record<string, any> }> {
  const res = await fetch(`${base}/reseed`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ replica }),
  })
  return { status: res.status, body: await res.json() as Record<string, any> }
}

const REFUSED = { status: 409, body: { code: 'ERR_FTPROXY_RESEED_REFUSED' } }

t.test('auto: false: b stays stale until POST /reseed, which refuses what it must', async (t) => {
  const f = await supervisedPair(t,
    'reseed: { command: [ftproxy, demo-reseed], timeout: 20s, auto: false }\n')
  const base = await startAdmin(t, f)
  t.match(await postReseed(base, 'zz'), REFUSED, 'an unknown replica: 409')
  t.match(await postReseed(base, 'b'), REFUSED, 'the backup, in sync: 409')
  t.match(await postReseed(base, 'a'), REFUSED, 'the primary: 409')

  const load = await SharedIncr.open(f.port, 4)
  t.teardown(() => load.close())
  load.start()
  await until(() => load.replies > 300, 'load under way')
  process.kill(pidOf(f, 'b'), 'SIGKILL')
  await until(() => f.role('b') === 'stale' && replicaStatus(f, 'b').health === 'up' &&
    replicaStatus(f, 'b').pid !== undefined, 'b restarted, stale and answering', 15000)
  // The reseeder looks once a second and at every role change: three looks, no re-seed.
  const since = Date.now()
  await until(() => f.find('reseed_started') ?? Date.now() - since > 3000, 'three seconds')
  t.notOk(f.find('reseed_started'), 'no re-seed by itself within 3 s of b answering')
  t.match(replicaStatus(f, 'b'), { role: 'stale', reseed: { attempts: 0, retry_in_ms: 0 } })

  const first = postReseed(base, 'b')
  await until(() => f.front.status().reseed.running === 'b', 'the re-seed under way')
  t.match(await postReseed(base, 'b'), REFUSED, 'a second request while it runs: 409')
  const { status, body } = await first
  t.equal(status, 200, 'the request is answered once b joined')
  t.match(body, {
    protected: true,
    replicas: [{ name: 'a', role: 'primary' }, { name: 'b', role: 'backup' }],
    reseed: { running: null, total: 1, failed: 0, last: { replica: 'b', reason: 'requested' } },
  }, 'with the status')
  t.ok(f.find('reseed_started', (e) => e.replica === 'b' && e.reason === 'requested'))
  const n = load.replies
  await until(() => load.replies > n + 500, 'load goes on')
  await load.stop()
  load.check(t)
  t.equal(f.all('divergence').length, 0, 'no divergence')
})

t.test('POST /reseed with no reseed configured: 409', async (t) => {
  const { f } = await demoPair(t)
  const base = await startAdmin(t, f)
  t.match(await postReseed(base, 'b'), REFUSED, 'refused')
  const res = await fetch(`${base}/reseed`, { method: 'POST', body: '{}' })
  t.equal(res.status, 400, 'no replica named: 400')
})
