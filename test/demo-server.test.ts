import t from 'tap'
import assert from 'node:assert'
import type { Test } from 'tap'
import { spawn } from 'node:child_process'
import fs from 'node:fs/promises'
import fsSync from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { PassThrough, Writable } from 'node:stream'
import { pathToFileURL } from 'node:url'
import { formatHostPort } from '../lib/address.js'
import {
  DemoStore, LINE_TOO_LONG, LineSplitter, MAX_LINE, runDemoServerCli, startDemoServer,
} from '../lib/demo-server.js'
import type { DemoServer, DemoServerOptions } from '../lib/demo-server.js'
import { until } from './helpers/until.js'
import { EventLog } from './helpers/events.js'
import { freePort } from './helpers/ports.js'
import { BIN, ROOT } from './helpers/cluster.js'
import { alive } from './helpers/proc.js'

async function server (t: Test, opts: DemoServerOptions = {}): Promise<DemoServer> {
  const s = await startDemoServer(opts)
  t.teardown(() => s.close())
  return s
}

// A client that collects reply lines and notices the server's EOF.
class Client {
  readonly socket: net.Socket
  readonly lines: string[] = []
  bytes = 0
  ended = false
  closed = false
  private rest = ''

  constructor (socket: net.Socket) {
    this.socket = socket
    socket.setEncoding('latin1')
    socket.on('data', (s: string) => {
      this.bytes += s.length
      const parts = (this.rest + s).split('\n')
      this.rest = parts.pop() as string
      this.lines.push(...parts)
    })
    socket.on('end', () => { this.ended = true })
    socket.on('close', () => { this.closed = true })
    socket.on('error', () => {})
  }

  send (s: string): void { this.socket.write(s, 'latin1') }

  async replies (n: number): Promise<string[]> {
    await until(() => this.lines.length >= n || this.closed, `${n} replies`)
    return this.lines.splice(0, n)
  }

  async ask (s: string, n = 1): Promise<string[]> {
    this.send(s)
    return this.replies(n)
  }

  waitEnd (): Promise<void> { return until(() => this.ended, 'server EOF') }
}

async function connect (
  t: Test, s: DemoServer, opts: { allowHalfOpen?: boolean } = {}
): Promise<Client> {
  const { host, port } = s.address
  const socket = net.connect({ host, port, allowHalfOpen: opts.allowHalfOpen ?? true })
  t.teardown(() => { socket.destroy() })
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve)
    socket.once('error', reject)
  })
  socket.setNoDelay(true)
  return new Client(socket)
}

// Runs bytes through the codec and the store as the server would, without a socket.
function runParts (parts: Buffer[], divergeAfter?: number): string {
  const store = new DemoStore(divergeAfter)
  const splitter = new LineSplitter()
  let out = ''
  for (const part of parts) {
    splitter.push(part)
    for (let line = splitter.next(); line !== undefined; line = splitter.next()) {
      if (line === LINE_TOO_LONG) return out + 'TOO_LONG'
      out += store.execute(line)?.text ?? ''
    }
  }
  return out
}

const SCRIPT = 'SET a hello  world \r\nGET a\nINCR n\nincr n\n\nDEL a\ndel a\nGET a\nPING\n' +
  'SET n x\nINCR n\nnope 1\nGET\n'
const SCRIPT_REPLIES = ['OK', 'hello  world ', '1', '2', '1', '0', '(nil)', 'PONG', 'OK',
  'ERR value is not an integer', "ERR unknown command 'nope'",
  "ERR wrong number of arguments for 'get'"]

