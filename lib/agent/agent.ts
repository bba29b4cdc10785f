// The agent: runs beside a server on its own host and applies the front's log to it with the
// same Applier a direct replica uses.
//
//   front ══ log channel ══▶ Agent ── Applier ──▶ server (127.0.0.1)
//     ◀── ACK(seq) once the entry is written to the server's socket
//     ◀── OUT(conn, offset) the server's output, kept until the front credits it (OUT_ACK)
//     ──▶ SYNC(seq) ◀── SYNCED(applied) once the server has run every entry it was given
//
// A session belongs to one front process (its frontId). When the channel drops the session
// stays: the front reconnects, says which output it has, gets back what it missed, and
// resends the entries this side has not applied. A newer epoch fences every older front.

import { EventEmitter } from 'node:events'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import tls from 'node:tls'
import { formatHostPort, isLoopback, type HostPort } from '../address.js'
import type { AgentConfig } from '../config/index.js'
import { FtproxyError } from '../errors.js'
import type { Logger } from '../logger.js'
import { nullLogger } from '../logger.js'
import { HealthCheck, Watch, aliveAfterEnd, waitReachable } from '../health.js'
import { Supervisor } from '../supervise.js'
import { Applier } from '../replica/applier.js'
import { protocolFor } from '../protocol/index.js'
import { isProtocolName, type ProtocolName } from '../protocol/types.js'
import { Channel } from '../channel/channel.js'
import { PROTOCOL_VERSION, splitData, type Frame, type HelloFrame } from '../channel/codec.js'
import { readIncarnation, within } from '../incarnation.js'
import { writeFileAtomicSync } from '../util/atomic-write.js'
import { listen } from '../util/listen.js'
import { Session, uncredited, type Output } from './session.js'
import { Admission, HANDSHAKE_MS, Handshakes } from './handshakes.js'

/**
 * The furthest an epoch may move past the newest one seen, in one step. Honest epochs move by
 * one per front start, failover or stale-set change; a jump past this is a bug or an attack,
 * and taking it would fence every honest front for good.
 */
export const MAX_EPOCH_JUMP = 2 ** 20

const INSECURE_NOTE = 'no tls: anyone who reaches this address can drive the server; ' +
  'configure tls (mutual) or bind 127.0.0.1'

export class Agent extends EventEmitter<{ listening: [address: HostPort] }> {
  private readonly log: Logger
  private server?: net.Server
  private channel: Channel | null = null
  private session: Session | null = null
  private supervisor?: Supervisor
  private readonly health: HealthCheck
  /** Checks while no session's applier has a control connection: one connection kept. */
  private readonly watch: Watch
  private epoch = 0
  private serverDown: string | null = null
  private heartbeatTimer?: NodeJS.Timeout
  private bound?: HostPort
  private readonly epochFile: string
  private readonly handshakes: Handshakes
  /** Incarnation reads in flight, per protocol: HELLOs that overlap share one. */
  private readonly reads = new Map<ProtocolName, Promise<string>>()

  constructor (private readonly cfg: AgentConfig, opts: { log?: Logger } = {}) {
    super()
    this.log = opts.log ?? nullLogger()
    this.handshakes = new Handshakes(this.log)
    this.health = new HealthCheck({ address: cfg.server, ...cfg.health_check })
    this.watch = new Watch(cfg.server)
    this.health.prober = this.watch.probe
    this.epochFile = path.join(cfg.state_dir, 'epoch.json')
  }

  get address (): HostPort {
    if (!this.bound) throw new Error('agent not started')
    return this.bound
  }

  async start (): Promise<void> {
    fs.mkdirSync(this.cfg.state_dir, { recursive: true, mode: 0o750 })
    this.epoch = this.readEpoch()
    if (this.cfg.command) {
      this.supervisor = new Supervisor({
        name: 'server',
        command: this.cfg.command,
        log: this.log,
        stopTimeoutMs: this.cfg.timeouts.linger,
        // The server outlives a crash of this agent and the next one adopts it, instead of
        // starting a second copy (that would find the port taken) and losing the data.
        record: path.join(this.cfg.state_dir, 'server.json'),
        address: formatHostPort(this.cfg.server),
      })
      this.supervisor.on('exit', (code, signal) => {
        this.onServerDown(`process exited (code ${code}, signal ${signal})`)
      })
      this.supervisor.start()
    }
    await this.awaitServer()
    this.health.on('down', (reason) => this.onServerDown(reason))
    this.health.on('up', () => {
      if (this.serverDown === null) return
      this.log.info('server_up', { server: formatHostPort(this.cfg.server) })
      this.serverDown = null
    })
    this.health.start()
    await this.listen()
    this.heartbeatTimer = setInterval(() => {
      this.channel?.send({ type: 'HEARTBEAT', epoch: this.epoch })
    }, this.cfg.health_check.interval)
    this.heartbeatTimer.unref()
  }

