// An agent names its server's incarnation in every WELCOME (lib/incarnation.ts): the
// supervised process (pid@start time), or a resp server's run_id, or '' when it cannot tell.
// The front's AgentTransport reports it on every (re)connect, before it resends anything. An
// agent that crashes adopts its supervised server instead of starting a second one. Real
// agents (in this process or as processes), real servers, real signals.

import t from 'tap'
import type { Test } from 'tap'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { parseAgentConfig } from '../../lib/config/index.js'
import { Agent } from '../../lib/agent/agent.js'
import { HANDSHAKE_MS } from '../../lib/agent/handshakes.js'
import {
  PROTOCOL_VERSION, encode, type Frame, type WelcomeFrame,
} from '../../lib/channel/codec.js'
import { agentTransport } from '../helpers/agent-transport.js'
import type { ProtocolName } from '../../lib/protocol/types.js'
import type { AgentTransport } from '../../lib/replica/agent-transport.js'
import { startTime } from '../../lib/util/proc.js'
import {
  Client, agentInProcess, agentProc, demoServer, haveRedis, redisServer,
} from '../helpers/cluster.js'
import { EventLog, type Event } from '../helpers/events.js'
import { freePort, listenLocal } from '../helpers/ports.js'
import { alive } from '../helpers/proc.js'
import { RawChannel } from '../helpers/raw-channel.js'
import { RespConn } from '../helpers/resp.js'
import { until, untilValue } from '../helpers/until.js'

const hello = (protocol: ProtocolName, epoch = 1, frontId = 'front'): Frame => ({
  type: 'HELLO', epoch, version: PROTOCOL_VERSION, frontId, window: 1 << 20, protocol, resume: [],
})

async function welcomeOf (ch: RawChannel): Promise<WelcomeFrame> {
  const f = await ch.next('WELCOME')
  if (f.type !== 'WELCOME') throw new Error('not a WELCOME')
  return f
}

/** The demo server command an agent supervises, on `port`. */
const demoCommand = (port: number): string =>
  `command: ${JSON.stringify(['ftproxy', 'demo-server', '--port', String(port)])}\n`

/** `proc:<pid>@<start>` of the process the supervisor last logged as started (or adopted). */
function supervised (events: Event[], from = 0): string | undefined {
  const e = events.slice(from).filter((e) => e.event === 'replica_process_started').at(-1)
  return e ? `proc:${String(e.pid)}@${String(e.start_time)}` : undefined
}

/**
 * A front's transport to the agent on `port`, its events recorded in order: a front of its
 * own, so at an epoch newer than any before it there.
 */
function transport (tt: Test, port: number, epoch: number, protocol: ProtocolName = 'raw'): {
  tr: AgentTransport, seen: Array<[string, unknown]>, log: EventLog
} {
  const { tr, log } = agentTransport(tt, port, { protocol, epoch })
  const seen: Array<[string, unknown]> = []
  tr.on('incarnation', (id) => seen.push(['incarnation', id]))
  tr.on('ack', (e) => seen.push(['ack', e.seq]))
  tr.on('failed', (err) => seen.push(['failed', (err as NodeJS.ErrnoException).code]))
  return { tr, seen, log }
}

t.test('a supervised server: pid@start time, and a new one after its restart', async (tt) => {
  const port = await freePort()
  const { port: agentPort, events } = await agentInProcess(tt, port, demoCommand(port))
  const first = supervised(events)
  tt.match(first, /^proc:\d+@\d+$/, 'the supervisor started the server')
  const pid = Number(/^proc:(\d+)@/.exec(first ?? '')?.[1])
  tt.equal(first, `proc:${pid}@${startTime(pid)}`, 'the pid and start time /proc shows')

  const ch = await RawChannel.open(tt, agentPort)
  ch.send(hello('raw'))
  tt.equal((await welcomeOf(ch)).incarnation, first, 'the WELCOME names it')
  ch.socket.destroy()

  const { tr, seen, log } = transport(tt, agentPort, 2)
  await until(() => tr.incarnation !== null, 'the transport to report it')
  tt.equal(tr.incarnation, first)
  tt.same(seen, [['incarnation', first]], 'reported once, on the WELCOME')
  tt.match(log.find('channel_up'), { incarnation: first }, 'and logged with channel_up')

  const before = events.length
  process.kill(pid, 'SIGKILL')
  const second = await untilValue(() => supervised(events, before), 'the server to restart')
  tt.not(second, first, 'the restarted server is another incarnation')
  await until(() => tr.incarnation === second, 'the reconnected channel to report it')
  const reports = seen.filter(([e]) => e === 'incarnation')
  tt.same(reports, [['incarnation', first], ['incarnation', second]], 'one per accepted WELCOME')
  tt.match(seen.find(([e]) => e === 'failed'), ['failed', 'ERR_FTPROXY_SERVER_DOWN'],
    'the front heard that the server went down in between')
})