t.test('commands', async (t) => {
  const s = await server(t)
  const c = await connect(t, s)
  t.same(await c.ask('PING\n'), ['PONG'])
  t.same(await c.ask('ping\r\n'), ['PONG'], 'verbs are case-insensitive, \\r is stripped')
  t.same(await c.ask('GET k\n'), ['(nil)'])
  t.same(await c.ask('SET k v\n'), ['OK'])
  t.same(await c.ask('GET k\n'), ['v'])
  t.same(await c.ask('SET k  a value with  spaces \n'), ['OK'])
  t.same(await c.ask('GET k\n'), ['a value with  spaces '], 'the value is the rest of the line')
  t.same(await c.ask('DEL k\n'), ['1'])
  t.same(await c.ask('DEL k\n'), ['0'])
  t.same(await c.ask('INCR c\n'), ['1'], 'a missing key counts from 0')
  t.same(await c.ask('InCr c\n'), ['2'])
  t.same(await c.ask('SET c -5\nINCR c\n', 2), ['OK', '-4'])
  t.same(await c.ask('SET c 9223372036854775806\nINCR c\nINCR c\nGET c\n', 4),
    ['OK', '9223372036854775807', 'ERR increment or decrement would overflow',
      '9223372036854775807'])
  t.same(await c.ask('SET c 1.5\nINCR c\nSET c 01\nINCR c\n', 4),
    ['OK', 'ERR value is not an integer', 'OK', 'ERR value is not an integer'])
  t.same(await c.ask('\n\r\n   \nPING\n'), ['PONG'], 'empty lines are ignored')
  t.same(await c.ask('FLUSHALL\n'), ["ERR unknown command 'FLUSHALL'"])
  t.same(await c.ask('SET k\nSET k \nGET\nGET a b\nINCR\nDEL\nPING x\nQUIT now\n', 8), [
    "ERR wrong number of arguments for 'set'",
    "ERR wrong number of arguments for 'set'",
    "ERR wrong number of arguments for 'get'",
    "ERR wrong number of arguments for 'get'",
    "ERR wrong number of arguments for 'incr'",
    "ERR wrong number of arguments for 'del'",
    "ERR wrong number of arguments for 'ping'",
    "ERR wrong number of arguments for 'quit'",
  ])
  // latin1 in, latin1 out: arbitrary bytes round-trip.
  t.same(await c.ask('SET b \xff\xfe\x01\nGET b\n', 2), ['OK', '\xff\xfe\x01'])
  t.same(await c.ask(SCRIPT, SCRIPT_REPLIES.length), SCRIPT_REPLIES)
  t.equal(c.ended, false, 'the connection stays open')
  t.equal(s.stats().connections.length, 1)
})

t.test('codec: a script split at every byte gives the same replies', async (t) => {
  const bytes = Buffer.from(SCRIPT, 'latin1')
  const whole = runParts([bytes])
  t.equal(whole, SCRIPT_REPLIES.join('\n') + '\n')
  for (let i = 0; i <= bytes.length; i++) {
    for (const j of [i, Math.min(bytes.length, i + 1), Math.min(bytes.length, i + 7)]) {
      const got = runParts([bytes.subarray(0, i), bytes.subarray(i, j), bytes.subarray(j)])
      if (got !== whole) t.fail(`split at ${i}/${j}`, { got, expected: whole })
    }
  }
  t.equal(runParts([...bytes].map((b) => Buffer.from([b]))), whole, 'one byte at a time')
})

t.test('codec: line length limit', async (t) => {
  const max = 'x'.repeat(MAX_LINE)
  const splitter = new LineSplitter()
  splitter.push(Buffer.from(max + '\r'))
  t.equal(splitter.next(), undefined, 'a partial line of MAX_LINE + \\r may still be valid')
  splitter.push(Buffer.from('\n'))
  t.equal((splitter.next() as Buffer).length, MAX_LINE, 'MAX_LINE bytes plus \\r\\n is accepted')
  splitter.push(Buffer.from(max + 'xx'))
  t.equal(splitter.next(), LINE_TOO_LONG, 'detected before the newline arrives')
  const s2 = new LineSplitter()
  s2.push(Buffer.from(max + 'x\n'))
  t.equal(s2.next(), LINE_TOO_LONG, 'a complete line one byte too long')
  const s3 = new LineSplitter()
  s3.push(Buffer.from(max + 'x\r\n'))
  t.equal(s3.next(), LINE_TOO_LONG)
})

t.test('pipelining over a socket, one byte per write', async (t) => {
  const s = await server(t)
  const c = await connect(t, s)
  for (const b of SCRIPT) {
    await new Promise<void>((resolve) => { c.socket.write(b, 'latin1', () => { resolve() }) })
  }
  t.same(await c.replies(SCRIPT_REPLIES.length), SCRIPT_REPLIES)
})

t.test('many commands in one chunk', async (t) => {
  const s = await server(t)
  const c = await connect(t, s)
  const n = 5000
  const replies = await c.ask('INCR n\n'.repeat(n), n)
  t.equal(replies.length, n)
  t.equal(replies[n - 1], String(n))
  t.same(replies.slice(0, 3), ['1', '2', '3'])
})

