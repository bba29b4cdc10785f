// A server that closes a connection, through the front, against two real redis-server copies:
// the client sees what it would see against Redis directly (the reply sent before the close,
// then the close, and failing writes after a full close), and the backup stays in sync even
// though the two copies end the connection at different moments, with a FIN or a reset.

import t from 'tap'
import type { Test } from 'tap'
import { performance } from 'node:perf_hooks'
import type { ClientSocket } from '../../lib/front/conn.js'
import {
  Client, TestFront, agentInProcess, frontYaml, haveRedis, redisServer,
} from '../helpers/cluster.js'
import { fakeFront, type FakeFront } from '../helpers/fake-front.js'
import { dribble, sendAndWatch, type Dribble, type Seen } from '../helpers/server-close.js'
import { until } from '../helpers/until.js'

const skip = haveRedis() ? false : 'redis-server not installed'

const PROTOCOL_ERROR = '-ERR Protocol error'
/** A malformed multibulk length, then more input than Redis reads before it closes. */
const GARBAGE = Buffer.concat([Buffer.from('*x\r\n'), Buffer.alloc(256 * 1024, 'a')])
const ROUNDS = 500
const PARALLEL = 4
const LOOP_MS = 60000
/** Writes after a server's full close must fail within this much (direct: a few KB, ms). */
const AFTER_BYTES = 256 * 1024
const AFTER_MS = 1000
const RESETS = ['ECONNRESET', 'EPIPE']

/** Two redis-server copies and a front before them (directly, or through agents). */
async function pair (t: Test, agents = false): Promise<{ direct: number, f: TestFront }> {
  const a = await redisServer(t)
  const b = await redisServer(t)
  let yaml = frontYaml(t, [{ name: 'a', port: a.port }, { name: 'b', port: b.port }])
  if (agents) {
    for (const s of [a, b]) {
      const agent = (await agentInProcess(t, s.port)).port
      yaml = yaml.replace(`address: 127.0.0.1:${s.port}`, `agent: 127.0.0.1:${agent}`)
    }
  }
  return { direct: a.port, f: await new TestFront().start(t, yaml) }
}

/** `rounds` runs of `round`, `parallel` at a time, all done within `ms`. */
async function loop<T> (rounds: number, parallel: number, ms: number,
  round: () => Promise<T>): Promise<T[]> {
  const deadline = Date.now() + ms
  const out: T[] = []
  let started = 0
  const worker = async (): Promise<void> => {
    while (started < rounds && Date.now() < deadline) {
      started++
      out.push(await round())
    }
  }
  await Promise.all(Array.from({ length: parallel }, worker))
  return out
}

function tally (seen: Seen[]): { replied: number, ends: Record<string, number> } {
  const ends: Record<string, number> = {}
  for (const s of seen) ends[s.end] = (ends[s.end] ?? 0) + 1
  return { replied: seen.filter((s) => s.text.startsWith(PROTOCOL_ERROR)).length, ends }
}

/** The backup stayed in service: no divergence, no replica down, every connection gone. */
async function backupInSync (t: Test, f: TestFront): Promise<void> {
  await until(() => f.front.status().connections === 0, 'every connection to be forgotten')
  t.same(f.all('divergence'), [], 'no divergence')
  t.same(f.all('replica_down'), [], 'no replica down')
  t.equal(f.role('b'), 'backup', 'the backup is still a backup (not stale)')
  t.equal(f.front.status().protected, true, 'still protected')
}

/** Garbage clients, directly and through the front: what each sees, and the backup. */
async function garbageLoop (t: Test, rounds: number, agents: boolean): Promise<void> {
  const { direct, f } = await pair(t, agents)
  const rate = async (port: number): Promise<Seen[]> => {
    const seen = await loop(rounds, PARALLEL, LOOP_MS, () => sendAndWatch(port, GARBAGE))
    t.equal(seen.length, rounds, `${rounds} rounds within ${LOOP_MS} ms`)
    return seen
  }
  const d = tally(await rate(direct))
  const via = tally(await rate(f.port))
  t.comment(`error reply: direct ${d.replied}/${rounds}, front ${via.replied}/${rounds}`)
  t.comment(`ends: direct ${JSON.stringify(d.ends)}, front ${JSON.stringify(via.ends)}`)
  t.equal(d.replied, rounds, 'directly, every client gets the error reply')
  t.equal(via.replied, d.replied, 'through the front, as many get it as directly')
  t.same(via.ends, d.ends, 'then the connection ends as directly (a reset: input was unread)')
  await backupInSync(t, f)
}

