// Health of one server: a TCP connect every `interval`, down after `fall` failures in a row,
// up after `rise` successes (HAProxy's check semantics). probeNow() is the fast path: an app
// socket was reset, or an output end needs confirming; a refused connect then is final.
// A probe the front could not make for want of its own descriptors, buffers, memory or local
// ports (isLocalResourceError) says nothing about the server: it is neither a success nor a
// failure, and is reported once per burst ('local_error').

import { EventEmitter } from 'node:events'
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import type { HostPort } from './address.js'
import { isLocalResourceError } from './util/fds.js'
import { runningTimeout } from './util/timer.js'

export type Health = 'unknown' | 'up' | 'down'

export interface HealthOptions {
  address: HostPort
  interval: number
  timeout: number
  fall: number
  rise: number
}

/** One TCP connect: resolves null on success, or the error. */
function probe (address: HostPort, timeout: number): Promise<Error | null> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: address.host, port: address.port })
    const timer = runningTimeout(timeout, () => {
      socket.destroy()
      const err = new Error(`health check timed out after ${timeout}ms`)
      resolve(Object.assign(err, { code: 'ETIMEDOUT' }))
    })
    socket.once('connect', () => {
      timer.clear()
      socket.destroy()
      resolve(null)
    })
    socket.once('error', (err) => {
      timer.clear()
      resolve(err)
    })
  })
}

export interface WaitOptions {
  /** Timeout of each probe (ms). */
  probeTimeout: number
  /** A performance.now() time: a probe that fails after it ends the wait. */
  deadline: number
  /** Pause between probes (ms). @default 50 */
  every?: number
}

/**
 * Probes until one connects (null) or the deadline passes (the last probe's error): the
 * startup wait for a server that may still be starting. At least one probe is made.
 */
export async function waitReachable (address: HostPort, opts: WaitOptions): Promise<Error | null> {
  for (;;) {
    const err = await probe(address, opts.probeTimeout)
    if (err === null || performance.now() >= opts.deadline) return err
    await new Promise((resolve) => setTimeout(resolve, opts.every ?? 50))
  }
}

/** One probe within `timeout` ms: null on success, or why not. */
export type Prober = (timeout: number) => Promise<Error | null>

interface HealthEvents {
  up: []
  down: [reason: string]
  /** A probe failed for want of the front's own resources: the first of a burst (ignored). */
  local_error: [err: Error]
}

export class HealthCheck extends EventEmitter<HealthEvents> {
  state: Health = 'unknown'
  /**
   * How probes are made while the server is driven: through ftproxy's control connection to
   * it, so checks open no connections of their own. Null: a TCP connect per probe.
   */
  prober: Prober | null = null
  private fails = 0
  private oks = 0
  /** Bumped by reset(): probes started before it do not count. */
  private generation = 0
  /** In a burst of probes that failed for want of local resources (reported at its start). */
  private starved = false
  private timer?: NodeJS.Timeout
  private running = false
  private batch?: Promise<boolean | null>

  constructor (private opts: HealthOptions) {
    super()
  }

  start (): void {
    if (this.timer) return
    this.timer = setInterval(() => { void this.check() }, this.opts.interval)
    this.timer.unref()
  }

  stop (): void {
    clearInterval(this.timer)
    this.timer = undefined
  }

  /**
   * Forget what the checks said: the next one decides (a replica that just failed may read
   * 'up' from before its failure; a re-seed must wait for a check made after it).
   */
  reset (): void {
    this.state = 'unknown'
    this.oks = 0
    this.fails = 0
    this.generation++ // a probe in flight answers for before
  }

  /** Timeout of one probe (ms). */
  get timeout (): number {
    return this.opts.timeout
  }

  /** New timings (SIGHUP); the address stays. The timer restarts only for a new interval. */
  retime (opts: Omit<HealthOptions, 'address'>): void {
    const restart = opts.interval !== this.opts.interval
    this.opts = { ...opts, address: this.opts.address }
    if (this.timer && restart) { this.stop(); this.start() }
  }

  /**
   * Probe at once; a refused connect marks the server down without waiting for `fall`. Callers in
   * the same turn of the event loop share one probe, which starts after all of them asked.
   * Resolves true (it answered), false (it did not) or null (the front could not probe: its
   * own resources ran out; nothing is marked).
   */
  probeNow (): Promise<boolean | null> {
    this.batch ??= new Promise((resolve) => setImmediate(() => {
      this.batch = undefined
      const gen = this.generation
      void this.probeOnce().then((err) => {
        if (this.inconclusive(err) || gen !== this.generation) return resolve(null)
        // Refused or reset: nothing listens, final. A timeout may be a busy server: it counts
        // towards `fall` like any failed check.
        const code = (err as NodeJS.ErrnoException | null)?.code
        if (err) {
          const final = code === 'ECONNREFUSED' || code === 'ECONNRESET'
          this.mark(false, `probe: ${code ?? err.message}`, final)
        } else {
          this.mark(true, '', false)
        }
        resolve(err === null)
      })
    }))
    return this.batch
  }