t.test('state is shared by all connections', async (t) => {
  const s = await server(t)
  const a = await connect(t, s)
  const b = await connect(t, s)
  t.same(await a.ask('SET k from-a\n'), ['OK'])
  t.same(await b.ask('GET k\n'), ['from-a'])
  t.same(await b.ask('INCR n\n'), ['1'])
  t.same(await a.ask('INCR n\n'), ['2'])
  t.same(await a.ask('DEL k\n'), ['1'])
  t.same(await b.ask('GET k\n'), ['(nil)'])
  t.equal(s.stats().commands, 6)
})

t.test('QUIT replies OK and closes that connection only', async (t) => {
  const s = await server(t)
  const a = await connect(t, s)
  const b = await connect(t, s)
  a.send('SET k 1\nQUIT\nSET k 2\n')
  await a.waitEnd()
  t.same(a.lines, ['OK', 'OK'], 'nothing after QUIT is run')
  a.socket.end()
  await until(() => a.closed, 'close after both sides ended')
  t.same(await b.ask('GET k\nPING\n', 2), ['1', 'PONG'])
  await until(() => s.stats().connections.length === 1, 'the server to drop the quit connection')
})

t.test('half-close: replies to buffered lines, then ends', async (t) => {
  const s = await server(t)
  const c = await connect(t, s)
  c.socket.end('SET a 1\nINCR a\nGET a\nPING\nGET a')
  await c.waitEnd()
  t.same(c.lines, ['OK', '2', '2', 'PONG'], 'the trailing partial line is dropped')
  await until(() => c.closed, 'close')
})

t.test('half-close with more output than the socket buffers', async (t) => {
  const s = await server(t)
  const c = await connect(t, s)
  const value = 'v'.repeat(32 * 1024)
  const n = 1000 // 32MB: more than loopback socket buffers hold, so the server must wait
  c.socket.pause()
  c.socket.end(`SET k ${value}\n` + 'GET k\n'.repeat(n))
  await until(() => s.stats().connections[0]?.waitingForDrain === true, 'server to wait for drain')
  c.socket.resume()
  await c.waitEnd()
  t.equal(c.lines.length, n + 1)
  t.ok(c.lines.slice(1).every((l) => l === value), 'every GET answered in full')
})

t.test('a client that never reads does not grow the server memory', async (t) => {
  const s = await server(t)
  const c = await connect(t, s)
  c.socket.pause()
  const value = 'v'.repeat(32 * 1024)
  const n = 1000 // 32MB of replies: far more than loopback socket buffers hold
  c.send(`SET k ${value}\n` + 'GET k\n'.repeat(n))
  await until(() => s.stats().connections[0]?.waitingForDrain === true, 'server to wait for drain')
  const { commands, connections: [conn] } = s.stats()
  t.ok(commands < n + 1, `stopped running commands (${commands} of ${n + 1})`)
  assert.ok(conn, 'the connection in stats')
  t.ok(conn.bufferedBytes < 16 * 1024 + value.length + 16,
    `bounded write buffer (${conn.bufferedBytes} bytes)`)
  c.socket.resume()
  const expected = 3 + n * (value.length + 1)
  await until(() => c.bytes === expected, 'every reply after the client reads', 20_000)
  t.equal(s.stats().commands, n + 1)
})

t.test('diverge-after', async (t) => {
  const s = await server(t, { divergeAfter: 4 })
  const a = await connect(t, s)
  const b = await connect(t, s)
  t.same(await a.ask('SET a 1\nINCR a\n', 2), ['OK', '2'])
  t.same(await b.ask('\nGET a\nPING\n', 2), ['2', 'PONG'], 'empty lines are not counted')
  t.same(await a.ask('INCR a\nGET a\nSET b x\nGET b\nnope\n', 5),
    ['1003', 'X3', 'XOK', 'Xx', "XERR unknown command 'nope'"], 'the 5th command on diverges')
  t.same(await b.ask('QUIT\n'), ['XOK'])
  await b.waitEnd()

  const plain = runParts([Buffer.from(SCRIPT)])
  const diverged = runParts([Buffer.from(SCRIPT)], 2)
  t.equal(diverged.split('\n').slice(0, 2).join('\n'), plain.split('\n').slice(0, 2).join('\n'))
  t.not(diverged, plain)
  t.equal(runParts([Buffer.from(SCRIPT)], 2), diverged, 'deterministic')
})

