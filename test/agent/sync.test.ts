// SYNC / SYNCED: with a serial protocol an agent acknowledges an entry as soon as it holds it,
// so only the agent can tell when its server has run it. AgentTransport.running stays true
// until the agent says (SYNCED) that every entry handed over was run and answered, and the
// output those entries produced is at the front by then. Real agents, real servers, real
// signals (SIGSTOP holds a server mid-request), a relay that cuts the channel.

import t from 'tap'
import type { Test } from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { parseAgentConfig } from '../../lib/config/index.js'
import { Agent } from '../../lib/agent/agent.js'
import { PROTOCOL_VERSION, type Frame } from '../../lib/channel/codec.js'
import type { ProtocolName } from '../../lib/protocol/types.js'
import type { AgentTransport } from '../../lib/replica/agent-transport.js'
import { demoServer, haveRedis, redisServer } from '../helpers/cluster.js'
import { agentTransport } from '../helpers/agent-transport.js'
import { EventLog } from '../helpers/events.js'
import { RawChannel } from '../helpers/raw-channel.js'
import { Relay } from '../helpers/relay.js'
import { RespConn, encode as resp } from '../helpers/resp.js'
import { until } from '../helpers/until.js'

/**
 * An agent in this process beside the server on `serverPort`, with health checks slow enough
 * that a server held for a few hundred ms (SIGSTOP, DEBUG SLEEP) is not taken for down.
 */
async function agentFor (tt: Test, serverPort: number): Promise<number> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ftproxy-sync-'))
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const yaml = `listen: 127.0.0.1:0\nserver: 127.0.0.1:${serverPort}\n` +
    `state_dir: ${JSON.stringify(path.join(dir, 'state'))}\n` +
    'health_check: { interval: 1s, timeout: 1s, fall: 3, rise: 1 }\n'
  const agent = new Agent(parseAgentConfig(yaml, 'agent.yaml'))
  tt.teardown(() => agent.close())
  await agent.start()
  return agent.address.port
}

interface Front {
  tr: AgentTransport
  /** Output per connection, as it came. */
  out: Map<number, Buffer>
  acked: number[]
  failed: string[]
  log: EventLog
}

function front (tt: Test, port: number, protocol: ProtocolName): Front {
  const { tr, log } = agentTransport(tt, port, { protocol, name: 'sync' })
  const f: Front = { tr, out: new Map(), acked: [], failed: [], log }
  tr.on('output', (conn, data) => {
    f.out.set(conn, Buffer.concat([f.out.get(conn) ?? Buffer.alloc(0), data]))
  })
  tr.on('ack', (e) => f.acked.push(e.seq))
  tr.on('failed', (err) => f.failed.push((err as NodeJS.ErrnoException).code ?? err.message))
  return f
}

const text = (f: Front, conn: number): string => f.out.get(conn)?.toString() ?? ''

/**
 * Polls `running` as Roles.untilInSync does (every 2 ms) until it is false; every sample
 * notes whether `done` held then. Rejects after `ms`.
 */
async function untilRan (
  f: Front, done: () => boolean, ms = 5000
): Promise<Array<{ running: boolean, done: boolean }>> {
  const samples: Array<{ running: boolean, done: boolean }> = []
  const deadline = performance.now() + ms
  for (;;) {
    const running = f.tr.running
    samples.push({ running, done: done() })
    if (!running) return samples
    if (performance.now() > deadline) throw new Error('timed out: running to turn false')
    await new Promise((resolve) => setTimeout(resolve, 2))
  }
}

