// What a connection can do to an agent before its HELLO is accepted: change nothing, make the
// agent hold a few KiB at most, for HANDSHAKE_MS at most, with at most MAX_PENDING such
// connections at once; and how far a HELLO may move the epoch. Real sockets against an agent
// in this process, frames written with the codec (or as raw bytes).

import t from 'tap'
import type { Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseAgentConfig } from '../../lib/config/index.js'
import { Agent, MAX_EPOCH_JUMP } from '../../lib/agent/agent.js'
import { HANDSHAKE_MS, MAX_PENDING } from '../../lib/agent/handshakes.js'
import {
  DEFAULT_MAX_FRAME, FrameType, PROTOCOL_VERSION, type Frame,
} from '../../lib/channel/codec.js'
import { createLogger } from '../../lib/logger.js'
import { demoServer } from '../helpers/cluster.js'
import { EventLog } from '../helpers/events.js'
import { haveOpenssl } from '../helpers/openssl.js'
import { RawChannel } from '../helpers/raw-channel.js'
import { until } from '../helpers/until.js'

const U32 = 0xffffffff
/** Long enough for a loaded machine, well short of the handshake timeout. */
const AT_ONCE_MS = HANDSHAKE_MS - 1500
/** The handshake timeout and then some. */
const TIMEOUT_MS = HANDSHAKE_MS + 5000

interface Here { agent: Agent, port: number, log: EventLog, epochFile: string }

/** An agent in this process beside a demo server, its events and its epoch file at hand. */
async function agentHere (tt: Test, extraYaml = ''): Promise<Here> {
  const server = await demoServer(tt)
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ftproxy-handshake-'))
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const stateDir = path.join(dir, 'state')
  const yaml = `listen: 127.0.0.1:0\nserver: 127.0.0.1:${server.port}\n` +
    `state_dir: ${JSON.stringify(stateDir)}\n` +
    `health_check: { interval: 200ms, timeout: 200ms, fall: 2, rise: 1 }\n${extraYaml}\n`
  const log = new EventLog()
  const agent = new Agent(parseAgentConfig(yaml, 'agent.yaml'),
    { log: createLogger({ level: 'debug', stream: log.stream() }) })
  tt.teardown(() => agent.close())
  await agent.start()
  return { agent, port: agent.address.port, log, epochFile: path.join(stateDir, 'epoch.json') }
}

function recordedEpoch (h: Here): number | null {
  if (!existsSync(h.epochFile)) return null
  return (JSON.parse(readFileSync(h.epochFile, 'utf8')) as { epoch: number }).epoch
}

/** The head of a HELLO that announces `len` and never sends the rest. */
function partialHello (len: number, body = 1000): Buffer {
  const b = Buffer.alloc(4 + 1 + 4 + body)
  b.writeUInt32BE(len, 0)
  b.writeUInt8(FrameType.HELLO, 4)
  b.write('FTPX', 9, 'latin1')
  return b
}

const closedCount = (rs: RawChannel[]): number => rs.filter((r) => r.closed).length

/** One frame of every type but HELLO, each at the largest epoch. */
const notHello: Frame[] = [
  {
    type: 'WELCOME', epoch: U32, version: PROTOCOL_VERSION, applied: 0, incarnation: '', acks: [],
  },
  { type: 'OPEN', epoch: U32, seq: 1, conn: 1 },
  { type: 'DATA', epoch: U32, seq: 1, conn: 1, data: Buffer.from('x') },
  { type: 'EOF', epoch: U32, seq: 1, conn: 1 },
  { type: 'CLOSE', epoch: U32, seq: 1, conn: 1 },
  { type: 'ACK', epoch: U32, seq: 1 },
  { type: 'OUT', epoch: U32, conn: 1, offset: 0, data: Buffer.from('x') },
  { type: 'OUT_EOF', epoch: U32, conn: 1, offset: 0, reset: false },
  { type: 'OUT_CLOSE', epoch: U32, conn: 1 },
  { type: 'OUT_ACK', epoch: U32, conn: 1, offset: 0 },
  { type: 'HEARTBEAT', epoch: U32 },
  { type: 'ERROR', epoch: U32, code: 'ERR_X', message: 'x' },
]

