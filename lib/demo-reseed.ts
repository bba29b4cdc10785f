// `ftproxy demo-reseed`: the demo server's re-seed recipe, run by the front as
// `reseed.command: [ftproxy, demo-reseed]`. It copies the source server's whole map into the
// target server, talking to both directly with the state-transfer commands of demo-server.ts.
//
//   prepare  connect to FTPROXY_RESEED_SOURCE_ADDRESS and FTPROXY_RESEED_TARGET_ADDRESS, ask
//            each its ID (both are demo servers, and not the same one), print `ready`
//   cut      wait for `cut` on stdin; then source DUMP, DUMPNEXT… → target LOADBEGIN,
//            LOADPART…, LOADCOMMIT, with up to WINDOW batches in flight; check that the target
//            now holds as many entries as the dump; print one summary line
//
// The whole copy is made at the cut, under the front's hold: the demo's maps are small, and a
// copy made before the cut would have to be made again. stdin ending before `cut` (the front
// gave up or died) fails the command with the target untouched; after `cut` it may end (a
// front may close stdin once it wrote `cut`). A load is committed only whole: if this process
// dies during the copy, its connection closes and the target drops the load. Exit code 0 once
// the target is committed with the right count; any error: one line on stderr, exit code 1.

import net from 'node:net'
import { formatHostPort, parseHostPort, type HostPort } from './address.js'
import { LINE_TOO_LONG, LineSplitter, MAX_LINE } from './demo-server.js'

/** Batches between the source and the target at once (each at most MAX_LINE bytes). */
const WINDOW = 16
const CONNECT_TIMEOUT_MS = 10_000
const SOURCE_ENV = 'FTPROXY_RESEED_SOURCE_ADDRESS'
const TARGET_ENV = 'FTPROXY_RESEED_TARGET_ADDRESS'

export interface DemoReseedIO {
  env: NodeJS.ProcessEnv
  stdin: NodeJS.ReadableStream
  stdout: NodeJS.WritableStream
  stderr: NodeJS.WritableStream
}

/** Runs the recipe (see the header); resolves with the exit code. Never exits the process. */
export async function runDemoReseed (io: DemoReseedIO): Promise<number> {
  const clients: LineClient[] = []
  try {
    const source = await LineClient.connect('source', address(io.env, SOURCE_ENV))
    clients.push(source)
    const target = await LineClient.connect('target', address(io.env, TARGET_ENV))
    clients.push(target)
    const ids = [await id(source), await id(target)]
    if (ids[0] === ids[1]) throw new Error(`source and target are the same server (ID ${ids[0]})`)
    io.stdout.write('ready\n')
    // A server that goes away while we wait fails the command at once, not at the cut.
    await waitCut(io.stdin, [source.closed, target.closed])
    const started = Date.now()
    const copied = await copy(source, target)
    io.stdout.write(`copied ${copied.entries} entries (${copied.bytes} bytes of base64) ` +
      `from ${source.where} (ID ${ids[0]}) to ${target.where} (ID ${ids[1]}) ` +
      `in ${Date.now() - started} ms\n`)
    return 0
  } catch (err) {
    io.stderr.write(`ftproxy demo-reseed: ${(err as Error).message}\n`)
    return 1
  } finally {
    for (const c of clients) c.close()
  }
}

function address (env: NodeJS.ProcessEnv, name: string): HostPort {
  const value = env[name]
  if (value === undefined || value === '') throw new Error(`${name} is not set`)
  try {
    return parseHostPort(value)
  } catch (err) {
    throw new Error(`${name}: ${(err as Error).message}`)
  }
}

async function id (c: LineClient): Promise<string> {
  const reply = await c.ask('ID')
  if (!/^[0-9a-f]+$/.test(reply)) throw unexpected(c, 'ID', reply)
  return reply
}

// Resolves on a line `cut` on stdin; rejects when stdin ends or says anything else first, or
// when one of `stops` rejects. Leaves stdin paused, with no listener of ours.
function waitCut (stdin: NodeJS.ReadableStream, stops: Array<Promise<never>>): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let text = ''
    const done = (err?: Error): void => {
      stdin.off('data', onData)
      stdin.off('end', onEnd)
      stdin.off('error', done)
      stdin.pause()
      if (err === undefined) resolve()
      else reject(err)
    }
    const onData = (chunk: Buffer | string): void => {
      text += chunk.toString()
      for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n')) {
        const line = text.slice(0, nl).trim()
        text = text.slice(nl + 1)
        if (line === 'cut') return done()
        if (line !== '') return done(new Error(`expected cut on stdin, got '${brief(line)}'`))
      }
      if (text.length > 1024) done(new Error('expected cut on stdin, got a long line'))
    }
    const onEnd = (): void => done(new Error('stdin ended before cut; the target is untouched'))
    stdin.on('data', onData)
    stdin.once('end', onEnd)
    stdin.once('error', done)
    for (const stop of stops) stop.catch(done)
    stdin.resume()
  })
}

// The longest DUMPNEXT reply that still fits in `LOADPART <batch>`.
const MAX_BATCH = MAX_LINE - 'LOADPART '.length