t.test('line too long: error, then the connection closes', async (t) => {
  const s = await server(t)
  const ok = await connect(t, s)
  const key = 'k'
  const value = 'v'.repeat(MAX_LINE - 'SET k '.length)
  t.same(await ok.ask(`SET ${key} ${value}\r\nGET k\n`, 2), ['OK', value],
    'a MAX_LINE line is fine')

  const c = await connect(t, s)
  c.send('PING\n' + 'x'.repeat(MAX_LINE + 2))
  await c.waitEnd()
  t.same(c.lines, ['PONG', 'ERR line too long'])
  c.send('PING\n') // dropped, not answered, and no reset
  c.socket.end()
  await until(() => c.closed, 'close')
  t.same(c.lines, ['PONG', 'ERR line too long'])
  t.same(await ok.ask('PING\n'), ['PONG'], 'other connections go on')
})

t.test('close() destroys open connections', async (t) => {
  const s = await startDemoServer()
  const c = await connect(t, s)
  t.same(await c.ask('PING\n'), ['PONG'])
  await s.close()
  await c.waitEnd()
  await s.close() // idempotent
})

t.test('listen errors reject', async (t) => {
  const s = await server(t)
  await t.rejects(startDemoServer({ port: s.address.port }), { code: 'EADDRINUSE' })
  await t.rejects(runDemoServerCli({ port: s.address.port, stdout: new PassThrough() }),
    { code: 'EADDRINUSE' })
})

const noIPv6 = await new Promise<string | false>((resolve) => {
  const probe = net.createServer()
  probe.once('error', (err) => { resolve(`no IPv6 loopback: ${err.message}`) })
  probe.listen(0, '::1', () => { probe.close(() => { resolve(false) }) })
})

t.test('IPv6', { skip: noIPv6 }, async (t) => {
  const s = await server(t, { host: '::1' })
  t.equal(formatHostPort(s.address), `[::1]:${s.address.port}`)
  const c = await connect(t, s)
  t.same(await c.ask('PING\n'), ['PONG'])
})

t.test('runDemoServerCli prints a listening line, events, and stops on a signal', async (t) => {
  const stdout = new PassThrough()
  const log = new EventLog()
  stdout.on('data', (b: Buffer) => { log.feed(b) })
  // A signal tap does not handle itself; process.emit delivers it without a real kill.
  const done = runDemoServerCli({ stdout, signals: ['SIGWINCH'] })
  const line = await log.next('listening')
  t.match(line, { address: /^127\.0\.0\.1:\d+$/, id: /^[0-9a-f]{16}$/ })
  t.equal(log.all('listening').length, 1, 'one listening line')
  const port = Number(String(line.address).split(':')[1])
  const c = await connect(t, { address: { host: '127.0.0.1', port } } as DemoServer)
  t.same(await c.ask('PING\n'), ['PONG'])
  t.same(await c.ask('ID\n'), [line.id], 'the listening line names the ID')
  t.same(await c.ask('LOADBEGIN\nLOADCOMMIT\n', 2), ['OK', '0'])
  t.match(await log.next('demo_server_loaded'), { entries: 0 })
  process.emit('SIGWINCH', 'SIGWINCH')
  await done
  await c.waitEnd()
  t.equal(process.listenerCount('SIGWINCH'), 0, 'signal listeners removed')
  t.match(log.find('demo_server_stopping'), { signal: 'SIGWINCH' })
})

t.test('runDemoServerCli: a stdout that fails (EPIPE) stops the output, not the server',
  async (t) => {
    let writes = 0
    const stdout = new Writable({
      write (_chunk, _encoding, done) {
        writes++
        done(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }))
      },
    })
    // The listening line cannot be read: the port is chosen here.
    const port = await freePort()
    const done = runDemoServerCli({ stdout, signals: ['SIGWINCH'], port })
    await until(() => writes > 0, 'a first write')
    const c = await connect(t, { address: { host: '127.0.0.1', port } } as DemoServer)
    t.same(await c.ask('PING\n'), ['PONG'])
    const before = writes
    t.same(await c.ask('LOADBEGIN\nLOADCOMMIT\nPING\n', 3), ['OK', '0', 'PONG'],
      'an event to log, and the server goes on')
    t.equal(writes, before, 'nothing more written to a failed stdout')
    process.emit('SIGWINCH', 'SIGWINCH')
    await done
  })

