// Role changes in serial mode (protocol: resp) under the shared-key mix of redis-shared.test.ts,
// against two real redis-server copies. A planned switchover, and one back, lose nothing and
// keep the system protected. A SIGKILL of the primary while the backup lags behind it (queued
// turns): the promoted backup finishes those turns in the log's order, so every reply the
// clients were given is what the survivor holds, and the splice finds the very bytes the old
// primary sent. A SIGKILL while the front has part of an uncompared reply (which the new
// primary cannot finish the same way): that client gets a prefix of the old primary's
// replies, then the close (splice_failed).

import t from 'tap'
import type { Test } from 'tap'
import type { FailoverInfo } from '../../lib/front/front.js'
import { haveRedis, redisPair, type TestFront } from '../helpers/cluster.js'
import { checkMix, converge, runMix, type MixRun } from '../helpers/redis-load.js'
import type { Event } from '../helpers/events.js'
import { RespConn } from '../helpers/resp.js'
import { until } from '../helpers/until.js'

const skip = haveRedis() ? false : 'redis-server not installed'

const YAML = 'protocol: resp\noutput_commit: ack'

/** A switchover's outcome, or its error (a refusal must fail the test, not throw). */
type Outcome = FailoverInfo | Error

/** The mix on `f`, with one switchover to `to` once a third of it was answered. */
async function mixWithSwitchover (f: TestFront, to: string, seed: number):
Promise<{ run: MixRun, outcome: Outcome | null, unprotected: number }> {
  const conns = 20
  const requests = 5000
  let switching: Promise<Outcome> | null = null
  let unprotected = 0
  const run = await runMix(f.port, {
    conns,
    requests,
    burst: 25,
    window: 100,
    seed,
    ms: 15000,
    onProgress: (acked) => {
      if (switching || acked < conns * requests / 3) return
      switching = f.front.switchover(to).catch((err: Error) => err)
    },
    onTick: () => { if (!f.front.status().protected) unprotected++ },
  })
  return { run, outcome: await (switching ?? Promise.resolve(null)), unprotected }
}

t.test('a switchover and one back under the shared-key mix lose nothing', { skip }, async (tt) => {
  const { a, b, f } = await redisPair(tt, YAML)
  for (const [from, to, primary, seed] of [['a', 'b', b, 31], ['b', 'a', a, 32]] as const) {
    const { run, outcome, unprotected } = await mixWithSwitchover(f, to, seed)
    const { tally } = run
    tt.comment(`${tally.acked}/${tally.sent} replies in ${run.ms}ms; switchover ${from} → ${to} ` +
      `took ${outcome instanceof Error ? '-' : outcome?.duration_ms}ms`)
    tt.match(outcome, { from, to, reason: 'switchover' }, `switched from ${from} to ${to}`)
    tt.equal(run.timedOut, null, 'the load finished within its deadline')
    tt.equal(run.broken, 0, 'no connection broke')
    tt.equal(tally.acked, tally.sent, 'every request answered')
    tt.same(tally.bad, [], 'every reply has the shape its request expects')
    tt.equal(unprotected, 0, '/status said protected at every sample')
    tt.same(await checkMix(primary.port, tally), [],
      `the new primary ${to} holds exactly what clients were told`)
    tt.same(await converge(a.port, b.port), [], 'both copies identical')
    for (const c of run.conns) c.close()
    // The next round's tally starts from empty keys: flushed through the front, on both.
    const c = await RespConn.open(f.port)
    tt.equal(await c.command('FLUSHALL'), 'OK')
    c.close()
  }
  const st = f.front.status()
  tt.equal(st.primary, 'a', 'a is the primary again')
  tt.same(st.replicas.map((r) => r.role), ['primary', 'backup'], 'b is a backup again')
  tt.equal(st.protected, true, 'still protected')
  tt.same(f.all('divergence'), [], 'no divergence')
  tt.notOk(f.find('unprotected'), 'never unprotected')
  tt.same(f.all('switchover_splice'), [], 'every connection swapped without a splice')
  tt.notOk(f.find('protocol_error'), 'every request framed')
})

const CONNS = 40
const REQUESTS = 5000
/** Entries the backup must hold unapplied when the primary is killed. */
const LAG = 300
/** How long the backup's writes are paused at most (within timeouts.stall, 1s). */
const PAUSE_MS = 700