t.test('resp: running until a slow request is answered, false once its reply is here',
  { skip: !haveRedis() && 'no redis-server' }, async (tt) => {
    const redis = await redisServer(tt, ['--enable-debug-command', 'yes'])
    const f = front(tt, await agentFor(tt, redis.port), 'resp')
    tt.equal(f.tr.running, false, 'nothing handed over: nothing running')
    f.tr.apply({ seq: 1, type: 'OPEN', conn: 1 })
    f.tr.apply({ seq: 2, type: 'DATA', conn: 1, data: resp(['DEBUG', 'SLEEP', '0.3']) })
    // A second connection's request waits behind the first one's turn.
    f.tr.apply({ seq: 3, type: 'OPEN', conn: 2 })
    f.tr.apply({ seq: 4, type: 'DATA', conn: 2, data: resp(['SET', 'k', 'v']) })
    await until(() => f.acked.length === 4, 'the early acks')
    tt.equal(text(f, 1), '', 'acknowledged before the server answered')
    const t0 = performance.now()
    const samples = await untilRan(f, () => text(f, 1) === '+OK\r\n' && text(f, 2) === '+OK\r\n')
    const waited = performance.now() - t0
    tt.ok(samples.some((s) => s.running && !s.done), 'running while the server sleeps')
    tt.ok(samples.every((s) => s.running || s.done), 'false only with every reply here')
    tt.ok(waited >= 200, `waited for the sleep (${Math.round(waited)} ms)`)
    tt.equal(f.tr.running, false, 'and stays false')

    // More entries: running again until they ran.
    f.tr.apply({ seq: 5, type: 'DATA', conn: 2, data: resp(['GET', 'k']) })
    tt.equal(f.tr.running, true, 'a new entry is not confirmed yet')
    const again = await untilRan(f, () => text(f, 2) === '+OK\r\n$1\r\nv\r\n')
    tt.ok(again.every((s) => s.running || s.done), 'its reply first')
    tt.same(f.failed, [], 'nothing failed')
  })

t.test('line (the demo server): a server stopped mid-request keeps it running',
  async (tt) => {
    const server = await demoServer(tt)
    const f = front(tt, await agentFor(tt, server.port), 'line')
    f.tr.apply({ seq: 1, type: 'OPEN', conn: 1 })
    await until(() => !f.tr.running, 'the connection to open')
    server.kill('SIGSTOP')
    tt.teardown(() => server.kill('SIGCONT'))
    f.tr.apply({ seq: 2, type: 'DATA', conn: 1, data: Buffer.from('SET a 1\nGET a\n') })
    await until(() => f.acked.length === 2, 'the early ack')
    // Held for a while: every poll in that time says running (SYNCs asked, none answered).
    const held = performance.now() + 300
    let polls = 0
    let idle = 0
    while (performance.now() < held) {
      if (!f.tr.running) idle++
      polls++
      await new Promise((resolve) => setTimeout(resolve, 2))
    }
    tt.ok(polls > 10, `${polls} polls`)
    tt.equal(idle, 0, 'running on every poll while the server is stopped')
    tt.equal(text(f, 1), '', 'no reply yet')
    server.kill('SIGCONT')
    const samples = await untilRan(f, () => text(f, 1) === 'OK\n1\n')
    tt.ok(samples.every((s) => s.running || s.done), 'false only once both replies are here')
    tt.same(f.failed, [], 'nothing failed')
  })

t.test('raw: false once the agent wrote every entry to the server', async (tt) => {
  const server = await demoServer(tt)
  const f = front(tt, await agentFor(tt, server.port), 'raw')
  f.tr.apply({ seq: 1, type: 'OPEN', conn: 1 })
  f.tr.apply({ seq: 2, type: 'DATA', conn: 1, data: Buffer.from('SET r 1\n') })
  tt.equal(f.tr.running, true, 'not confirmed yet')
  await untilRan(f, () => true)
  tt.same(f.acked, [1, 2], 'written (acknowledged) before it turned false')
})