  private async check (): Promise<void> {
    if (this.running) return
    this.running = true
    const gen = this.generation
    const err = await this.probeOnce()
    this.running = false
    if (this.timer === undefined || this.inconclusive(err) || gen !== this.generation) return
    const reason = err ? `health check: ${(err as NodeJS.ErrnoException).code ?? err.message}` : ''
    this.mark(err === null, reason, false)
  }

  private probeOnce (): Promise<Error | null> {
    const { address, timeout } = this.opts
    return this.prober ? this.prober(timeout) : probe(address, timeout)
  }

  // A probe that failed for want of the front's own resources proves nothing either way;
  // neither does one a busy server has not answered yet (see Control.probe).
  private inconclusive (err: Error | null): boolean {
    if ((err as NodeJS.ErrnoException | null)?.code === 'ERR_FTPROXY_BUSY') return true
    if (err === null || !isLocalResourceError(err)) {
      this.starved = false
      return false
    }
    if (!this.starved) {
      this.starved = true
      this.emit('local_error', err)
    }
    return true
  }

  private mark (ok: boolean, reason: string, now: boolean): void {
    if (ok) {
      this.fails = 0
      this.oks++
      if (this.state !== 'up' && (this.state === 'unknown' || this.oks >= this.opts.rise)) {
        this.state = 'up'
        this.emit('up')
      }
    } else {
      this.oks = 0
      this.fails++
      if (this.state !== 'down' && (now || this.fails >= this.opts.fall)) {
        this.state = 'down'
        this.emit('down', reason)
      }
    }
  }
}

/** Gap between the two probes that confirm an output end came from a live server. */
const END_CONFIRM_MS = 25

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Whether a server that ended a connection is still alive. A killed server's sockets close a
 * moment before its listener does, so one probe that connects proves little: ask again once
 * any process teardown would be over. Only a refused connect (the check is then down) counts
 * as dead: a probe that times out is a busy server, whose end is its own. `still` says
 * whether the answer still matters.
 */
export async function aliveAfterEnd (
  check: HealthCheck,
  still: () => boolean = () => true
): Promise<boolean> {
  await probeConclusively(check, still)
  if (check.state === 'down' || !still()) return false
  await pause(END_CONFIRM_MS)
  if (!still()) return false
  await probeConclusively(check, still)
  return (check.state as Health) !== 'down'
}

// A probe the front could not make (out of its own descriptors) is asked again, for at most
// one probe timeout; still none: the state stands, as after a probe that timed out.
async function probeConclusively (check: HealthCheck, still: () => boolean): Promise<void> {
  const deadline = performance.now() + check.timeout
  while (await check.probeNow() === null && still() && performance.now() < deadline) {
    await pause(END_CONFIRM_MS)
  }
}

/**
 * Probes that open no connection while the server is up: one connection is kept open, and a
 * probe only checks that the server has not closed it. A probe connects again only after
 * the server closed it (it died or restarted: a new incarnation anyway). For an agent before
 * the front's first session (the applier's control connection takes over then), so that its
 * checks do not make its server's connection ids differ from another copy's.
 */
export class Watch {
  private socket: net.Socket | null = null
  private closed = false

  constructor (private readonly address: HostPort) {}

  readonly probe: Prober = (timeout) => {
    if (this.socket !== null && !this.socket.destroyed) return Promise.resolve(null)
    return new Promise((resolve) => {
      const { host, port } = this.address
      const socket = net.connect({ host, port })
      const timer = runningTimeout(timeout, () => {
        socket.destroy()
        resolve(Object.assign(new Error(`health check timed out after ${timeout}ms`),
          { code: 'ETIMEDOUT' }))
      })
      socket.once('error', (err) => {
        timer.clear()
        resolve(err)
      })
      socket.once('connect', () => {
        timer.clear()
        socket.removeAllListeners('error')
        socket.on('error', () => {}) // 'close' follows; the next probe connects again
        socket.on('data', () => {}) // nothing is expected; read whatever comes
        if (this.closed) socket.destroy()
        else this.socket = socket
        resolve(null)
      })
    })
  }

  close (): void {
    this.closed = true
    this.socket?.destroy()
  }
}