// Source dump → target load, pipelined; resolves once the target committed as many entries.
async function copy (
  source: LineClient, target: LineClient
): Promise<{ entries: number, bytes: number }> {
  const entries = count(source, 'DUMP', await source.ask('DUMP'))
  expectOk(target, 'LOADBEGIN', await target.ask('LOADBEGIN'))
  const nexts: Array<Promise<string>> = []
  const acks: Array<Promise<string>> = []
  for (let i = 0; i < WINDOW; i++) nexts.push(source.ask('DUMPNEXT'))
  let bytes = 0
  for (let next = nexts.shift(); next !== undefined; next = nexts.shift()) {
    const batch = await next
    if (batch === 'END') break
    if (!/^[A-Za-z0-9+/=]+$/.test(batch) || batch.length > MAX_BATCH) {
      throw unexpected(source, 'DUMPNEXT', batch)
    }
    bytes += batch.length
    acks.push(target.ask(`LOADPART ${batch}`))
    // Never more than WINDOW batches between the two: the target's backlog stays bounded.
    while (acks.length >= WINDOW) {
      const ack = acks.shift()
      if (ack !== undefined) expectOk(target, 'LOADPART', await ack)
    }
    nexts.push(source.ask('DUMPNEXT'))
  }
  for (const ack of acks) expectOk(target, 'LOADPART', await ack)
  const loaded = count(target, 'LOADCOMMIT', await target.ask('LOADCOMMIT'))
  if (loaded !== entries) {
    throw new Error(`the target holds ${loaded} entries after the load, the source's dump ` +
      `had ${entries}`)
  }
  return { entries, bytes }
}

function count (c: LineClient, command: string, reply: string): number {
  if (!/^(0|[1-9][0-9]{0,15})$/.test(reply)) throw unexpected(c, command, reply)
  return Number(reply)
}

function expectOk (c: LineClient, command: string, reply: string): void {
  if (reply !== 'OK') throw unexpected(c, command, reply)
}

function unexpected (c: LineClient, command: string, reply: string): Error {
  return new Error(`the ${c.name} (${c.where}) answered ${command} with '${brief(reply)}'`)
}

function brief (s: string): string {
  return s.length > 120 ? `${s.slice(0, 120)}…` : s
}

interface Waiter { resolve: (line: string) => void, reject: (err: Error) => void }

/** One connection to a demo server: a request line out, its reply line back, pipelined. */
class LineClient {
  /** Rejects once the connection failed or closed (never resolves). */
  readonly closed: Promise<never>
  private readonly splitter = new LineSplitter()
  private readonly waiting: Waiter[] = []
  private failure: Error | undefined
  private rejectClosed: (err: Error) => void = () => {}

  private constructor (
    readonly name: string, readonly where: string, private readonly socket: net.Socket
  ) {
    this.closed = new Promise<never>((_resolve, reject) => { this.rejectClosed = reject })
    this.closed.catch(() => {})
    socket.on('data', (chunk: Buffer) => { this.onData(chunk) })
    socket.on('error', (err) => { this.fail(this.error(err.message)) })
    socket.on('close', () => { this.fail(this.error('the server closed the connection')) })
  }

  static async connect (name: string, address: HostPort): Promise<LineClient> {
    const where = formatHostPort(address)
    const socket = net.connect({ host: address.host, port: address.port, noDelay: true })
    socket.setTimeout(CONNECT_TIMEOUT_MS)
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve)
        socket.once('error', reject)
        socket.once('timeout', () => {
          reject(new Error(`no connection in ${CONNECT_TIMEOUT_MS} ms`))
        })
      })
    } catch (err) {
      socket.destroy()
      throw new Error(`cannot connect to the ${name} at ${where}: ${(err as Error).message}`)
    }
    socket.setTimeout(0)
    socket.removeAllListeners()
    return new LineClient(name, where, socket)
  }

  /** Sends one request line; resolves with its reply line (latin1, without \n). */
  ask (line: string): Promise<string> {
    const reply = new Promise<string>((resolve, reject) => {
      if (this.failure !== undefined) return reject(this.failure)
      this.waiting.push({ resolve, reject })
      this.socket.write(line + '\n', 'latin1')
    })
    // Handled where it is awaited; until then a failure must not count as unhandled.
    reply.catch(() => {})
    return reply
  }

  close (): void {
    this.fail(this.error('closed'))
  }

  private onData (chunk: Buffer): void {
    this.splitter.push(chunk)
    for (let line = this.splitter.next(); line !== undefined; line = this.splitter.next()) {
      if (line === LINE_TOO_LONG) return this.fail(this.error('a reply line too long'))
      const w = this.waiting.shift()
      if (w === undefined) return this.fail(this.error('a reply line with no request'))
      w.resolve(line.toString('latin1'))
    }
  }

  private error (why: string): Error {
    return new Error(`${this.name} (${this.where}): ${why}`)
  }

  private fail (err: Error): void {
    if (this.failure !== undefined) return
    this.failure = err
    for (const w of this.waiting.splice(0)) w.reject(err)
    this.rejectClosed(err)
    this.socket.destroy()
  }
}
