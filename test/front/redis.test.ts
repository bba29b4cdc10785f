// End to end with a real legacy server: two redis-server copies as direct replicas, a front
// in this process, many connections pipelining INCRs over RESP. One redis is SIGKILLed
// mid-load (when enough replies arrived, not after a timer); every reply each client got is
// checked, and then the surviving redis itself is asked whether it holds exactly what the
// clients were told.

import t from 'tap'
import type { Test } from 'tap'
import { TestFront, agentInProcess, frontYaml, haveRedis, redisServer } from '../helpers/cluster.js'
import { freePort } from '../helpers/ports.js'
import { RespConn, encode } from '../helpers/resp.js'
import { until } from '../helpers/until.js'

const skip = haveRedis() ? false : 'redis-server not installed'

const CONNS = 20
const KEYS = 5 // per connection, used round-robin
const COUNT = 500 // INCRs per connection
const BURST = 10 // commands per write
const WINDOW = 40 // unanswered commands per connection at most
const KILL_AFTER = CONNS * COUNT / 5 // replies in all before the kill

const keyOf = (conn: number, cmd: number): string => `ft:${conn}:${cmd % KEYS}`
/** The reply the n-th INCR of a connection must get (n from 0): its key's count so far. */
const expected = (cmd: number): number => Math.floor(cmd / KEYS) + 1

interface Load {
  conns: RespConn[]
  /** Total replies received when the kill happened (0: never). */
  killedAt: number
  /** Commands sent and not yet answered when the kill happened. */
  inflightAtKill: number
  /** Why the load did not finish within its deadline (null: it did). */
  timedOut: string | null
  ms: number
}

// Every connection INCRs its own keys round-robin, COUNT times, pipelined: topped up from
// its own data events, so the load keeps flowing through the kill. `kill` runs once, from a
// data event, as soon as `killAfter` replies arrived in all.
async function load (port: number, killAfter: number, kill: () => void): Promise<Load> {
  const conns = await Promise.all(Array.from({ length: CONNS }, () => RespConn.open(port)))
  // Each connection (i: its index) and how many of its replies were counted in `total`.
  const drives = conns.map((r, i) => ({ r, i, counted: 0 }))
  let total = 0
  let killedAt = 0
  let inflightAtKill = 0
  const pump = (d: { r: RespConn, i: number }): void => {
    while (d.r.sent < COUNT && d.r.sent - d.r.received < WINDOW) {
      const n = Math.min(BURST, COUNT - d.r.sent)
      const out: Buffer[] = []
      for (let k = d.r.sent; k < d.r.sent + n; k++) out.push(encode(['INCR', keyOf(d.i, k)]))
      d.r.sendRaw(Buffer.concat(out), n)
    }
  }
  const started = Date.now()
  for (const d of drives) {
    d.r.onData = () => {
      total += d.r.received - d.counted
      d.counted = d.r.received
      if (killedAt === 0 && total >= killAfter) {
        killedAt = total
        inflightAtKill = drives.reduce((x, y) => x + y.r.sent, 0) - total
        kill()
      }
      pump(d)
    }
    pump(d)
  }
  let timedOut: string | null = null
  const broken = (r: RespConn): boolean => r.closed || r.error !== null
  // On a timeout, go on to the checks: they say which connection is missing what.
  await until(() => total >= CONNS * COUNT || conns.some(broken), 'every reply', 60000)
    .catch((err: Error) => { timedOut = err.message })
  return { conns, killedAt, inflightAtKill, timedOut, ms: Date.now() - started }
}

// No gap, no duplicate, nothing but the integers each key's count must go through; the
// connection is still open and saw no error. Returns the acknowledged INCRs per key.
function checkReplies (tt: Test, conns: RespConn[]): Map<string, number> {
  const acked = new Map<string, number>()
  conns.forEach((r, i) => {
    const want = Array.from({ length: COUNT }, (_, k) => expected(k))
    tt.same(r.replies, want, `conn ${i}: ${COUNT} replies, 1,2,3... per key in order`)
    tt.equal(r.closed, false, `conn ${i} kept its connection`)
    tt.equal(r.ended, false, `conn ${i} was not ended`)
    tt.equal(r.error, null, `conn ${i} saw no error (nothing but RESP replies)`)
    r.replies.forEach((v, k) => {
      if (typeof v === 'number') acked.set(keyOf(i, k), (acked.get(keyOf(i, k)) ?? 0) + 1)
    })
  })
  return acked
}

// Ask the surviving redis itself, not through the front: every acknowledged INCR is there,
// none twice, and there is nothing else.
async function checkServer (tt: Test, port: number, acked: Map<string, number>): Promise<void> {
  const direct = await RespConn.open(port)
  const keys = [...acked.keys()]
  const got = await direct.call(keys.map((k) => ['GET', k]))
  const bad = keys.filter((k, i) => got[i] !== String(acked.get(k)))
  const wrong = bad.map((k) => `${k}=${String(got[keys.indexOf(k)])}`)
  tt.same(wrong, [], `redis holds exactly the acknowledged count for each of ${keys.length} keys`)
  tt.same(await direct.call([['DBSIZE']]), [CONNS * KEYS], 'and no other key')
  direct.close()
}

