// The control connection: one connection per replica that ftproxy itself keeps to the server,
// opened before any client's, so it takes the same place in every copy's accept order. It
// carries what ftproxy has to ask the server (health probes, and whether the server took a
// blocking request: see turns.ts) without opening new connections at moments unrelated to
// the log, which would make connection ids differ between the copies.
//
// Queries are sent one at a time, in order; each resolves with its reply's bytes, framed by
// the protocol's own reply reader.

import type net from 'node:net'
import type { HostPort } from '../address.js'
import { FtproxyError } from '../errors.js'
import type { ControlDialect, Protocol, ReplyReader, Session } from '../protocol/types.js'
import { Queue } from '../util/queue.js'
import { runningTimeout } from '../util/timer.js'
import { dial } from './dial.js'

interface Query {
  request: Buffer
  resolve: (reply: Buffer) => void
  reject: (err: Error) => void
}

export class Control {
  readonly dialect: ControlDialect
  private socket: net.Socket | null = null
  private session: Session
  private reader: ReplyReader
  /** Queries sent (or to send once connected), oldest first: each one's reply is next. */
  private readonly waiting = new Queue<Query>()
  /** Bytes of the reply being read, across chunks. */
  private partial: Buffer[] = []
  private open = false
  private dead: Error | null = null
  private timeout = 0
  /**
   * Who answered the first connect (resp: its run_id), or the one the state vouches for if
   * given: every connect must find the same.
   */
  private identity: Promise<string | null> | null = null
  /** The probe in flight: a later one shares it rather than queue behind a busy server. */
  private probing: Promise<Error | null> | null = null

  constructor (
    private readonly address: HostPort,
    private readonly protocol: Protocol,
    private readonly onFailed: (err: Error) => void,
    vouched: string | null = null
  ) {
    if (!protocol.control) throw new TypeError(`protocol ${protocol.name} has no control dialect`)
    if (vouched !== null) this.identity = Promise.resolve(vouched)
    this.dialect = protocol.control
    this.session = protocol.session()
    this.reader = this.session.reader()
  }

  /** Connect within `timeout` ms (and reconnect within it, should the server close it). */
  async connect (timeout: number): Promise<void> {
    this.timeout = timeout
    const socket = await dial(this.address, timeout, 'the control connection')
    if (this.dead) {
      socket.destroy()
      return
    }
    socket.on('data', (data: Buffer) => this.onData(data))
    socket.on('close', () => this.closed(socket))
    this.socket = socket
    this.open = true
    for (const q of this.waiting) socket.write(q.request)
    this.checkIdentity()
  }

  // A server that restarted at the same address (while this process was paused, say) lost
  // its state: a reconnect to it is a failure, not a connection like the last.
  private checkIdentity (): void {
    const { identity: request, identityOf } = this.dialect
    if (!request || !identityOf) return
    const now = this.query(request).then(identityOf, () => null)
    const first = this.identity
    if (first === null) {
      this.identity = now
      return
    }
    void Promise.all([first, now]).then(([was, is]) => {
      if (was === null || is === null || was === is) return
      this.fail(new FtproxyError('ERR_FTPROXY_SERVER_RESTARTED',
        `the server is another process than the one vouched for (run_id ${was}, now ${is})`))
    })
  }

  /** Send one request; resolves with its reply. Rejects once the connection is gone. */
  query (request: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.dead || !this.socket) {
        return reject(this.dead ?? new Error('control connection not open'))
      }
      this.session.request(request)
      this.waiting.push({ request, resolve, reject })
      if (this.open) this.socket.write(request)
    })
  }

  /**
   * A health probe: null when the server answered as a serving one should, else why not.
   * No answer within `timeout` is ERR_FTPROXY_BUSY, not a failure: the probe waits behind
   * whatever the server is running (a long command holds every copy alike), and the
   * connection itself shows a dead server. A hung one is the stall check's to find.
   */
  probe (timeout: number): Promise<Error | null> {
    this.probing ??= this.probeOnce(timeout).finally(() => { this.probing = null })
    return this.probing
  }

  private async probeOnce (timeout: number): Promise<Error | null> {
    let timer: ReturnType<typeof runningTimeout> | undefined
    const late = new Promise<Error>((resolve) => {
      timer = runningTimeout(timeout, () => {
        resolve(new FtproxyError('ERR_FTPROXY_BUSY', `no answer to a probe within ${timeout}ms`))
      })
    })
    const answer = this.query(this.dialect.probe).then(
      (reply) => this.dialect.healthy(reply)
        ? null
        : new FtproxyError('ERR_FTPROXY_UNHEALTHY', `probe answered ${describe(reply)}`),
      (err: NodeJS.ErrnoException) => Object.assign(err, { code: err.code ?? 'ECONNRESET' })
    )
    const err = await Promise.race([answer, late])
    timer?.clear()
    return err
  }

  /**
   * Resolves once the connection answers a request sent now: after a request that may have
   * closed it (CLIENT KILL), that is once it is open again.
   */
  async sync (): Promise<void> {
    await this.query(this.dialect.probe)
  }

  close (): void {
    this.dead ??= new Error('control connection closed')
    this.socket?.destroy()
    this.rejectAll()
  }

  // The server closed it: a client may have killed it (CLIENT KILL TYPE normal, which every
  // copy runs) or the server reaped it idle (its `timeout`). Reconnect once, with the
  // queries not answered yet sent again; the replica fails only if the server is gone.
  private closed (socket: net.Socket): void {
    if (this.dead || socket !== this.socket) return
    this.open = false
    this.partial = []
    this.session = this.protocol.session()
    this.reader = this.session.reader()
    for (const q of this.waiting) this.session.request(q.request)
    this.connect(this.timeout).catch((err: Error) => this.fail(new FtproxyError(
      'ERR_FTPROXY_CONTROL_CLOSED', `the server closed the control connection: ${err.message}`)))
  }

  private onData (data: Buffer): void {
    let from = 0
    for (const mark of this.reader.push(data)) {
      this.partial.push(data.subarray(from, mark.end))
      from = mark.end
      const reply = Buffer.concat(this.partial)
      this.partial = []
      this.waiting.shift()?.resolve(reply)
    }
    if (from < data.length) this.partial.push(data.subarray(from))
    if (this.reader.error) {
      this.fail(new FtproxyError('ERR_FTPROXY_CONTROL_PROTOCOL', this.reader.error))
    }
  }

  private fail (err: Error): void {
    if (this.dead) return
    this.dead = err
    this.socket?.destroy()
    this.rejectAll()
    this.onFailed(err)
  }

  private rejectAll (): void {
    for (let q = this.waiting.shift(); q; q = this.waiting.shift()) q.reject(this.dead as Error)
  }
}

function describe (reply: Buffer): string {
  return JSON.stringify(reply.subarray(0, 40).toString('latin1'))
}