t.test('a frame before HELLO changes nothing: not the epoch, not a live channel', async (tt) => {
  const h = await agentHere(tt)
  const honest = await RawChannel.open(tt, h.port)
  honest.hello(1, 'honest')
  await honest.next('WELCOME')
  tt.equal(recordedEpoch(h), 1)

  // The report's 9 bytes: HEARTBEAT at epoch 0xffffffff, then the writer's end (socat -t1).
  const nine = await RawChannel.open(tt, h.port)
  nine.socket.end(Buffer.from('000000050cffffffff', 'hex'))
  tt.match(await nine.next('ERROR'), { code: 'ERR_FTPROXY_PROTOCOL' })
  await until(() => nine.closed, 'the agent to close the connection')
  for (const f of notHello) {
    const r = await RawChannel.open(tt, h.port)
    r.send(f)
    tt.match(await r.next('ERROR'), { code: 'ERR_FTPROXY_PROTOCOL' }, `${f.type} before HELLO`)
    await until(() => r.closed, `the agent to close after ${f.type}`)
  }
  // Not a valid HELLO either: a version this agent does not speak.
  const old = await RawChannel.open(tt, h.port)
  old.send({
    type: 'HELLO', epoch: 7, version: 99, frontId: 'x', window: 1, protocol: 'raw', resume: [],
  })
  tt.match(await old.next('ERROR'), { code: 'ERR_FTPROXY_PROTOCOL' })

  tt.equal(recordedEpoch(h), 1, 'the recorded epoch is unchanged')
  tt.ok(h.log.find('handshake_refused', (e) => e.reason === 'not_hello'))
  tt.notOk(h.log.find('epoch', (e) => e.epoch !== 1), 'no epoch taken but the HELLO\'s')
  honest.send({ type: 'HEARTBEAT', epoch: 1 })
  await until(() => honest.frames.filter((f) => f.type === 'HEARTBEAT').length > 0 ||
    honest.closed, 'a heartbeat answered')
  tt.equal(honest.closed, false, 'the live front was not fenced')
  tt.notOk(honest.frames.find((f) => f.type === 'ERROR'))
  const next = await RawChannel.open(tt, h.port)
  next.hello(2, 'next-front')
  tt.match(await next.next('WELCOME'), { type: 'WELCOME' }, 'an honest newer front is served')
})

t.test('an epoch more than MAX_EPOCH_JUMP past the newest seen is refused', async (tt) => {
  const h = await agentHere(tt)
  const far = await RawChannel.open(tt, h.port)
  far.hello(U32, 'far')
  tt.match(await far.next('ERROR'), { code: 'ERR_FTPROXY_EPOCH_JUMP' })
  await until(() => far.closed, 'the agent to close the connection')
  tt.equal(recordedEpoch(h), null, 'nothing recorded')
  tt.match(h.log.find('epoch_jump_refused'), { epoch: U32, newest: 0, max_jump: MAX_EPOCH_JUMP })

  const one = await RawChannel.open(tt, h.port)
  one.hello(MAX_EPOCH_JUMP, 'one')
  tt.match(await one.next('WELCOME'), { type: 'WELCOME' }, 'a jump of exactly the bound is taken')
  tt.equal(recordedEpoch(h), MAX_EPOCH_JUMP)
  const two = await RawChannel.open(tt, h.port)
  two.hello(2 * MAX_EPOCH_JUMP + 1, 'two')
  tt.match(await two.next('ERROR'), { code: 'ERR_FTPROXY_EPOCH_JUMP' })
  tt.equal(one.closed, false, 'the front before it keeps its channel')

  // On a live channel too: a frame that jumps is refused, and the channel closed.
  one.send({ type: 'HEARTBEAT', epoch: 2 * MAX_EPOCH_JUMP + 1 })
  tt.match(await one.next('ERROR'), { code: 'ERR_FTPROXY_EPOCH_JUMP' })
  await until(() => one.closed, 'the jumping channel to close')
  tt.equal(recordedEpoch(h), MAX_EPOCH_JUMP, 'still the newest honest epoch')
  const three = await RawChannel.open(tt, h.port)
  three.hello(2 * MAX_EPOCH_JUMP, 'three')
  tt.match(await three.next('WELCOME'), { type: 'WELCOME' })
})

