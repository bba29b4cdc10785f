// The front's side of the log channel to an agent (a replica on another host).
//
//   apply(entry) ──OPEN/DATA/EOF/CLOSE(seq)──▶ agent ──▶ Applier ──▶ server
//        ▲                                      │
//        └── 'ack' ◀── ACK(seq) ◀───────────────┤   (the agent's host holds the entry)
//   'output' ◀── OUT(conn, offset, bytes) ◀─────┘   credit back: OUT_ACK(conn, offset)
//   running ──SYNC(sent)──▶ agent ── its applier idle ──▶ SYNCED(ran) ──▶ running false
//
// Entries are held until acknowledged, so a channel that drops and comes back resends what
// the agent may not have (it skips what it already applied); output resumes at the offsets
// this side holds. Liveness: frames (heartbeats at least) every `interval`; nothing heard for
// `heartbeat` and the replica has failed. The agent refuses an epoch older than it has seen.
// A TLS refusal (either side's certificate) fails the replica at once, naming the side: it is
// a configuration error that no retry cures, and the heartbeat would hide it as silence.
// Every WELCOME names the agent's server's incarnation: 'incarnation' reports it before
// anything else happens on that channel, so that a restarted server is known before it is used.

import { EventEmitter } from 'node:events'
import { readFileSync } from 'node:fs'
import net from 'node:net'
import tls from 'node:tls'
import { performance } from 'node:perf_hooks'
import type { HostPort } from '../address.js'
import type { TlsConfig } from '../config/index.js'
import { FtproxyError, type ErrorCode } from '../errors.js'
import type { ProtocolName } from '../protocol/types.js'
import type { Logger } from '../logger.js'
import type { Entry } from '../front/log.js'
import { Channel } from '../channel/channel.js'
import {
  PROTOCOL_VERSION, type Frame, type OutFrame, type WelcomeFrame,
} from '../channel/codec.js'
import type { Transport, TransportEvents } from './transport.js'

// Error codes an agent sends that the front keeps as they are (any other: a protocol error).
const AGENT_CODES: readonly ErrorCode[] = [
  'ERR_FTPROXY_FENCED', 'ERR_FTPROXY_SERVER_DOWN', 'ERR_FTPROXY_EPOCH_JUMP',
]

export interface AgentTransportOptions {
  address: HostPort
  tls?: TlsConfig
  /** Identifies this front process to the agent (a new id starts a new session there). */
  frontId: string
  /** The front's current epoch, carried on every frame. */
  epoch: () => number
  /** Output the agent may send ahead per connection before it waits for credit. */
  window: number
  /** The application protocol: the agent frames and orders the log by it. */
  protocol: ProtocolName
  /** Heartbeat period. */
  interval: number
  /** Nothing heard for this long: failed. */
  heartbeat: number
  connectTimeout: number
  log: Logger
}

const RECONNECT_MS = 50
/** Channels in a row the agent closed unheard right after the TLS handshake: refused. */
const SILENT_CLOSES = 3

/** What one connection attempt showed: handshake done, a frame heard, its first error. */
interface Attempt { secured: boolean, heard: boolean, error?: NodeJS.ErrnoException }

interface TlsRefusal { by: 'front' | 'agent', code: string, certain: boolean }

// Who refused whom, if the attempt ended in a TLS refusal (null: something else).
function tlsRefusal (socket: tls.TLSSocket, a: Attempt): TlsRefusal | null {
  if (a.heard) return null
  const code = a.error ? a.error.code ?? a.error.message : undefined
  // The front's own checks (chain, expiry, name) failed: Node sets this, then destroys.
  if (!a.secured && socket.authorizationError && code) return { by: 'front', code, certain: true }
  // An alert from the agent's TLS stack; TLS 1.3 sends it after the front's side finished.
  if (code?.startsWith('ERR_SSL_') && code.includes('_ALERT_')) {
    return { by: 'agent', code, certain: true }
  }
  // Node's TLS server checks a client certificate after the handshake and refuses it by
  // closing, with no alert; an agent that accepted it answers HELLO with a frame (ERROR too).
  if (a.secured) return { by: 'agent', code: code ?? 'CLOSED_AFTER_HANDSHAKE', certain: false }
  return null
}