t.test(`${ROUNDS} garbage clients: the error reply, then the reset, as against Redis`,
  { skip }, async (t) => {
    await garbageLoop(t, ROUNDS, false)
  })

t.test('the same through agents: the reset survives the log channel', { skip }, async (t) => {
  await garbageLoop(t, ROUNDS / 5, true)
})

/**
 * Each client writes `first`, then keeps writing 700-byte pieces: directly, then through the
 * front. The reply must arrive and the writes must fail soon after, both ways.
 */
async function closeThenWrite (t: Test, first: Buffer, reply: string, rounds: number):
Promise<void> {
  const { direct, f } = await pair(t)
  const piece = Buffer.alloc(700, 'a')
  const limits = { maxBytes: 4 * 1024 * 1024, ms: 3000 }
  for (const [name, port] of [['direct', direct], ['front', f.port]] as const) {
    const seen: Dribble[] = []
    for (let i = 0; i < rounds; i++) seen.push(await dribble(port, first, piece, limits))
    const most = (k: 'bytesAfter' | 'msAfter'): number => Math.max(...seen.map((s) => s[k]))
    t.comment(`${name}: written after the reply: at most ${most('bytesAfter')} B, ` +
      `${Math.round(most('msAfter'))} ms`)
    t.equal(seen.filter((s) => s.text.startsWith(reply)).length, rounds,
      `${name}: every client gets the reply`)
    t.same(seen.filter((s) => !RESETS.includes(s.code ?? '')).map((s) => s.code), [],
      `${name}: every client's writes fail with a reset (ECONNRESET or EPIPE)`)
    t.ok(most('bytesAfter') <= AFTER_BYTES, `${name}: within ${AFTER_BYTES} bytes of the reply`)
    t.ok(most('msAfter') <= AFTER_MS, `${name}: within ${AFTER_MS} ms of the reply`)
  }
  await backupInSync(t, f)
}

t.test('garbage in 700-byte writes: the reply arrives, then writes fail as against Redis',
  { skip }, async (t) => {
    await closeThenWrite(t, Buffer.from('*x\r\n' + 'a'.repeat(696)), PROTOCOL_ERROR, 10)
  })

t.test('after QUIT (a full close with a FIN), writes fail as against Redis',
  { skip }, async (t) => {
    await closeThenWrite(t, Buffer.from('PING\r\nQUIT\r\n'), '+PONG\r\n+OK\r\n', 10)
  })