t.test('protocol resp: the run_id of INFO server', { skip: !haveRedis() && 'no redis-server' },
  async (tt) => {
    const redis = await redisServer(tt)
    const conn = await RespConn.open(redis.port)
    tt.teardown(() => conn.socket.destroy())
    const [info] = await conn.call([['INFO', 'server']])
    const runId = /run_id:([0-9a-f]+)/.exec(String(info))?.[1]
    tt.ok(runId, 'INFO server names a run_id')
    const { port } = await agentInProcess(tt, redis.port)

    const ch = await RawChannel.open(tt, port)
    ch.send(hello('resp'))
    tt.equal((await welcomeOf(ch)).incarnation, `redis:${runId}`)
    ch.socket.destroy()
    // The same HELLO with another protocol: nothing to ask the server, nothing to tell.
    const raw = await RawChannel.open(tt, port)
    raw.send(hello('raw'))
    tt.equal((await welcomeOf(raw)).incarnation, '', 'raw: cannot tell')
    raw.socket.destroy()

    const { tr } = transport(tt, port, 2, 'resp')
    await until(() => tr.incarnation !== null, 'the transport to report it')
    tt.equal(tr.incarnation, `redis:${runId}`)
  })

t.test('protocol resp: a reconnect asks on the session\'s control connection, not a new one',
  { skip: !haveRedis() && 'no redis-server' }, async (tt) => {
    const redis = await redisServer(tt)
    const conn = await RespConn.open(redis.port)
    tt.teardown(() => conn.socket.destroy())
    const received = async (): Promise<number> => {
      const [info] = await conn.call([['INFO', 'stats']])
      return Number(/total_connections_received:(\d+)/.exec(String(info))?.[1])
    }
    const { port } = await agentInProcess(tt, redis.port)
    const { tr } = transport(tt, port, 2, 'resp')
    await until(() => tr.incarnation !== null, 'the first report')
    const first = tr.incarnation
    const before = await received()
    const reports: Array<string | null> = []
    tr.on('incarnation', (id) => reports.push(id))
    // The channel drops and comes back: the agent's session (and its control connection)
    // lives on, and the question goes there.
    const ch = (tr as unknown as { channel: { destroy (): void } | null }).channel
    ch?.destroy()
    await until(() => reports.length > 0, 'a report after the reconnect', 10000)
    tt.equal(reports[0], first, 'the same run_id')
    tt.equal(await received(), before, 'no connection opened to the server for it')
  })

t.test('an unsupervised raw server: cannot tell; reported before anything is resent',
  async (tt) => {
    const server = await demoServer(tt)
    const { port } = await agentInProcess(tt, server.port)
    const ch = await RawChannel.open(tt, port)
    ch.send(hello('raw'))
    tt.equal((await welcomeOf(ch)).incarnation, '', 'the WELCOME says it cannot tell')
    ch.socket.destroy()

    // An entry applied before the channel is up is sent after the WELCOME: after the report.
    const { tr, seen } = transport(tt, port, 2)
    tr.apply({ seq: 1, type: 'OPEN', conn: 1 })
    await until(() => seen.length >= 2, 'the report and the ack')
    tt.same(seen, [['incarnation', null], ['ack', 1]], 'the report first, then the entry')
    tt.equal(tr.incarnation, null, 'null: cannot tell')

    // A listener may close the transport on the report: nothing is sent after it.
    tr.close()
    const other = transport(tt, port, 3)
    other.tr.apply({ seq: 1, type: 'OPEN', conn: 1 })
    other.tr.on('incarnation', () => other.tr.close())
    await until(() => other.seen.length > 0, 'the report')
    tt.same(other.seen, [['incarnation', null]])
    tt.equal(other.tr.unacked, 1, 'the entry was not acknowledged: never sent')
  })

/** An agent in this process with its own health_check settings (a YAML mapping's body). */
async function agentWith (tt: Test, serverPort: number, health: string): Promise<number> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ftproxy-incarnation-'))
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const yaml = `listen: 127.0.0.1:0\nserver: 127.0.0.1:${serverPort}\n` +
    `state_dir: ${JSON.stringify(path.join(dir, 'state'))}\nhealth_check: { ${health} }\n`
  const agent = new Agent(parseAgentConfig(yaml, 'agent.yaml'))
  tt.teardown(() => agent.close())
  await agent.start()
  return agent.address.port
}