function refusalMessage (r: TlsRefusal): string {
  if (r.by === 'front') return `tls: the front refused the agent's certificate: ${r.code}`
  if (!r.certain || /CERT|_CA$/.test(r.code)) {
    return `tls: the agent refused the front's certificate: ${r.code}`
  }
  return `tls: the agent refused the handshake: ${r.code}`
}

export class AgentTransport extends EventEmitter<TransportEvents> implements Transport {
  sent = 0
  readonly endsConfirmed = true
  /** The agent checks its server itself; its heartbeats say whether it is up. */
  readonly prober = null
  /** What waits in the agent is not known here (it is in lag_entries until acknowledged). */
  readonly queued = 0
  /** The agent said its server has run every entry up to here (SYNCED). */
  private ran = 0
  /** A SYNC is in flight on the current channel. */
  private asking = false
  /**
   * The server's incarnation as the agent's last WELCOME named it (lib/incarnation.ts); null
   * before the first WELCOME, or when the agent cannot tell.
   */
  incarnation: string | null = null
  private readonly held = new Map<number, Entry>()
  /** Output received per connection (the offset the agent resumes from). */
  private readonly received = new Map<number, number>()
  private readonly ended = new Set<number>()
  private readonly paused = new Set<number>()
  private readonly owed = new Set<number>()
  private readonly tlsOptions?: tls.ConnectionOptions
  private channel: Channel | null = null
  private live = false
  private stopped = false
  private failedOnce = false
  private silentCloses = 0
  private creditScheduled = false
  private lastHeard = performance.now()
  private readonly ticker: NodeJS.Timeout
  private readonly period: number
  private lastTick: number
  private reconnectTimer?: NodeJS.Timeout

  constructor (private readonly opts: AgentTransportOptions) {
    super()
    let tlsError: Error | null = null
    if (opts.tls) {
      try {
        const { cert, key, ca } = opts.tls
        this.tlsOptions = { cert: readFileSync(cert), key: readFileSync(key), ca: readFileSync(ca) }
      } catch (err) {
        tlsError = err as Error
      }
    }
    // Heartbeats go out at least three times per heartbeat timeout; the agent answers each.
    this.period = Math.max(10, Math.min(opts.interval, opts.heartbeat / 3))
    this.lastTick = performance.now()
    this.ticker = setInterval(() => this.tick(), this.period)
    this.ticker.unref()
    // Certificates that cannot be read: fail (never fall back to plaintext).
    if (tlsError) {
      const err = new FtproxyError('ERR_FTPROXY_CONFIG', `tls: ${tlsError.message}`)
      setImmediate(() => this.fail(err))
    } else {
      this.connect()
    }
  }

  get unacked (): number {
    return this.held.size
  }

  /**
   * Until the agent confirms (SYNCED) that its server has run every entry handed over so far:
   * written to the server and, with a serial protocol, answered (an ACK only says the agent
   * holds it). Reading it while unconfirmed asks the agent (SYNC of `sent`, one in flight at
   * a time), so a poll of it turns false within a round trip once the server is done. The
   * agent sends every OUT of those entries before its SYNCED: false also means their output
   * is here. With protocol raw it means written to the server's socket: the server may
   * still be working on it, which nothing can tell without framing.
   */
  get running (): boolean {
    if (this.ran >= this.sent) return false
    if (this.live && !this.asking && !this.stopped) {
      this.asking = true
      this.channel?.send({ type: 'SYNC', epoch: this.opts.epoch(), seq: this.sent })
    }
    return true
  }

  apply (entry: Entry): void {
    if (this.stopped) return
    // From OPEN to OUT_CLOSE a connection is named in every HELLO's resume list.
    if (entry.type === 'OPEN') this.received.set(entry.conn, 0)
    this.held.set(entry.seq, entry)
    this.sent = entry.seq
    if (this.live) this.sendEntry(entry)
  }

  pause (conn: number): void {
    this.paused.add(conn)
  }

  resume (conn: number): void {
    if (this.paused.delete(conn)) this.owe(conn)
  }

  close (): void {
    this.stopped = true
    clearInterval(this.ticker)
    clearTimeout(this.reconnectTimer)
    this.channel?.destroy()
    this.channel = null
    this.removeAllListeners()
  }