// The child needs the loader that runs this .ts file to import lib/*.ts.
const loader = process.execArgv.find((a) => a.includes('@tapjs/typescript'))

t.test('runDemoServerCli in a real process: SIGTERM closes it, exit 0', {
  skip: loader === undefined && 'not run under the tap TypeScript loader',
}, async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ftproxy-demo-'))
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }))
  const script = path.join(dir, 'run.mjs')
  const lib = pathToFileURL(path.resolve(import.meta.dirname, '../lib/demo-server.js')).href
  await fs.writeFile(script, `import { runDemoServerCli } from '${lib}'\n` +
    'await runDemoServerCli({ port: 0 })\nconsole.error(\'stopped\')\n')
  const child = spawn(process.execPath, [loader as string, script],
    { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { child.kill('SIGKILL') })
  let out = ''
  let err = ''
  child.stdout.on('data', (b: Buffer) => { out += b.toString() })
  child.stderr.on('data', (b: Buffer) => { err += b.toString() })
  const exited = new Promise<number | null>((resolve) => {
    child.on('exit', (code) => { resolve(code) })
  })
  await until(() => /"listening".*\n/.test(out), 'listening line', 30_000)
  const line = out.split('\n').find((l) => l.includes('"listening"')) ?? ''
  t.match(JSON.parse(line), { event: 'listening', address: /^127\.0\.0\.1:\d+$/ })
  child.kill('SIGTERM')
  t.equal(await exited, 0)
  t.match(err, /stopped/)
})

// --- State transfer: ID, DUMP/DUMPNEXT, LOADBEGIN/LOADPART/LOADCOMMIT ---

// The dump format as documented in lib/demo-server.ts, written independently of it.
function encodeDump (entries: Array<[string, string]>): Buffer {
  const parts: Buffer[] = []
  const field = (s: string): void => {
    const bytes = Buffer.from(s, 'latin1')
    const len: number[] = []
    let n = bytes.length
    for (; n >= 0x80; n >>>= 7) len.push((n & 0x7f) | 0x80)
    len.push(n)
    parts.push(Buffer.from(len), bytes)
  }
  for (const [k, v] of entries) {
    field(k)
    field(v)
  }
  return Buffer.concat(parts)
}

function decodeDump (batches: string[]): Array<[string, string]> {
  const buf = Buffer.concat(batches.map((b) => Buffer.from(b, 'base64')))
  const out: Array<[string, string]> = []
  let at = 0
  const field = (): string => {
    let n = 0
    for (let shift = 0; ; shift += 7) {
      const b = buf[at++]
      assert.ok(b !== undefined, 'a dump ends inside a length')
      n |= (b & 0x7f) << shift
      if (b < 0x80) break
    }
    assert.ok(at + n <= buf.length, 'a dump ends inside a field')
    const s = buf.toString('latin1', at, at + n)
    at += n
    return s
  }
  while (at < buf.length) {
    const key = field()
    out.push([key, field()])
  }
  return out
}

// A batch as LOADPART takes it: base64 of `size` bytes at most, cut anywhere.
function toBatches (buf: Buffer, size: number): string[] {
  const out: string[] = []
  for (let i = 0; i < buf.length; i += size) out.push(buf.toString('base64', i, i + size))
  return out
}

const b64 = (bytes: number[]): string => Buffer.from(bytes).toString('base64')

// Every batch of a dump.
async function dumpOf (c: Client): Promise<{ count: number, batches: string[] }> {
  const [count] = await c.ask('DUMP\n')
  return { count: Number(count), batches: await dumpRest(c) }
}

// The rest of a dump already started, one DUMPNEXT at a time; checks each line fits in
// LOADPART.
async function dumpRest (c: Client): Promise<string[]> {
  const out: string[] = []
  for (let i = 0; i < 10_000; i++) {
    const [batch = ''] = await c.ask('DUMPNEXT\n')
    if (batch === 'END') return out
    assert.match(batch, /^[A-Za-z0-9+/]+={0,2}$/)
    assert.ok('LOADPART '.length + batch.length <= MAX_LINE, 'a LOADPART line fits')
    out.push(batch)
  }
  throw new Error('a dump with no end')
}

