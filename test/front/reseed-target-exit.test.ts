// A re-seed's target whose server exits while the cut's join is written to the arbiter (after
// the cut's incarnation check, before it joins): it must not join. The record is undone (the
// target is in the stale set again), and a failover never lands on the empty process that
// the supervisor starts in its place. Health as shipped: a restart within ~2 s is not seen
// down, so nothing but the exit itself tells.

import t from 'tap'
import type { Test } from 'tap'
import { parseConfig } from '../../lib/config/index.js'
import { FileArbiter, type Arbiter, type ArbiterState } from '../../lib/arbiter/index.js'
import { Front } from '../../lib/front/front.js'
import { createLogger } from '../../lib/logger.js'
import { EventLog } from '../helpers/events.js'
import { Client, frontYaml } from '../helpers/cluster.js'
import { freePorts } from '../helpers/ports.js'
import { until } from '../helpers/until.js'

/** A file arbiter whose test-and-set can be held at one chosen write. */
class HeldArbiter implements Arbiter {
  private readonly inner: FileArbiter
  /** Called with each write before it is made; may hold it. */
  gate: (next: ArbiterState, prev: ArbiterState | null) => Promise<void> = async () => {}
  last: ArbiterState | null = null

  constructor (dir: string) { this.inner = new FileArbiter({ dir }) }

  async open (): Promise<ArbiterState> {
    this.last = await this.inner.open()
    return this.last
  }

  async compareAndSet (expect: number, next: ArbiterState): Promise<boolean> {
    await this.gate(next, this.last)
    const won = await this.inner.compareAndSet(expect, next)
    if (won) this.last = next
    return won
  }

  close (): Promise<void> { return this.inner.close() }
}

type Rep = ReturnType<Front['status']>['replicas'][number]

async function start (t: Test, command = '[ftproxy, demo-reseed]'):
Promise<{ f: Front, log: EventLog, arb: HeldArbiter }> {
  const ports = await freePorts(2)
  const replicas = ports.map((port, i) => ({
    name: 'ab'[i] as string, port, command: ['ftproxy', 'demo-server', '--port', String(port)],
  }))
  const yaml = frontYaml(t, replicas, 'protocol: line\n' +
    `reseed: { command: ${command}, timeout: 20s, auto: false }\n`,
  'interval: 1s, timeout: 500ms, fall: 3, rise: 1')
  const cfg = parseConfig(yaml, 'test.yaml')
  const log = new EventLog()
  const arb = new HeldArbiter(cfg.state_dir)
  const logger = createLogger({ level: 'debug', stream: log.stream() })
  const f = new Front(cfg, { log: logger, arbiter: arb })
  t.teardown(() => f.close())
  await f.start()
  return { f, log, arb }
}

t.test('the target exits while its join is recorded: it does not join', async (t) => {
  const { f, log, arb } = await start(t)
  const rep = (name: string): Rep => f.status().replicas.find((r) => r.name === name) as Rep
  await log.next('protected')
  const c = await Client.open(f.address.port)
  t.teardown(() => c.close())
  c.send('SET k1 v1\n')
  t.same(await c.waitLines(1), ['OK'])
  // b restarts empty: stale.
  process.kill(rep('b').pid as number, 'SIGKILL')
  await until(() => rep('b').role === 'stale' && rep('b').health === 'up' &&
    rep('b').pid !== undefined, 'b back, stale, up', 15000)
  // The cut's record of b's join is held until b's server (the one the copy went into) exited.
  let killed: number | null = null
  arb.gate = async (next, prev) => {
    if (killed !== null || !prev?.stale.includes('b') || next.stale.includes('b')) return
    killed = rep('b').pid as number
    process.kill(killed, 'SIGKILL')
    await until(() => rep('b').role !== 'seeding', 'the front to see b exit')
  }
  const err = await f.reseed('b').then(() => null, (e: Error & { details?: unknown }) => e)
  t.not(killed, null, 'b was killed while its join was recorded')
  t.match(err, { code: 'ERR_FTPROXY_RESEED_FAILED', details: { reason: 'target_exited' } })
  t.equal(rep('b').role, 'stale', 'b is stale, not a backup')
  t.ok(arb.last?.stale.includes('b'), 'the arbiter\'s record has b stale again')
  t.equal(f.status().protected, false, 'not protected')
  // Its supervisor starts an empty b: re-seeded for real, it protects, and a failover to it
  // serves what was acknowledged.
  await until(() => rep('b').pid !== undefined && rep('b').pid !== killed &&
    rep('b').health === 'up', 'b restarted', 15000)
  await f.reseed('b')
  t.equal(rep('b').role, 'backup', 'then re-seeded')
  process.kill(rep('a').pid as number, 'SIGKILL')
  await log.next('failover', (e) => e.from === 'a', 15000)
  c.send('GET k1\n')
  t.same(await c.waitLines(2), ['OK', 'v1'], 'the same connection reads the write on b')
})

t.test('the target exits during a slow prepare: the command is stopped then', async (t) => {
  const { f, log } = await start(t, '[sh, -c, "sleep 30; echo ready; read line"]')
  const rep = (name: string): Rep => f.status().replicas.find((r) => r.name === name) as Rep
  await log.next('protected')
  process.kill(rep('b').pid as number, 'SIGKILL')
  await until(() => rep('b').role === 'stale' && rep('b').health === 'up' &&
    rep('b').pid !== undefined, 'b back, stale, up', 15000)
  const running = f.reseed('b').then(() => null, (e: Error & { details?: unknown }) => e)
  await until(() => rep('b').role === 'seeding', 'the re-seed under way')
  const at = Date.now()
  process.kill(rep('b').pid as number, 'SIGKILL')
  const err = await running
  t.match(err, { code: 'ERR_FTPROXY_RESEED_FAILED', details: { reason: 'target_exited' } })
  const took = Date.now() - at
  t.ok(took < 5000, `failed ${took} ms after the exit, not at the 20 s timeout`)
  t.equal(rep('b').role, 'stale', 'b is stale')
})