t.test('a server that does not answer INFO: the WELCOME waits health_check.timeout at most, ' +
  'and other channels are served meanwhile', async (tt) => {
  const sockets = new Set<net.Socket>()
  const silent = net.createServer((s) => { sockets.add(s); s.on('error', () => {}) })
  const port = await listenLocal(silent)
  tt.teardown(() => { for (const s of sockets) s.destroy(); silent.close() })
  const agentPort = await agentWith(tt, port, 'interval: 1s, timeout: 1s, fall: 2, rise: 1')

  const a = await RawChannel.open(tt, agentPort)
  a.send(hello('raw'))
  await welcomeOf(a)
  const b = await RawChannel.open(tt, agentPort)
  const asked = performance.now()
  b.send(hello('resp'))
  a.send({ type: 'OPEN', epoch: 1, seq: 1, conn: 1 })
  tt.match(await a.next('ACK'), { type: 'ACK', seq: 1 }, 'an accepted channel is served')
  tt.notOk(b.frames.some((f) => f.type === 'WELCOME'), 'while the WELCOME waits')
  tt.equal((await welcomeOf(b)).incarnation, '', 'no answer: cannot tell')
  const waited = performance.now() - asked
  tt.ok(waited >= 900, `waited for the server (${Math.round(waited)} ms)`)
  tt.ok(waited < HANDSHAKE_MS, 'well within the handshake time')
})

t.test('a frame between HELLO and WELCOME is a protocol error', async (tt) => {
  const server = await demoServer(tt)
  const { port } = await agentInProcess(tt, server.port)
  const ch = await RawChannel.open(tt, port)
  // In one write: the HEARTBEAT arrives while the HELLO is being answered.
  const early = [...encode(hello('raw')), ...encode({ type: 'HEARTBEAT', epoch: 1 })]
  ch.socket.write(Buffer.concat(early))
  tt.match(await ch.next('ERROR'), { code: 'ERR_FTPROXY_PROTOCOL' })
  await until(() => ch.closed, 'the channel to close')
  tt.notOk(ch.frames.some((f) => f.type === 'WELCOME'), 'no WELCOME')
})

interface Recorded { pid: number, start_time: string }

const recorded = (stateDir: string): Recorded =>
  JSON.parse(readFileSync(path.join(stateDir, 'server.json'), 'utf8')) as Recorded

// Reads `lines` lines of output of conn 1 through the agent's channel.
async function outLines (ch: RawChannel, lines: number): Promise<string> {
  const text = (): string => Buffer.concat(ch.frames.flatMap((f) =>
    f.type === 'OUT' && f.conn === 1 ? [f.data] : [])).toString()
  await until(() => text().split('\n').length > lines || ch.closed, `${lines} lines of output`)
  return text()
}

t.test('an agent killed with SIGKILL and restarted adopts its supervised server', async (tt) => {
  const port = await freePort()
  const extraYaml = demoCommand(port)
  const first = await agentProc(tt, port, { extraYaml })
  const rec = await untilValue(() => {
    try { return recorded(first.stateDir) } catch { return null }
  }, 'the server record')
  tt.teardown(() => {
    if (alive(rec.pid) && startTime(rec.pid) === rec.start_time) process.kill(rec.pid, 'SIGKILL')
  })
  const inc = `proc:${rec.pid}@${rec.start_time}`
  const before = await RawChannel.open(tt, first.port)
  before.send(hello('line'))
  tt.equal((await welcomeOf(before)).incarnation, inc)
  before.socket.destroy()
  const c = await Client.open(port)
  c.send('SET k kept\n')
  tt.same(await c.waitLines(1), ['OK'])
  c.close()

  first.kill('SIGKILL')
  await until(() => first.proc.exitCode !== null || first.proc.signalCode !== null, 'the agent')
  tt.ok(alive(rec.pid), 'the server outlived its agent')
  const second = await agentProc(tt, port, { extraYaml, stateDir: first.stateDir })
  tt.same(recorded(first.stateDir), rec, 'the record still names the same process')
  tt.ok(alive(rec.pid), 'adopted, not replaced')

  const ch = await RawChannel.open(tt, second.port)
  ch.send(hello('line', 2, 'front-2'))
  tt.equal((await welcomeOf(ch)).incarnation, inc, 'the same incarnation as before the crash')
  ch.send({ type: 'OPEN', epoch: 2, seq: 1, conn: 1 })
  ch.send({ type: 'DATA', epoch: 2, seq: 2, conn: 1, data: Buffer.from('GET k\n') })
  tt.equal(await outLines(ch, 1), 'kept\n', 'the data is intact, read through the new agent')
})