t.test('SIGKILL of the primary while the backup lags: it finishes its turns in order',
  { skip }, async (tt) => {
    const { a, b, f } = await redisPair(tt, YAML)
    // The backup lags while its server holds write commands: every reply the primary gives
    // after the pause (the mix is writes) is one the backup owes.
    const pauser = await RespConn.open(b.port)
    const kill = { pausedAt: 0, ackedAtPause: 0, at: 0, lag: 0 }
    const step = (acked: number): void => {
      if (kill.at > 0) return
      if (kill.pausedAt === 0) {
        if (acked < CONNS * REQUESTS / 5) return
        kill.pausedAt = Date.now()
        kill.ackedAtPause = acked
        pauser.send([['CLIENT', 'PAUSE', PAUSE_MS, 'WRITE']])
        return
      }
      const lag = acked - kill.ackedAtPause
      if (lag < LAG && Date.now() - kill.pausedAt < PAUSE_MS * 0.8) return
      kill.at = acked
      kill.lag = lag
      a.kill('SIGKILL')
      pauser.send([['CLIENT', 'UNPAUSE']])
    }
    let acked = 0
    const run = await runMix(f.port, {
      conns: CONNS,
      requests: REQUESTS,
      burst: 100,
      window: 400,
      seed: 41,
      ms: 30000,
      onProgress: (n) => { acked = n; step(n) },
      onTick: () => step(acked),
    })
    const { tally } = run
    const spliceFailed = f.all('splice_failed')
    tt.comment(`${tally.acked}/${tally.sent} replies in ${run.ms}ms; primary killed after ` +
      `${kill.at} with the backup ${kill.lag} replies behind; ${run.broken} connections ` +
      `broke, ${spliceFailed.length} splice_failed`)
    tt.ok(kill.at > 0 && kill.at < tally.sent, 'the primary was killed mid-load')
    tt.ok(kill.lag >= LAG, `the backup was at least ${LAG} replies behind when it was killed`)
    tt.equal(run.timedOut, null, 'the load finished within its deadline')
    tt.same(tally.bad, [], 'every reply has the shape its request expects')
    tt.equal(run.broken, spliceFailed.length,
      'every connection survived, but those closed as splice_failed')
    tt.same(spliceFailed.map((e) => e.reason), spliceFailed.map(() => 'reply in progress'),
      'and those had a reply in progress')
    const ev = await f.waitEvent('failover')
    tt.match(ev, { from: 'a', to: 'b' })
    tt.comment(`failover took ${String(ev.duration_ms)}ms (${String(ev.reason)})`)
    tt.equal(f.role('b'), 'primary')
    tt.same(f.all('divergence'), [], 'no divergence before or after')
    tt.same(await checkMix(b.port, tally), [],
      'the survivor holds every acknowledged write once, and nothing unacknowledged beyond ' +
      'the requests never answered')
    pauser.close()
    for (const c of run.conns) c.close()
  })

const MEMBERS = Array.from({ length: 50000 }, (_, i) => `member:${i}`)
const HEADER = `*${MEMBERS.length}\r\n`
const ELEMENT = /\$(\d+)\r\n(member:(\d+))\r\n/y
/** Fewer bytes than this left: the start of an element, or not; no telling. */
const TAIL = 20
const PIPELINE = 8
const ROUNDS = 6

/**
 * Where `text` stops being SMEMBERS replies of MEMBERS (each member once per reply, in any
 * order), the last of them cut anywhere; -1 if it never does. Another reply's bytes inside
 * one are caught, a cut is not.
 */
function firstForeign (text: string): number {
  let pos = 0
  while (pos < text.length) {
    if (!text.startsWith(HEADER, pos)) return HEADER.startsWith(text.slice(pos)) ? -1 : pos
    pos += HEADER.length
    const seen = new Set<string>()
    for (let k = 0; k < MEMBERS.length && pos < text.length; k++) {
      ELEMENT.lastIndex = pos
      const m = ELEMENT.exec(text)
      if (m === null) return text.length - pos < TAIL ? -1 : pos
      const [all, len, member = '', n] = m
      if (member.length !== Number(len) || Number(n) >= MEMBERS.length || seen.has(member)) {
        return pos
      }
      seen.add(member)
      pos += all.length
    }
  }
  return -1
}

interface Round { splice: Event[], foreign: number, bytes: number }

/**
 * A client pipelines SMEMBERS of a 50k-member set (each copy lists it in its own order: not
 * compared, the client gets the primary's) and reads nothing, so the replies back up and the
 * primary holds part of them unsent: the front has a reply in progress. Then the primary is
 * killed, and the client reads what comes.
 */
async function killMidReply (tt: Test): Promise<Round> {
  const { a, f } = await redisPair(tt, YAML)
  const setup = await RespConn.open(f.port)
  const adds = []
  for (let i = 0; i < MEMBERS.length; i += 5000) {
    adds.push(['SADD', 'big:s', ...MEMBERS.slice(i, i + 5000)])
  }
  await setup.call(adds, 30000)
  setup.close()
  const c = await RespConn.open(f.port)
  const chunks: Buffer[] = []
  c.socket.on('data', (d: Buffer) => chunks.push(d))
  c.socket.pause()
  c.send(Array.from({ length: PIPELINE }, () => ['SMEMBERS', 'big:s']))
  const direct = await RespConn.open(a.port)
  const holding = /omem=[1-9]\d* .*cmd=smembers/
  await until(async () => holding.test(String(await direct.command('CLIENT', 'LIST'))),
    'the primary to hold part of its replies unsent')
  direct.close()
  a.kill('SIGKILL')
  await f.waitEvent('failover')
  c.socket.resume()
  await until(() => c.ended || c.closed || c.received === PIPELINE, 'the replies, or the close')
  const text = Buffer.concat(chunks).toString('latin1')
  c.close()
  return { splice: f.all('splice_failed'), foreign: firstForeign(text), bytes: text.length }
}

t.test('SIGKILL of the primary in the middle of an uncompared reply: the client gets a prefix ' +
  'of the old primary\'s replies, then the close (splice_failed)', { skip }, async (tt) => {
  let hit = 0
  for (let i = 0; i < ROUNDS && hit === 0; i++) {
    await tt.test(`round ${i}`, async (rt) => {
      const r = await killMidReply(rt)
      rt.comment(`${r.bytes} bytes; splice_failed: ${JSON.stringify(r.splice.map((e) =>
        e.reason ?? 'bytes differ'))}; foreign bytes from ${r.foreign}`)
      rt.equal(r.foreign, -1, 'every byte the client got is the old primary\'s replies, cut ' +
        'at most once at the end')
      if (r.splice.length === 0) return
      hit++
      // Closed either at once (the new primary had dropped its own bytes of that reply), or
      // once its own reply differs from the part the client has (bytes differ).
      rt.equal(r.splice.length, 1, 'that connection closed as splice_failed')
    })
  }
  tt.ok(hit > 0, `the primary was killed with a reply in progress (in ${ROUNDS} rounds at most)`)
})