// LOADBEGIN, the batches and LOADCOMMIT in one write; resolves with the commit's reply.
async function load (c: Client, batches: string[]): Promise<string | undefined> {
  const replies = await c.ask('LOADBEGIN\n' + batches.map((b) => `LOADPART ${b}\n`).join('') +
    'LOADCOMMIT\n', batches.length + 2)
  assert.ok(replies.slice(0, -1).every((r) => r === 'OK'), `LOAD replies: ${replies.join(' ')}`)
  return replies.at(-1)
}

const sorted = (entries: Array<[string, string]>): Array<[string, string]> =>
  [...new Map(entries)].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)

// Keys and values no SET can make: spaces, newlines, every byte, empty, and near MAX_LINE, so
// that entries span batches.
const ALL_BYTES = Array.from({ length: 256 }, (_, i) => String.fromCharCode(i)).join('')
const ODD_ENTRIES: Array<[string, string]> = [
  ['a key with spaces', 'a value\nwith a newline\r\n'],
  [ALL_BYTES, ALL_BYTES + ALL_BYTES],
  ['\x00', ''],
  ['', 'the empty key'],
  ['long', 'L'.repeat(MAX_LINE)],
  ['x'.repeat(MAX_LINE), 'y'.repeat(MAX_LINE)],
  ['plain', 'value'],
  // From byte 11 on: no newline, so that GET can read them back.
  ...Array.from({ length: 300 }, (_, i): [string, string] =>
    [`k${i}`, ALL_BYTES.slice(11 + (i % 200))]),
]

t.test('ID: drawn at start, stable, different for another server', async (t) => {
  const a = await server(t)
  const b = await server(t, { divergeAfter: 0 })
  const ca = await connect(t, a)
  const cb = await connect(t, b)
  const [id] = await ca.ask('ID\n')
  t.match(id, /^[0-9a-f]{16}$/)
  t.equal(id, a.id)
  t.same(await ca.ask('SET k v\nID\nid\n', 3), ['OK', id, id], 'the same whatever happens')
  t.same(await (await connect(t, a)).ask('ID\n'), [id], 'and on every connection')
  t.same(await cb.ask('ID\nPING\n', 2), [b.id, 'XPONG'], 'divergeAfter leaves ID alone')
  t.not(b.id, id)
  t.same(await ca.ask('ID x\n'), ["ERR wrong number of arguments for 'id'"])
  t.equal(a.stats().commands, 1, 'state-transfer commands are not counted')
})

t.test('DUMP and LOAD: odd bytes round-trip, batches fit in a line', async (t) => {
  const a = await server(t)
  const b = await server(t)
  const ca = await connect(t, a)
  const cb = await connect(t, b)
  // Batches cut at odd places: entries and lengths split across them.
  t.equal(await load(ca, toBatches(encodeDump(ODD_ENTRIES), 997)), String(ODD_ENTRIES.length))
  t.same(await ca.ask('GET plain\nGET long\n', 2), ['value', 'L'.repeat(MAX_LINE)])
  const dump = await dumpOf(ca)
  t.equal(dump.count, ODD_ENTRIES.length)
  t.ok(dump.batches.length > 2, `several batches (${dump.batches.length})`)
  t.same(sorted(decodeDump(dump.batches)), sorted(ODD_ENTRIES), 'the dump holds every entry')

  t.same(await cb.ask('SET old 1\nSET plain other\n', 2), ['OK', 'OK'])
  t.equal(await load(cb, dump.batches), String(ODD_ENTRIES.length), 'the target takes the dump')
  t.same(await cb.ask('GET old\nGET plain\nGET k7\n', 3),
    ['(nil)', 'value', ALL_BYTES.slice(18)], 'the whole map was replaced')
  t.same(sorted(decodeDump((await dumpOf(cb)).batches)), sorted(ODD_ENTRIES))
  t.equal(b.stats().entries, ODD_ENTRIES.length)
  t.same(await ca.ask('DUMPNEXT\n'), ['END'], 'a finished dump stays finished')
})