t.test('a channel cut with a SYNC in flight: entries resent once, running converges',
  { skip: !haveRedis() && 'no redis-server' }, async (tt) => {
    const redis = await redisServer(tt, ['--enable-debug-command', 'yes'])
    const relay = await Relay.start(tt, await agentFor(tt, redis.port))
    const f = front(tt, relay.port, 'resp')
    f.tr.apply({ seq: 1, type: 'OPEN', conn: 1 })
    f.tr.apply({ seq: 2, type: 'DATA', conn: 1, data: resp(['DEBUG', 'SLEEP', '0.2']) })
    await until(() => f.acked.length === 2, 'the early acks')
    tt.equal(f.tr.running, true, 'a SYNC goes out')
    relay.cut()
    // Handed over while the channel is down: held, resent after the WELCOME.
    f.tr.apply({ seq: 3, type: 'DATA', conn: 1, data: resp(['INCR', 'n']) })
    f.tr.apply({ seq: 4, type: 'DATA', conn: 1, data: resp(['INCR', 'n']) })
    tt.equal(f.tr.running, true, 'still running, whatever the channel')
    await until(() => f.log.events.filter((e) => e.event === 'channel_up').length >= 2,
      'the channel back')
    const samples = await untilRan(f, () => text(f, 1) === '+OK\r\n:1\r\n:2\r\n')
    tt.ok(samples.every((s) => s.running || s.done), 'false only with every reply here')
    tt.same(f.acked, [1, 2, 3, 4], 'each entry acknowledged once')
    const direct = await RespConn.open(redis.port)
    tt.teardown(() => direct.socket.destroy())
    tt.same((await direct.call([['GET', 'n']])).map(String), ['2'], 'each INCR ran once')
    tt.same(f.failed, [], 'nothing failed')
  })

const version = PROTOCOL_VERSION
const hello = (protocol: ProtocolName): Frame => ({
  type: 'HELLO', epoch: 1, version, frontId: 'f', window: 1 << 20, protocol, resume: [],
})

const types = (ch: RawChannel): string[] => ch.frames.map((f) => f.type)

t.test('the agent: SYNC answered once its server ran everything, after the output',
  async (tt) => {
    const server = await demoServer(tt)
    const ch = await RawChannel.open(tt, await agentFor(tt, server.port))
    ch.send(hello('line'))
    await ch.next('WELCOME')
    ch.send({ type: 'SYNC', epoch: 1, seq: 0 })
    tt.match(await ch.next('SYNCED'), { seq: 0 }, 'idle: answered at once')
    ch.frames.length = 0

    ch.send({ type: 'OPEN', epoch: 1, seq: 1, conn: 1 })
    await until(() => types(ch).filter((x) => x === 'ACK').length === 1, 'the OPEN applied')
    server.kill('SIGSTOP')
    tt.teardown(() => server.kill('SIGCONT'))
    ch.send({ type: 'DATA', epoch: 1, seq: 2, conn: 1, data: Buffer.from('PING\n') })
    ch.send({ type: 'SYNC', epoch: 1, seq: 2 })
    ch.send({ type: 'SYNC', epoch: 1, seq: 1 })
    // Acknowledged as soon as it is held, so after both SYNCs were taken.
    ch.send({ type: 'OPEN', epoch: 1, seq: 3, conn: 2 })
    await until(() => ch.frames.some((f) => f.type === 'ACK' && f.seq === 3), 'the OPEN held')
    tt.notOk(types(ch).includes('SYNCED'), 'not answered while the server is stopped')
    server.kill('SIGCONT')
    tt.match(await ch.next('SYNCED'), { seq: 3 }, 'answered with the last seq applied')
    const seen = types(ch)
    tt.ok(seen.indexOf('OUT') >= 0 && seen.indexOf('OUT') < seen.indexOf('SYNCED'),
      'the reply went out before it')
    // Two SYNCs waiting got one answer: a second would have gone out with the first.
    ch.send({ type: 'DATA', epoch: 1, seq: 4, conn: 2, data: Buffer.from('PING\n') })
    ch.send({ type: 'SYNC', epoch: 1, seq: 4 })
    await until(() => ch.frames.some((f) => f.type === 'SYNCED' && f.seq === 4), 'SYNCED 4')
    tt.equal(types(ch).filter((x) => x === 'SYNCED').length, 2, 'one answer per wait')

    // Asking about an entry it never got is a protocol error.
    ch.send({ type: 'SYNC', epoch: 1, seq: 5 })
    const err = await ch.next('ERROR')
    tt.match(err, { code: 'ERR_FTPROXY_PROTOCOL' })
    await until(() => ch.closed, 'the channel closed')
  })