  async close (): Promise<void> {
    clearInterval(this.heartbeatTimer)
    this.health.stop()
    this.watch.close()
    const closed = new Promise<void>((resolve) => {
      if (this.server) this.server.close(() => resolve())
      else resolve()
    })
    this.channel?.destroy()
    this.handshakes.destroyAll()
    this.session?.close()
    await closed
    await this.supervisor?.stop()
    this.log.info('shutdown', {})
  }

  private async awaitServer (): Promise<void> {
    const server = formatHostPort(this.cfg.server)
    const err = await waitReachable(this.cfg.server, {
      probeTimeout: this.cfg.health_check.timeout,
      deadline: performance.now() + Math.max(5000, this.cfg.timeouts.connect * 3),
    })
    if (err === null) return this.log.info('server_up', { server })
    const code = (err as NodeJS.ErrnoException).code ?? err.message
    this.serverDown = `unreachable at startup: ${code}`
    this.log.warn('server_down', { server, reason: this.serverDown })
  }

  private async listen (): Promise<void> {
    const { tls: t, listen: at } = this.cfg
    const server = t
      ? tls.createServer({
        cert: fs.readFileSync(t.cert),
        key: fs.readFileSync(t.key),
        ca: fs.readFileSync(t.ca),
        requestCert: true,
        rejectUnauthorized: true,
        handshakeTimeout: HANDSHAKE_MS,
      })
      : net.createServer()
    this.server = server
    // Counted from the TCP accept: a TLS handshake that never ends is pending too.
    server.on('connection', (socket: net.Socket) => {
      if (this.handshakes.arrive(socket) && !t) this.onConnection(socket)
    })
    if (t) server.on('secureConnection', (socket: net.Socket) => this.onConnection(socket))
    server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
      // With a listener here, Node leaves the socket open, even after a handshake timeout.
      socket.destroy()
      const reason = err.code ?? 'tls'
      this.handshakes.refused(reason, { error: err.message }, 'tls_refused')
    })
    await listen(server, { host: at.host, port: at.port })
    const a = server.address() as net.AddressInfo
    const bound = this.bound = { host: a.address, port: a.port }
    const address = formatHostPort(bound)
    this.log.info('listening', {
      address, server: formatHostPort(this.cfg.server), tls: Boolean(t), epoch: this.epoch,
    })
    if (!t && !isLoopback(at.host)) {
      this.log.warn('insecure_listen', { address, note: INSECURE_NOTE })
    }
    this.emit('listening', bound)
  }

  private onConnection (socket: net.Socket): void {
    const a = new Admission()
    const ch = new Channel(socket, { admit: (len) => this.handshakes.admit(a, len) })
    const timer = setTimeout(() => {
      if (a.accepted) return
      if (!ch.closed) this.handshakes.refused('timeout', { limit_ms: HANDSHAKE_MS })
      ch.destroy()
    }, HANDSHAKE_MS)
    timer.unref()
    ch.on('frame', (f) => this.onFrame(ch, f, a))
    ch.on('error', (err) => {
      if (a.accepted || !(err instanceof FtproxyError)) {
        const code = (err as NodeJS.ErrnoException).code
        return this.log.debug('channel_error', { error: err.message, code })
      }
      // Garbage, or a frame larger than a handshake may send: closed, nothing changed.
      this.handshakes.refused('frame', { frame: err.details.reason, error: err.message })
    })
    ch.on('close', () => {
      clearTimeout(timer)
      this.handshakes.closed(a)
      if (this.channel !== ch) return
      this.channel = null
      this.log.warn('channel_down', { front: this.session?.frontId })
    })
  }

  private onFrame (ch: Channel, f: Frame, a: Admission): void {
    if (!a.accepted) {
      // The front sends nothing between its HELLO and the WELCOME.
      if (a.answering) {
        this.handshakes.refused('before_welcome', { type: f.type })
        return ch.fail(protocolError(this.epoch, `${f.type} before WELCOME`))
      }
      // Nothing before a valid HELLO changes anything: not the epoch, a session or the server.
      if (f.type === 'HELLO') return this.hello(ch, f, a)
      this.handshakes.refused('not_hello', { type: f.type })
      return ch.fail(protocolError(this.epoch, `expected HELLO, got ${f.type}`))
    }
    if (this.channel !== ch) return // replaced or failed: closing
    if (!this.takeEpoch(ch, f.epoch)) {
      this.channel = null
      return
    }
    // The channel is set only by hello(), which sets the session first.
    const s = this.session as Session
    switch (f.type) {
      case 'OPEN': case 'DATA': case 'EOF': case 'CLOSE': {
        if (f.seq <= s.applied) return // resent after a reconnect: applied already
        if (f.seq !== s.applied + 1) {
          this.channel = null
          return ch.fail(protocolError(this.epoch, `entry ${f.seq} after ${s.applied}`))
        }
        s.applied = f.seq
        s.applier.apply(f.type === 'DATA'
          ? { seq: f.seq, type: 'DATA', conn: f.conn, data: f.data }
          : { seq: f.seq, type: f.type, conn: f.conn })
        return
      }
      case 'OUT_ACK': return s.credit(f.conn, f.offset)
      case 'SYNC': {
        // Every entry up to seq came before it on this channel, or on an earlier one.
        if (f.seq <= s.applied) return s.sync()
        this.channel = null
        return ch.fail(protocolError(this.epoch, `SYNC ${f.seq} after ${s.applied}`))
      }
      // Answered at once: the front hears from a live agent at the front's own pace.
      case 'HEARTBEAT':
        ch.send({ type: 'HEARTBEAT', epoch: this.epoch })
        return
      case 'ERROR':
        this.log.warn('front_error', { code: f.code, error: f.message })
        this.channel = null
        return ch.destroy()
      default:
        this.channel = null
        return ch.fail(protocolError(this.epoch, `unexpected ${f.type}`))
    }
  }

  private hello (ch: Channel, f: HelloFrame, a: Admission): void {
    if (f.version !== PROTOCOL_VERSION) {
      const message = `protocol version ${f.version}; this agent speaks ${PROTOCOL_VERSION}`
      return ch.fail(protocolError(this.epoch, message))
    }
    if (!isProtocolName(f.protocol)) {
      return ch.fail(protocolError(this.epoch, `unknown application protocol ${f.protocol}`))
    }
    // The WELCOME names the server's incarnation, which may take a question to the server:
    // everything else waits for it, so that the answer acts on the agent's state as it is then.
    a.answering = true
    void this.incarnation(f.protocol).then((incarnation) => {
      // Closed meanwhile (by the front, the handshake timeout, or this agent's close()).
      if (!ch.closed && !ch.socket.destroyed) this.welcome(ch, f, a, incarnation)
    })
  }

  private welcome (ch: Channel, f: HelloFrame, a: Admission, incarnation: string): void {
    // A valid HELLO: its epoch is recorded even when the server is down, to fence older fronts.
    if (!this.takeEpoch(ch, f.epoch)) return
    if (this.serverDown !== null) {
      return ch.fail({
        type: 'ERROR', epoch: this.epoch, code: 'ERR_FTPROXY_SERVER_DOWN', message: this.serverDown,
      })
    }
    const held = this.session
    if (held && held.frontId !== f.frontId && f.epoch <= held.epoch) {
      // Two fronts at one epoch: only one of them won it. Neither may take the other's session.
      this.log.warn('fenced', { epoch: f.epoch, front: f.frontId, holder: held.frontId })
      return ch.fail(fenced(this.epoch, `epoch ${f.epoch} is held by another front`))
    }
    if (this.channel) {
      this.log.info('channel_replaced', { front: f.frontId })
      this.channel.destroy()
    }
    this.channel = ch
    this.handshakes.accept(a)
    const s = this.takeSession(held, f)
    ch.send({
      type: 'WELCOME',
      epoch: this.epoch,
      version: PROTOCOL_VERSION,
      applied: s.applied,
      incarnation,
      acks: [...s.acked].map(([conn, seq]) => ({ conn, seq })),
    })
    // The front names every connection it still has open: one it no longer names got its
    // close; the others get whatever they missed again.
    const resume = new Map(f.resume.map((r) => [r.conn, r.offset]))
    for (const [conn, o] of [...s.out]) {
      const offset = resume.get(conn)
      if (offset === undefined) {
        if (o.closed) s.forget(conn)
        continue
      }
      s.credit(conn, offset)
      this.resend(ch, conn, o)
    }
  }

  // The server's incarnation ('' when it cannot be told, or not within health_check.timeout,
  // which the front's heartbeat timeout must exceed: it hears nothing before the WELCOME).
  private incarnation (protocol: ProtocolName): Promise<string> {
    const reading = this.reads.get(protocol)
    if (reading) return reading
    const sup = this.supervisor
    const source = {
      name: 'server',
      address: this.cfg.server,
      supervised: sup ? () => sup.incarnation : null,
      agent: null,
      // A session's control connection, if there is one: a channel that reconnects opens
      // no connection to the server for the question.
      ask: (request: Buffer) => this.session?.applier.ask(request) ?? null,
    }
    // Within the handshake's own time limit, whatever the configuration.
    const timeout = Math.min(this.cfg.health_check.timeout, HANDSHAKE_MS / 2)
    const read = readIncarnation(source, protocol, timeout).catch(() => null)
    const p = within(read, timeout).then((id) => {
      this.reads.delete(protocol)
      return id ?? ''
    })
    this.reads.set(protocol, p)
    return p
  }

  // The front's session: the one held when it is the same front process, else a new one.
  private takeSession (held: Session | null, f: HelloFrame): Session {
    if (held && held.frontId === f.frontId) {
      held.window = f.window
      this.log.info('channel_resumed', { front: f.frontId, applied: held.applied })
      return held
    }
    // Another front process: whatever the last one had open is gone with its clients.
    held?.close()
    const s = this.session = this.newSession(f)
    this.log.info('session_started', { front: f.frontId, epoch: f.epoch })
    return s
  }

  // Everything of `conn`'s output the front has not credited, then its end, again.
  private resend (ch: Channel, conn: number, o: Output): void {
    for (const { offset, data } of uncredited(o)) {
      ch.send({ type: 'OUT', epoch: this.epoch, conn, offset, data })
    }
    if (o.eof) {
      const { offset, reset } = o.eof
      ch.send({ type: 'OUT_EOF', epoch: this.epoch, conn, offset, reset })
    }
    if (o.closed) {
      o.closeSent = true
      ch.send({ type: 'OUT_CLOSE', epoch: this.epoch, conn })
    }
  }

  private newSession (f: HelloFrame): Session {
    const { frontId, epoch, window } = f
    const { server: address, timeouts } = this.cfg
    const { connect: connectTimeout, linger } = timeouts
    // A serial protocol orders the log here, beside the server, where a turn's wait is short;
    // held entries are acknowledged at once (the front may release output that depends on them).
    const protocol = protocolFor(f.protocol as ProtocolName)
    const applier = new Applier({ address, connectTimeout, linger, protocol, holdBytes: window })
    // Health checks go through the applier's control connection when it has one.
    this.health.prober = applier.prober ?? this.watch.probe
    applier.on('control_refused', (reason) => this.log.warn('control_refused', { reason }))
    applier.on('lane_off', (reason) => this.log.warn('lane_disabled', { reason }))
    const s = new Session(frontId, epoch, applier, window)
    const send = (f: Frame): void => { if (this.session === s) this.channel?.send(f) }
    // After every OUT the run produced: they went out on the channel as they came.
    s.synced = (ran) => send({ type: 'SYNCED', epoch: this.epoch, seq: ran })
    applier.on('ack', (e) => {
      s.acked.set(e.conn, e.seq)
      send({ type: 'ACK', epoch: this.epoch, seq: e.seq })
    })
    applier.on('output', (conn, data) => {
      const o = s.output(conn)
      for (const piece of splitData(data)) {
        send({ type: 'OUT', epoch: this.epoch, conn, offset: o.end, data: piece })
        s.append(o, piece)
      }
      if (!o.paused && o.end - o.start > s.window) {
        o.paused = true
        applier.pause(conn)
      }
    })
    this.reportEnds(s)
    applier.on('failed', (err) => {
      this.onServerDown(`connect: ${(err as NodeJS.ErrnoException).code ?? err.message}`)
    })
    return s
  }

  // An end is reported once the server is known to be alive (a dying server's sockets
  // end too); the close that follows it waits for that report.
  private reportEnds (s: Session): void {
    const send = (f: Frame): void => { if (this.session === s) this.channel?.send(f) }
    const reportClose = (conn: number, o: Output): void => {
      o.closed = true
      if (this.session === s && this.channel) {
        o.closeSent = true
        this.channel.send({ type: 'OUT_CLOSE', epoch: this.epoch, conn })
      }
    }
    s.applier.on('output_end', (conn, err) => {
      const o = s.output(conn)
      const offset = o.end
      o.ending = true
      void aliveAfterEnd(this.health, () => this.session === s).then((alive) => {
        // Not alive: the session was replaced, or the check went down (its handler reports).
        if (!alive) return
        o.eof = { offset, reset: err !== null }
        send({ type: 'OUT_EOF', epoch: this.epoch, conn, offset, reset: err !== null })
        if (o.closeWaiting) reportClose(conn, o)
      })
    })
    s.applier.on('closed', (conn) => {
      const o = s.output(conn)
      if (o.ending && !o.eof) o.closeWaiting = true
      else reportClose(conn, o)
    })
  }

  private onServerDown (reason: string): void {
    if (this.serverDown !== null) return
    this.serverDown = reason
    this.log.warn('server_down', { server: formatHostPort(this.cfg.server), reason })
    // The front must stop counting on this replica: say why, then close the channel.
    this.channel?.fail({
      type: 'ERROR', epoch: this.epoch, code: 'ERR_FTPROXY_SERVER_DOWN', message: reason,
    })
    this.channel = null
    this.session?.close()
    this.session = null
    this.health.prober = this.watch.probe
  }

  // An epoch older than the newest seen is fenced, one too far ahead refused, a newer one
  // recorded before anything acts on it. False: `ch` has been failed.
  private takeEpoch (ch: Channel, epoch: number): boolean {
    if (epoch < this.epoch) {
      this.log.warn('fenced', { epoch, newest: this.epoch })
      ch.fail(fenced(this.epoch, `epoch ${epoch} is older than ${this.epoch}`))
      return false
    }
    if (epoch - this.epoch > MAX_EPOCH_JUMP) {
      const fields = { epoch, newest: this.epoch, max_jump: MAX_EPOCH_JUMP, file: this.epochFile }
      this.log.error('epoch_jump_refused', fields)
      ch.fail({
        type: 'ERROR',
        epoch: this.epoch,
        code: 'ERR_FTPROXY_EPOCH_JUMP',
        message: `epoch ${epoch} is more than ${MAX_EPOCH_JUMP} past the newest seen, ` +
          `${this.epoch}; if it is right, write it to ${this.epochFile}`,
      })
      return false
    }
    return epoch === this.epoch || this.raiseEpoch(epoch, ch)
  }

  // Fencing is only as good as the record of the newest epoch: one that cannot be written
  // is not taken (the front gets an error and tries again). Written before anything acts on
  // it, hence synchronously.
  private raiseEpoch (epoch: number, from: Channel): boolean {
    try {
      const record = JSON.stringify({ epoch, updated_at: new Date().toISOString() }) + '\n'
      writeFileAtomicSync(this.epochFile, record)
    } catch (err) {
      const error = (err as Error).message
      this.log.error('epoch_write_failed', { epoch, file: this.epochFile, error })
      from.fail({
        type: 'ERROR',
        epoch: this.epoch,
        code: 'ERR_FTPROXY_STATE',
        message: `cannot record epoch ${epoch}: ${error}`,
      })
      return false
    }
    this.epoch = epoch
    this.log.info('epoch', { epoch })
    if (this.channel && this.channel !== from) {
      // A front with a newer epoch is here: the one before it may not drive the server any more.
      this.channel.fail(fenced(epoch, `epoch ${epoch} supersedes this channel`))
      this.channel = null
    }
    return true
  }

  private readEpoch (): number {
    try {
      const v = JSON.parse(fs.readFileSync(this.epochFile, 'utf8')) as { epoch?: unknown }
      if (typeof v.epoch !== 'number' || !Number.isSafeInteger(v.epoch) || v.epoch < 0) {
        throw new Error('no epoch')
      }
      return v.epoch
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0
      const message = `${this.epochFile}: unreadable or malformed: ${(err as Error).message}`
      throw new FtproxyError('ERR_FTPROXY_STATE', message, { file: this.epochFile })
    }
  }
}

function protocolError (epoch: number, message: string): Frame {
  return { type: 'ERROR', epoch, code: 'ERR_FTPROXY_PROTOCOL', message }
}

function fenced (epoch: number, message: string): Frame {
  return { type: 'ERROR', epoch, code: 'ERR_FTPROXY_FENCED', message }
}
