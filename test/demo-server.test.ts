import t from 'tap'
import assert from 'node:assert'
import type { Test } from 'tap'
import { spawn } from 'node:child_process'
import fs from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { PassThrough } from 'node:stream'
import { pathToFileURL } from 'node:url'
import { formatHostPort } from '../lib/address.js'
import {
  DemoStore, LINE_TOO_LONG, LineSplitter, MAX_LINE, runDemoServerCli, startDemoServer,
} from '../lib/demo-server.js'
import type { DemoServer, DemoServerOptions } from '../lib/demo-server.js'
import { until } from './helpers/until.js'

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

t.test('runDemoServerCli prints one listening line and stops on a signal', async (t) => {
  const stdout = new PassThrough()
  let out = ''
  stdout.on('data', (b: Buffer) => { out += b.toString() })
  // A signal tap does not handle itself; process.emit delivers it without a real kill.
  const done = runDemoServerCli({ stdout, signals: ['SIGWINCH'] })
  await until(() => out.endsWith('\n'), 'listening line')
  const line = JSON.parse(out) as { event: string, address: string }
  t.equal(line.event, 'listening')
  t.match(line.address, /^127\.0\.0\.1:\d+$/)
  const port = Number(line.address.split(':')[1])
  const c = await connect(t, { address: { host: '127.0.0.1', port } } as DemoServer)
  t.same(await c.ask('PING\n'), ['PONG'])
  process.emit('SIGWINCH', 'SIGWINCH')
  await done
  await c.waitEnd()
  t.equal(process.listenerCount('SIGWINCH'), 0, 'signal listeners removed')
  t.equal(out.split('\n').length, 2, 'exactly one line')
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
  await until(() => out.includes('\n'), 'listening line', 30_000)
  t.match(JSON.parse(out), { event: 'listening', address: /^127\.0\.0\.1:\d+$/ })
  child.kill('SIGTERM')
  t.equal(await exited, 0)
  t.match(err, /stopped/)
})