t.test('DUMP and LOAD of 100k keys in bounded time', async (t) => {
  const a = await server(t)
  const b = await server(t)
  const ca = await connect(t, a)
  const cb = await connect(t, b)
  const n = 100_000
  const sets = Array.from({ length: n }, (_, i) => `SET key:${i} value ${i} \xff\x01\n`).join('')
  const replies = await ca.ask(sets, n)
  t.ok(replies.every((r) => r === 'OK'))
  const started = Date.now()
  const dump = await dumpOf(ca)
  t.equal(dump.count, n)
  t.equal(await load(cb, dump.batches), String(n))
  const ms = Date.now() - started
  t.ok(ms < 10_000, `copied in ${ms} ms`)
  for (const i of [0, 1, 4999, 77_777, n - 1]) {
    t.same(await cb.ask(`GET key:${i}\n`), [`value ${i} \xff\x01`])
  }
  t.equal(b.stats().entries, n)
})

t.test('a dump is the map as of DUMP while other connections write', async (t) => {
  const s = await server(t)
  const reader = await connect(t, s)
  const writer = await connect(t, s)
  const n = 5000
  const value = 'v'.repeat(100) // 500 KB: about ten batches
  const before: Array<[string, string]> = []
  for (let i = 0; i < n; i++) before.push([`k${i}`, `${value}${i}`])
  t.equal(await load(writer, toBatches(encodeDump(before), 40_000)), String(n))
  t.same(await reader.ask('DUMP\n'), [String(n)])
  const [first = ''] = await reader.ask('DUMPNEXT\n')
  const batches = [first]
  // Every kind of change, before and after its key is sent: overwrite, delete, delete and set
  // again, a new key, INCR.
  const changes = ['SET k0 changed', 'SET k4999 changed', 'DEL k1', 'DEL k4998', 'DEL k2',
    'SET k2 again', 'DEL k4997', 'SET k4997 again', 'SET new 1', 'INCR new', 'INCR fresh',
    'DEL k4996', 'SET k4996 x']
  t.same(await writer.ask(changes.join('\n') + '\n', changes.length),
    ['OK', 'OK', '1', '1', '1', 'OK', '1', 'OK', 'OK', '2', '1', '1', 'OK'])
  // A load committed mid-dump replaces the live map: the dump goes on from its own view.
  t.equal(await load(writer, toBatches(encodeDump([['only', 'this']]), 100)), '1')
  const rest = await dumpRest(reader)
  batches.push(...rest)
  t.same(sorted(decodeDump(batches)), sorted(before), 'exactly the map at DUMP time')
  t.same(await writer.ask('GET only\nGET k3\n', 2), ['this', '(nil)'])
})