t.test('before HELLO a frame may be a few KiB; larger ones share a budget of two', async (tt) => {
  const h = await agentHere(tt)
  const big: RawChannel[] = []
  for (let i = 0; i < 3; i++) {
    const r = await RawChannel.open(tt, h.port)
    r.socket.write(partialHello(DEFAULT_MAX_FRAME))
    big.push(r)
  }
  const small: RawChannel[] = []
  for (let i = 0; i < 10; i++) {
    const r = await RawChannel.open(tt, h.port)
    r.socket.write(partialHello(4000))
    small.push(r)
  }
  await until(() => closedCount(big) >= 1, 'the third large frame to be refused', AT_ONCE_MS)
  tt.equal(closedCount(big), 1, 'two large frames held, the third refused at once')
  tt.equal(closedCount(small), 0, 'small frames held')
  tt.match(h.log.find('handshake_refused', (e) => e.reason === 'frame'), { frame: 'refused' })

  // Partial frames do not stop the clock.
  await until(() => closedCount([...big, ...small]) === 13, 'every partial frame to time out',
    TIMEOUT_MS)
  tt.ok(h.log.find('handshake_refused', (e) => e.reason === 'timeout'))
  tt.equal(recordedEpoch(h), null)

  // A front resuming 10,000 connections after a cut sends a HELLO of about 120 KiB.
  const resume = Array.from({ length: 10000 }, (_, i) => ({ conn: i + 1, offset: i }))
  const front = await RawChannel.open(tt, h.port)
  front.hello(1, 'busy-front', resume)
  tt.match(await front.next('WELCOME'), { type: 'WELCOME' })
})

t.test(`at most ${MAX_PENDING} connections without HELLO; the rest are closed at once`,
  async (tt) => {
    const h = await agentHere(tt)
    const idle = await Promise.all(Array.from({ length: 100 }, () => RawChannel.open(tt, h.port)))
    await until(() => closedCount(idle) >= 100 - MAX_PENDING, 'the excess to be closed',
      AT_ONCE_MS)
    tt.equal(idle.length - closedCount(idle), MAX_PENDING, 'the first ones wait for their HELLO')
    tt.match(h.log.find('handshake_refused', (e) => e.reason === 'too_many'),
      { limit: MAX_PENDING })
    await until(() => closedCount(idle) === 100, 'the rest to time out', TIMEOUT_MS)

    // 200 connections, each announcing a 1 MiB frame: nearly all closed at once, two held.
    const heavy = await Promise.all(Array.from({ length: 200 }, async () => {
      const r = await RawChannel.open(tt, h.port)
      r.socket.write(partialHello(1024 * 1024, 16 * 1024))
      return r
    }))
    await until(() => closedCount(heavy) >= 198, 'all but two to be closed', AT_ONCE_MS)
    tt.ok(closedCount(heavy) >= 198, `${closedCount(heavy)} of 200 closed at once`)
    await until(() => closedCount(heavy) === 200, 'the last two to time out', TIMEOUT_MS)
    const front = await RawChannel.open(tt, h.port)
    front.hello(1, 'front')
    tt.match(await front.next('WELCOME'), { type: 'WELCOME' }, 'a front is served after')
  })

t.test('TLS: a handshake that never comes is closed, and counts as pending', {
  skip: !haveOpenssl && 'openssl not installed',
}, async (tt: Test) => {
  const dir = tt.testdir({})
  const p = (n: string): string => path.join(dir, n)
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
    '-keyout', p('agent.key'), '-out', p('agent.crt')], { stdio: 'ignore' })
  const h = await agentHere(tt,
    `tls: { cert: ${p('agent.crt')}, key: ${p('agent.key')}, ca: ${p('agent.crt')} }`)
  const idle = await Promise.all(
    Array.from({ length: MAX_PENDING + 6 }, () => RawChannel.open(tt, h.port)))
  await until(() => closedCount(idle) >= 6, 'the excess to be closed', AT_ONCE_MS)
  tt.equal(closedCount(idle), 6)
  await until(() => closedCount(idle) === idle.length, 'the TLS handshakes to time out',
    TIMEOUT_MS)
  tt.ok(h.log.find('tls_refused', (e) => e.reason === 'ERR_TLS_HANDSHAKE_TIMEOUT'))
})