function command (...args: string[]): string {
  return `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')
}

t.test('a reset cuts the copies\' output short at different offsets: no divergence, the ' +
  'client gets a prefix of the stream, then the reset', { skip }, async (t) => {
  const { direct, f } = await pair(t)
  const value = 'v'.repeat(1024 * 1024)
  const setter = await Client.open(f.port)
  setter.send(command('SET', 'big', value))
  await until(() => setter.text === '+OK\r\n', 'SET big through the front')
  setter.close()
  const error = (await sendAndWatch(direct, GARBAGE)).text
  const gets = 16
  const stream = `$${value.length}\r\n${value}\r\n`.repeat(gets) + error
  // Replies the client reads slowly, so that each copy holds output back, then garbage and
  // more input (left unread: each Redis resets the connection, discarding what it held).
  const first = Buffer.concat([Buffer.from(command('GET', 'big').repeat(gets)), GARBAGE])
  const piece = Buffer.alloc(700, 'a')
  const opts = { maxBytes: 64 << 20, ms: 5000, slowRead: true }
  const seen: Dribble[] = []
  for (let i = 0; i < 10; i++) seen.push(await dribble(f.port, first, piece, opts))
  t.comment(`received: ${seen.map((s) => s.text.length - stream.length).join(' ')} (vs all)`)
  t.same(seen.filter((s) => !stream.startsWith(s.text)).map((s) => s.text.length), [],
    'every client got a prefix of what Redis sends')
  t.ok(seen.some((s) => s.text.length < stream.length), 'some were cut short by the reset')
  t.same(seen.filter((s) => s.code === null).map((s) => s.end), [],
    'every connection was closed by the server\'s side')
  await backupInSync(t, f)
})

// ---- the same rules on the connection logic alone (fake transports and client socket) ----

/** A client socket that records what the front does to it; writes reach "the kernel" at once. */
class Recorder implements ClientSocket {
  readonly written: Buffer[] = []
  ended = false
  destroyed = false
  reset = false
  writableLength = 0

  get text (): string { return Buffer.concat(this.written).toString() }

  write (data: Buffer, done?: () => void): boolean {
    this.written.push(data)
    done?.()
    return true
  }

  end (done?: () => void): void {
    this.ended = true
    done?.()
  }

  destroy (): void { this.destroyed = true }

  resetAndDestroy (): void {
    this.reset = true
    this.destroyed = true
  }

  pause (): void {}
  resume (): void {}
}

const RESET = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' })

async function fakeConn (mode: 'none' | 'match'):
Promise<{ f: FakeFront, s: Recorder, id: number }> {
  const f = await fakeFront(['a', 'b'], `output_commit: ${mode}`)
  const s = new Recorder()
  const c = f.conns.open(s)
  c.append('OPEN')
  return { f, s, id: c.id }
}

t.test('ends, with fakes', async (t) => {
  t.test('the primary cut short by a reset: the client gets its bytes, then a reset; the ' +
    'backup\'s bytes beyond are dropped', async (t) => {
    const { f, s, id } = await fakeConn('none')
    const [a, b] = [f.transport('a'), f.transport('b')]
    b.output(id, 'hello world')
    a.output(id, 'hello')
    a.emit('output_end', id, RESET)
    b.emit('output_end', id, null)
    t.equal(s.text, 'hello', 'the primary\'s bytes')
    t.ok(s.reset, 'then a reset')
    t.notOk(s.ended, 'no FIN before it')
    t.notOk(f.events.find('divergence'), 'no divergence')
    t.equal(f.replica('b').role, 'backup')
    t.ok(f.conns.inSync(), 'in sync: both ended, the bytes agree as far as they go')
  })

  t.test('the backup cut short by a reset: it holds nothing back (match), owes nothing, ' +
    'and a FIN then a full close of the primary reach the client', async (t) => {
    const { f, s, id } = await fakeConn('match')
    const [a, b] = [f.transport('a'), f.transport('b')]
    a.output(id, 'hello world')
    b.output(id, 'hello')
    t.equal(s.text, 'hello', 'match: only what the backup matched')
    b.emit('output_end', id, RESET)
    t.equal(s.text, 'hello world', 'a backup cut short holds nothing back')
    a.output(id, '!')
    t.equal(s.text, 'hello world!')
    t.notOk(f.conns.stalled(performance.now() + 60000, 1000).has(f.replica('b').index),
      'the backup owes nothing after its end')
    a.emit('output_end', id, null)
    t.ok(s.ended, 'the primary\'s FIN')
    t.notOk(s.destroyed, 'a half-close only: the server may still read')
    a.emit('closed', id)
    t.ok(s.destroyed, 'the server closed altogether: so is the client socket')
    t.notOk(s.reset, 'after the FIN, not with a reset')
    t.notOk(f.events.find('divergence'), 'no divergence')
    t.equal(f.replica('b').role, 'backup')
  })

  t.test('clean ends (FIN) at different offsets still diverge', async (t) => {
    const { f, s, id } = await fakeConn('none')
    const [a, b] = [f.transport('a'), f.transport('b')]
    a.output(id, 'hello world')
    b.output(id, 'hello')
    b.emit('output_end', id, null)
    t.match(f.events.find('divergence'), { what: 'output ended at a different offset' })
    t.equal(f.replica('b').role, 'stale')
    a.emit('output_end', id, null)
    t.ok(s.ended && !s.destroyed, 'the client gets the FIN')
  })

  t.test('output after the primary\'s clean end still diverges', async (t) => {
    const { f, id } = await fakeConn('none')
    const [a, b] = [f.transport('a'), f.transport('b')]
    a.output(id, 'hello')
    a.emit('output_end', id, null)
    b.output(id, 'hello world')
    t.match(f.events.find('divergence'), { what: 'output after the primary closed' })
  })
})