for (const mode of ['ack', 'match'] as const) {
  t.test(`SIGKILL of the primary redis under pipelined load (${mode})`, { skip }, async (tt) => {
    const a = await redisServer(tt)
    const b = await redisServer(tt)
    const replicas = [{ name: 'a', port: a.port }, { name: 'b', port: b.port }]
    const f = await new TestFront().start(tt, frontYaml(tt, replicas, `output_commit: ${mode}`))
    const run = await load(f.port, KILL_AFTER, () => a.kill('SIGKILL'))
    const { conns, killedAt, inflightAtKill, timedOut, ms } = run
    tt.comment(`${CONNS * COUNT} INCRs on ${CONNS} connections in ${ms}ms; primary killed ` +
      `after ${killedAt} replies, ${inflightAtKill} INCRs in flight`)
    tt.ok(killedAt > 0 && killedAt < CONNS * COUNT, 'the primary was killed mid-load')
    tt.ok(inflightAtKill > 0, 'with INCRs in flight')
    tt.equal(timedOut, null, 'the load finished within its deadline')
    const acked = checkReplies(tt, conns)
    const ev = await f.waitEvent('failover')
    tt.match(ev, { from: 'a', to: 'b', epoch: 2 })
    tt.type(ev.duration_ms, 'number')
    tt.comment(`failover took ${String(ev.duration_ms)}ms (${String(ev.reason)})`)
    tt.equal(f.role('a'), 'stale')
    tt.equal(f.role('b'), 'primary')
    tt.ok(f.find('unprotected'), 'says it runs unprotected')
    tt.notOk(f.find('divergence'), 'no divergence')
    tt.notOk(f.find('splice_failed'), 'every connection spliced')
    await checkServer(tt, b.port, acked)
    for (const r of conns) r.close()
  })
}

t.test('SIGKILL of the backup redis under pipelined load', { skip }, async (tt) => {
  const a = await redisServer(tt)
  const b = await redisServer(tt)
  const replicas = [{ name: 'a', port: a.port }, { name: 'b', port: b.port }]
  const f = await new TestFront().start(tt, frontYaml(tt, replicas, 'output_commit: ack'))
  const run = await load(f.port, KILL_AFTER, () => b.kill('SIGKILL'))
  const { conns, killedAt, inflightAtKill, timedOut, ms } = run
  tt.comment(`${CONNS * COUNT} INCRs on ${CONNS} connections in ${ms}ms; backup killed ` +
    `after ${killedAt} replies, ${inflightAtKill} INCRs in flight`)
  tt.ok(killedAt > 0 && killedAt < CONNS * COUNT, 'the backup was killed mid-load')
  tt.ok(inflightAtKill > 0, 'with INCRs in flight')
  tt.equal(timedOut, null, 'the load finished within its deadline')
  const acked = checkReplies(tt, conns)
  const down = await f.waitEvent('replica_down', (e) => e.replica === 'b')
  tt.comment(`backup down: ${String(down.reason)}`)
  const un = await f.waitEvent('unprotected')
  tt.match(un, { on_backup_loss: 'continue' })
  tt.notOk(f.find('failover'), 'no failover')
  tt.notOk(f.find('divergence'), 'no divergence')
  tt.equal(f.role('b'), 'stale')
  tt.equal(f.front.status().primary, 'a')
  tt.equal(f.front.status().protected, false)
  await checkServer(tt, a.port, acked)
  for (const r of conns) r.close()
})

t.test('via agents: SIGKILL of the primary redis under pipelined load', { skip }, async (tt) => {
  // Each agent starts and supervises its own redis, as in production.
  const [portA, portB] = [await freePort(), await freePort()]
  const redisCommand = (p: number): string =>
    `command: [redis-server, --port, "${p}", --bind, 127.0.0.1, --save, "", --appendonly, "no"]`
  const [agentA, agentB] = await Promise.all([
    agentInProcess(tt, portA, redisCommand(portA)),
    agentInProcess(tt, portB, redisCommand(portB)),
  ])
  const dir = tt.testdir({})
  const yaml = `listen: 127.0.0.1:0\nstate_dir: ${JSON.stringify(dir)}\n` +
    'timeouts: { heartbeat: 1s }\nhealth_check: { interval: 200ms, timeout: 200ms }\n' +
    `replicas:\n  - name: a\n    agent: 127.0.0.1:${agentA.port}\n` +
    `  - name: b\n    agent: 127.0.0.1:${agentB.port}\n`
  const f = await new TestFront().start(tt, yaml)
  await f.waitEvent('channel_up', (e) => e.replica === 'a')
  await f.waitEvent('channel_up', (e) => e.replica === 'b')
  const pid = agentA.events.find((e) => e.event === 'replica_process_started')?.pid
  tt.type(pid, 'number', 'the primary agent started redis')
  if (typeof pid !== 'number') return
  // The start took an epoch, and another to record what the agents named.
  const before = f.front.status().epoch
  const run = await load(f.port, KILL_AFTER, () => process.kill(pid, 'SIGKILL'))
  const { conns, killedAt, timedOut, ms } = run
  tt.comment(`${CONNS * COUNT} INCRs through agents in ${ms}ms; ` +
    `primary redis killed after ${killedAt} replies`)
  tt.ok(killedAt > 0 && killedAt < CONNS * COUNT, 'killed mid-load')
  tt.equal(timedOut, null, 'the load finished within its deadline')
  const acked = checkReplies(tt, conns)
  const ev = await f.waitEvent('failover')
  tt.match(ev, { from: 'a', to: 'b', epoch: before + 1 })
  tt.comment(`failover took ${String(ev.duration_ms)}ms (${String(ev.reason)})`)
  tt.notOk(f.find('divergence'), 'no divergence')
  await checkServer(tt, portB, acked)
  for (const r of conns) r.close()
})