  private connect (): void {
    if (this.stopped) return
    const { host, port } = this.opts.address
    const socket = this.tlsOptions
      ? tls.connect({
        host, port, ...this.tlsOptions, servername: net.isIP(host) ? undefined : host,
      })
      : net.connect({ host, port })
    const ch = new Channel(socket)
    this.channel = ch
    const attempt: Attempt = { secured: false, heard: false }
    const timer = setTimeout(() => socket.destroy(), this.opts.connectTimeout)
    socket.once(this.tlsOptions ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer)
      attempt.secured = true
      ch.send({
        type: 'HELLO',
        epoch: this.opts.epoch(),
        version: PROTOCOL_VERSION,
        frontId: this.opts.frontId,
        window: this.opts.window,
        protocol: this.opts.protocol,
        resume: [...this.received].map(([conn, offset]) => ({ conn, offset })),
      })
    })
    ch.on('frame', (f) => {
      attempt.heard = true
      this.onFrame(ch, f)
    })
    ch.on('error', (err) => {
      attempt.error ??= err
      const code = (err as NodeJS.ErrnoException).code
      this.opts.log.debug('channel_error', { error: err.message, code })
    })
    ch.on('close', () => {
      clearTimeout(timer)
      if (this.channel !== ch) return
      if (this.live) this.opts.log.warn('channel_down', {})
      this.live = false
      this.asking = false // lost with the channel: asked again on the next one
      this.channel = null
      if (socket instanceof tls.TLSSocket) this.checkTls(socket, attempt)
      if (!this.stopped) this.reconnectTimer = setTimeout(() => this.connect(), RECONNECT_MS)
    })
  }

  // A certain refusal fails the replica at once; a silent close after the handshake only when
  // it repeats (an agent that is closing drops a channel that way too).
  private checkTls (socket: tls.TLSSocket, attempt: Attempt): void {
    const r = tlsRefusal(socket, attempt)
    if (!r) {
      this.silentCloses = 0
      return
    }
    if (!r.certain && ++this.silentCloses < SILENT_CLOSES) return
    const message = refusalMessage(r)
    const details = { refused_by: r.by, tls_code: r.code }
    if (!this.failedOnce && !this.stopped) {
      this.opts.log.error('channel_tls_refused', {
        ...details, code: 'ERR_FTPROXY_TLS', error: message,
      })
    }
    this.fail(new FtproxyError('ERR_FTPROXY_TLS', message, details))
  }

  private onFrame (ch: Channel, f: Frame): void {
    this.lastHeard = performance.now()
    switch (f.type) {
      case 'WELCOME': return this.onWelcome(ch, f)
      case 'ACK': return this.ack(f.seq)
      case 'OUT': return this.onOut(ch, f)
      case 'OUT_EOF': {
        if (!this.received.has(f.conn) || this.ended.has(f.conn)) return
        this.ended.add(f.conn)
        const err = f.reset
          ? Object.assign(new Error('server reset the connection'), { code: 'ECONNRESET' })
          : null
        this.emit('output_end', f.conn, err)
        return
      }
      case 'OUT_CLOSE': return this.onOutClose(ch, f.conn)
      case 'HEARTBEAT': return
      case 'SYNCED': {
        if (f.seq > this.sent) return this.protocolError(ch, `SYNCED ${f.seq} past ${this.sent}`)
        this.asking = false
        this.ran = Math.max(this.ran, f.seq)
        return
      }
      case 'ERROR': {
        const code = AGENT_CODES.find((c) => c === f.code) ?? 'ERR_FTPROXY_PROTOCOL'
        this.opts.log.warn('agent_error', { code: f.code, error: f.message })
        this.fail(new FtproxyError(code, `${f.code}: ${f.message}`, { agent_code: f.code }))
        return
      }
      default: return this.protocolError(ch, `unexpected ${f.type}`)
    }
  }

  private onWelcome (ch: Channel, f: WelcomeFrame): void {
    if (this.live) return this.protocolError(ch, 'second WELCOME')
    if (f.version !== PROTOCOL_VERSION) {
      return this.protocolError(ch, `WELCOME of version ${f.version}`)
    }
    this.incarnation = f.incarnation === '' ? null : f.incarnation
    this.emit('incarnation', this.incarnation)
    // A listener may have closed this transport (or the channel dropped meanwhile).
    if (this.stopped || this.channel !== ch || ch.closed) return
    // Entries the agent wrote before the channel dropped, whose ACKs were lost with it.
    const acked = new Map(f.acks.map((a) => [a.conn, a.seq]))
    for (const e of [...this.held.values()]) {
      const upTo = acked.get(e.conn)
      if (upTo !== undefined && e.seq <= upTo) this.ack(e.seq)
    }
    this.live = true
    const resend = [...this.held.keys()].filter((s) => s > f.applied).length
    this.opts.log.info('channel_up', { applied: f.applied, resend, incarnation: this.incarnation })
    for (const e of this.held.values()) if (e.seq > f.applied) this.sendEntry(e)
  }

  private onOut (ch: Channel, f: OutFrame): void {
    const have = this.received.get(f.conn)
    if (have === undefined || this.ended.has(f.conn)) return // closed already: a replay
    if (f.offset > have) {
      return this.protocolError(ch, `output gap on conn ${f.conn}: ${f.offset} > ${have}`)
    }
    if (f.offset + f.data.length <= have) return // resent after a reconnect: already here
    const data = f.data.subarray(have - f.offset)
    this.received.set(f.conn, have + data.length)
    if (!this.paused.has(f.conn)) this.owe(f.conn)
    this.emit('output', f.conn, data)
  }

  private onOutClose (ch: Channel, conn: number): void {
    const offset = this.received.get(conn)
    if (offset === undefined) return
    // The last credit, paused or not: the agent forgets the connection on it.
    ch.send({ type: 'OUT_ACK', epoch: this.opts.epoch(), conn, offset })
    this.received.delete(conn)
    this.ended.delete(conn)
    this.paused.delete(conn)
    this.owed.delete(conn)
    this.emit('closed', conn)
  }

  private ack (seq: number): void {
    const e = this.held.get(seq)
    if (!e) return
    this.held.delete(seq)
    this.emit('ack', e)
  }

  private sendEntry (e: Entry): void {
    const epoch = this.opts.epoch()
    // Called only while live, that is with a channel.
    const ch = this.channel as Channel
    const { seq, conn } = e
    // A DATA entry always carries its data (see InputLog.append).
    if (e.type === 'DATA') ch.send({ type: 'DATA', epoch, seq, conn, data: e.data as Buffer })
    else ch.send({ type: e.type, epoch, seq, conn })
  }

  // Credit the agent for output taken, once per turn per connection.
  private owe (conn: number): void {
    this.owed.add(conn)
    if (this.creditScheduled) return
    this.creditScheduled = true
    setImmediate(() => {
      this.creditScheduled = false
      const epoch = this.opts.epoch()
      for (const conn of this.owed) {
        const offset = this.received.get(conn)
        if (offset === undefined || !this.live) continue
        this.channel?.send({ type: 'OUT_ACK', epoch, conn, offset })
      }
      this.owed.clear()
    })
  }

  private tick (): void {
    if (this.stopped) return
    const now = performance.now()
    // This process stalled (GC, a blocking call): frames may be waiting unread in the socket,
    // so the silence proves nothing yet; look again next tick.
    if (now - this.lastTick > 2 * this.period) {
      this.lastHeard = Math.max(this.lastHeard, now - this.period)
    }
    this.lastTick = now
    if (now - this.lastHeard > this.opts.heartbeat) {
      const message = `nothing heard from the agent for ${this.opts.heartbeat}ms`
      return this.fail(new FtproxyError('ERR_FTPROXY_HEARTBEAT', message))
    }
    if (this.live) this.channel?.send({ type: 'HEARTBEAT', epoch: this.opts.epoch() })
  }

  private protocolError (ch: Channel, what: string): void {
    this.opts.log.warn('channel_protocol_error', { error: what })
    ch.destroy()
  }

  private fail (err: Error): void {
    if (this.failedOnce || this.stopped) return
    this.failedOnce = true
    this.emit('failed', err)
  }
}