t.test('LOAD: nothing changes before LOADCOMMIT; bad input is an error, never a crash',
  async (t) => {
    const s = await server(t)
    const c = await connect(t, s)
    t.same(await c.ask('SET k v\n'), ['OK'])
    const good = toBatches(encodeDump([['a', '1'], ['b', '2']]), 3)
    const unchanged = async (what: string): Promise<void> => {
      t.same(await c.ask('GET k\nGET a\n', 2), ['v', '(nil)'], what)
      t.equal(s.stats().entries, 1)
    }

    // A connection that closes before its commit: the load is dropped.
    const quitter = await connect(t, s)
    t.same(await quitter.ask(`LOADBEGIN\nLOADPART ${good[0] ?? ''}\n`, 2), ['OK', 'OK'])
    await unchanged('a load under way changes nothing')
    quitter.socket.destroy()
    await until(() => s.stats().connections.length === 1, 'the server to see the close')
    await unchanged('a load whose connection closed changes nothing')

    const ERR = /^ERR /
    t.match(await c.ask('DUMPNEXT\n'), [ERR], 'DUMPNEXT before DUMP')
    t.match(await c.ask('LOADPART AAAA\n'), [ERR], 'LOADPART before LOADBEGIN')
    t.match(await c.ask('LOADCOMMIT\n'), [ERR], 'LOADCOMMIT before LOADBEGIN')
    t.match(await c.ask('LOADBEGIN\nLOADPART\nLOADCOMMIT\n', 3), ['OK', ERR, ERR],
      'a LOADPART with no batch drops the load')
    const bad = [
      ['not base64', 'LOADPART a$b='],
      ['base64 of a wrong length', 'LOADPART QUJD\nLOADPART QQ'],
      ['two batches in one line', `LOADPART ${good[0] ?? ''} ${good[1] ?? ''}`],
      ['a length longer than 3 bytes', `LOADPART ${b64([0x80, 0x80, 0x80, 0x01])}`],
      ['a field longer than MAX_LINE', `LOADPART ${b64([0x81, 0x80, 0x04])}`],
    ]
    for (const [what, lines = ''] of bad) {
      const n = lines.split('\n').length
      const replies = await c.ask(`LOADBEGIN\n${lines}\nLOADCOMMIT\n`, n + 2)
      t.match(replies, ['OK', ...Array(n - 1).fill('OK'), ERR, ERR], `${what}: the load is dropped`)
    }
    // The batches end inside an entry: the commit fails.
    const cut = encodeDump([['a', '1'], ['b', '2']]).subarray(0, 5)
    t.match(await c.ask(`LOADBEGIN\nLOADPART ${cut.toString('base64')}\nLOADCOMMIT\n`, 3),
      ['OK', 'OK', ERR], 'a load that ends inside an entry')
    t.match(await c.ask('LOADCOMMIT\n'), [ERR], 'and it is gone')
    await unchanged('no bad load changed anything')

    t.same(await c.ask('LOADBEGIN\nLOADPART QUJD\nLOADBEGIN\n' +
      good.map((b) => `LOADPART ${b}\n`).join('') + 'LOADCOMMIT\nGET a\nGET k\nPING\n',
    good.length + 7).then((r) => r.slice(-4)), ['2', '1', '(nil)', 'PONG'],
    'LOADBEGIN starts over; a good load then lands whole')
  })

t.test('a supervised demo server outlives its front; output to the dead pipes is dropped', {
  skip: !fsSync.existsSync(path.join(ROOT, 'dist/cli.js')) && 'npm run build first',
}, async (t) => {
  // The holder plays the front: it starts the server as lib/supervise.ts does (pipes on every
  // stdio, a process group of its own), says where it is, and is then SIGKILLed.
  const script = `
    import { spawn } from 'node:child_process'
    const child = spawn(process.execPath, [${JSON.stringify(BIN)}, 'demo-server', '--port', '0'],
      { stdio: ['pipe', 'pipe', 'pipe'], detached: true,
        env: { ...process.env, FTPROXY_SUPERVISED: '1' } })
    let out = ''
    child.stdout.on('data', (d) => {
      out += d
      const line = out.split('\\n').find((l) => l.includes('"listening"'))
      if (line) console.log(JSON.stringify({ pid: child.pid, ...JSON.parse(line) }))
    })
    setInterval(() => {}, 1000)
  `
  const holder = spawn(process.execPath, ['--input-type=module', '-e', script],
    { stdio: ['ignore', 'pipe', 'inherit'] })
  const log = new EventLog()
  holder.stdout.on('data', (d: Buffer) => { log.feed(d) })
  let serverPid = 0
  t.teardown(() => {
    holder.kill('SIGKILL')
    if (serverPid !== 0 && alive(serverPid)) process.kill(serverPid, 'SIGKILL')
  })
  const listening = await log.next('listening', undefined, 30_000)
  serverPid = listening.pid as number
  const port = Number(String(listening.address).split(':').pop())
  const exited = new Promise((resolve) => holder.once('exit', resolve))
  holder.kill('SIGKILL')
  await exited
  t.ok(alive(serverPid), 'the server runs on without its front')
  const c = await connect(t, { address: { host: '127.0.0.1', port } } as DemoServer)
  t.same(await c.ask('ID\n'), [listening.id], 'the same server, its state kept')
  // Each commit logs an event to the broken stdout (EPIPE): it must neither crash nor block.
  for (let i = 0; i < 3; i++) {
    t.same(await c.ask('LOADBEGIN\nLOADCOMMIT\nSET k v\nGET k\n', 4), ['OK', '0', 'OK', 'v'])
  }
  t.same(await c.ask('PING\n'), ['PONG'])
  t.ok(alive(serverPid), 'still running')
  process.kill(serverPid, 'SIGTERM')
  await until(() => !alive(serverPid), 'the server to stop on SIGTERM')
})
