// The admin endpoint: a small HTTP server beside the front, for operators and scrapers.
//
//   GET  /status   → front.status() as JSON
//   GET  /metrics  → Prometheus text (a registry of its own; values read at scrape time)
//   POST /failover → front.switchover(to), 200 | 409 (no backup in sync)
//   POST /reseed   → front.reseed(replica), 200 once it joined | 409 (refused or failed)
//
// It never touches the data path: every metric is computed from front.status() and
// front.counters when scraped (the turn-wait histogram too, from the front's own buckets),
// except the failover and commit-wait histograms, fed by the front's events.

import http from 'node:http'
import type net from 'node:net'
import { createHash, timingSafeEqual } from 'node:crypto'
import {
  Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric,
} from 'prom-client'
import { formatHostPort, type HostPort } from './address.js'
import type { Logger } from './logger.js'
import type {
  FailoverInfo, Front, FrontCounters, FrontStatus, ReplicaStatus, Role,
} from './front/front.js'
import { TURN_WAIT_BOUNDS_MS } from './front/counters.js'
import { listen } from './util/listen.js'

export interface AdminOptions {
  listen: HostPort
  /** When set, every request needs `Authorization: Bearer <token>`. */
  token?: string
  log: Logger
  /** Overrides of ADMIN_LIMITS (tests use short ones). */
  limits?: Partial<AdminLimits>
}

/** Durations in milliseconds. */
interface AdminLimits {
  /** Connections open at once; one more is closed as soon as it is accepted, and counted. */
  maxConnections: number
  /** A connection with no request under way (new, or kept alive after one) is closed. */
  idleTimeout: number
  /** A request's headers must have arrived this long after its first byte. */
  headersTimeout: number
  /** A whole request, body included, must have arrived this long after its first byte. */
  requestTimeout: number
}

// Unauthenticated clients can open connections: each costs the front a descriptor, so they are
// few and short-lived, like HAProxy's `timeout http-request` and `http-keep-alive`. Scrapers
// and the CLI send a request at once and are done in milliseconds.
const ADMIN_LIMITS: Readonly<AdminLimits> = Object.freeze({
  maxConnections: 64,
  idleTimeout: 5000,
  headersTimeout: 5000,
  requestTimeout: 10000,
})

/** At most one admin_connections_full line per this long, however many are refused. */
const FULL_LOG_INTERVAL = 10000

/** Largest accepted request body (POST /failover takes `{"to": "b"}`). */
const MAX_BODY = 4 * 1024

const ROLES: Role[] = ['primary', 'backup', 'stale', 'down']

/** An error answered as `{ "error": message }` (plus `code` when there is one). */
class HttpError extends Error {
  constructor (
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
    readonly code?: string
  ) {
    super(message)
  }
}

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => Promise<void>

interface Route {
  methods: string[]
  handle: Handler
}

export class Admin {
  readonly registry = new Registry()
  private readonly front: Front
  private readonly opts: AdminOptions
  private readonly log: Logger
  private readonly tokenDigest?: Buffer
  private readonly routes: Map<string, Route>
  private readonly failoverSeconds: Histogram
  private readonly commitWait: Histogram
  private readonly onFailover = (info: FailoverInfo): void => {
    // Planned switchovers have their own counter; the histogram is for unplanned outages.
    if (info.reason !== 'switchover') this.failoverSeconds.observe(info.duration_ms / 1000)
  }

  private server?: http.Server
  private bound?: HostPort
  /** Connections closed at accept because maxConnections were open. */
  private refused = 0
  private fullLoggedAt = -Infinity
  /** front.status() taken once per scrape, shared by every collector. */
  private scrape?: FrontStatus

  constructor (front: Front, opts: AdminOptions) {
    this.front = front
    this.opts = opts
    this.log = opts.log
    // Digests have equal length whatever the token's, so the compare leaks neither.
    if (opts.token !== undefined) this.tokenDigest = digest(opts.token)
    this.routes = new Map<string, Route>([
      ['/status', { methods: ['GET', 'HEAD'], handle: (req, res) => this.getStatus(req, res) }],
      ['/metrics', { methods: ['GET', 'HEAD'], handle: (req, res) => this.getMetrics(req, res) }],
      ['/failover', {
        methods: ['POST'],
        handle: (req, res, url) => this.postFailover(req, res, url),
      }],
      ['/reseed', {
        methods: ['POST'],
        handle: (req, res, url) => this.postReseed(req, res, url),
      }],
    ])
    this.failoverSeconds = this.defineMetrics()
    this.commitWait = new Histogram({
      name: 'ftproxy_commit_wait_seconds',
      help: 'How long primary output waited for the output-commit rule before its release.',
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [this.registry],
    })
  }

  /** The bound address (after start). */
  get address (): HostPort {
    if (!this.bound) throw new Error('admin not started')
    return this.bound
  }

  async start (): Promise<HostPort> {
    const server = this.createServer({ ...ADMIN_LIMITS, ...this.opts.limits })
    this.server = server
    await listen(server, { port: this.opts.listen.port, host: this.opts.listen.host })
    server.on('error', (err) => this.log.error('admin_error', { error: err.message }))
    const a = server.address() as net.AddressInfo
    this.bound = { host: a.address, port: a.port }
    this.front.on('failover', this.onFailover)
    this.front.onCommitWait = (s) => this.commitWait.observe(s)
    this.log.info('admin_listening', { address: formatHostPort(this.bound) })
    return this.bound
  }

  private createServer (limits: AdminLimits): http.Server {
    const server = http.createServer({
      headersTimeout: limits.headersTimeout,
      requestTimeout: limits.requestTimeout,
      // Node checks those two only this often (30 s by default): a slow client would get
      // up to 30 s more.
      connectionsCheckingInterval: Math.min(1000, Math.ceil(limits.headersTimeout / 4)),
    }, (req, res) => {
      // Handling may take a while (a switchover): only the client's silence is timed. Node
      // sets keepAliveTimeout again once the response is sent.
      req.socket.setTimeout(0)
      void this.onRequest(req, res)
    })
    server.keepAliveTimeout = limits.idleTimeout
    server.maxConnections = limits.maxConnections
    // Before its first byte, a connection has no header timer: without this one, a client
    // that connects and says nothing holds a descriptor forever. Node closes it on timeout.
    server.on('connection', (socket: net.Socket) => socket.setTimeout(limits.idleTimeout))
    server.on('drop', () => this.onDrop(limits.maxConnections))
    return server
  }

  // Node has closed the connection already; count it, and say so without flooding the log.
  private onDrop (max: number): void {
    this.refused++
    const now = Date.now()
    if (now - this.fullLoggedAt < FULL_LOG_INTERVAL) return
    this.fullLoggedAt = now
    this.log.warn('admin_connections_full', { max_connections: max, refused: this.refused })
  }

  async close (): Promise<void> {
    this.front.off('failover', this.onFailover)
    this.front.onCommitWait = undefined
    const server = this.server
    if (!server) return
    this.server = undefined
    await new Promise<void>((resolve) => {
      server.close(() => resolve())
      // Keep-alive sockets of scrapers would hold close() open until they time out.
      server.closeAllConnections()
    })
  }

  private async onRequest (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const method = req.method ?? 'GET'
    let path = req.url ?? '/'
    try {
      const url = parseUrl(req.url ?? '/')
      path = url.pathname
      this.authorize(req)
      const route = this.routes.get(path)
      if (!route) throw new HttpError(404, `no such endpoint: ${path}`)
      if (!route.methods.includes(method)) {
        const allow = route.methods.join(', ')
        throw new HttpError(405, `${method} is not allowed on ${path}`, { allow })
      }
      await route.handle(req, res, url)
    } catch (err) {
      this.refuse(req, res, { method, path }, err)
    }
  }

  private refuse (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    at: { method: string, path: string },
    err: unknown
  ): void {
    const e = err instanceof HttpError
      ? err
      : new HttpError(500, (err as Error).message, {}, (err as { code?: string }).code)
    const fields = { ...at, status: e.status, error: e.message, code: e.code }
    if (e.status >= 500) this.log.warn('admin_error', fields)
    else this.log.debug('admin_refused', { ...fields, remote: req.socket.remoteAddress })
    // An unread body (401, 413 …) would otherwise be parsed as the next request.
    if (!req.complete) res.setHeader('connection', 'close')
    const body = e.code !== undefined ? { error: e.message, code: e.code } : { error: e.message }
    sendJson(res, e.status, body, e.headers)
  }

  private authorize (req: http.IncomingMessage): void {
    if (this.tokenDigest === undefined) return
    const m = /^Bearer +(\S+) *$/i.exec(req.headers.authorization ?? '')
    const token = m?.[1]
    if (token === undefined || !timingSafeEqual(digest(token), this.tokenDigest)) {
      const message = token === undefined ? 'a bearer token is required' : 'invalid bearer token'
      throw new HttpError(401, message, { 'www-authenticate': 'Bearer' })
    }
  }

  private async getStatus (_req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    sendJson(res, 200, this.front.status())
  }

  private async getMetrics (_req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    this.scrape = this.front.status()
    let text: string
    try {
      text = await this.registry.metrics()
    } finally {
      this.scrape = undefined
    }
    res.writeHead(200, { 'content-type': this.registry.contentType, 'cache-control': 'no-store' })
    res.end(text)
  }

  private async postFailover (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    url: URL
  ): Promise<void> {
    const to = named(url, await readBody(req), 'to')
    this.log.info('admin_failover', { to: to ?? null, remote: req.socket.remoteAddress })
    let info: FailoverInfo
    try {
      info = await this.front.switchover(to)
    } catch (err) {
      const code = (err as { code?: string }).code
      if (code === 'ERR_FTPROXY_NOT_IN_SYNC') {
        throw new HttpError(409, (err as Error).message, {}, code)
      }
      throw err
    }
    // docs/design.md's contract: 200 with the new status; the switchover itself rides along.
    sendJson(res, 200, { ...this.front.status(), switchover: info })
  }

  private async postReseed (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    url: URL
  ): Promise<void> {
    const replica = named(url, await readBody(req), 'replica')
    if (replica === undefined) {
      throw new HttpError(400, '"replica" is required, e.g. {"replica": "b"}')
    }
    this.log.info('admin_reseed', { replica, remote: req.socket.remoteAddress })
    try {
      await this.front.reseed(replica)
    } catch (err) {
      const code = (err as { code?: string }).code
      if (code === 'ERR_FTPROXY_RESEED_REFUSED' || code === 'ERR_FTPROXY_RESEED_FAILED') {
        throw new HttpError(409, (err as Error).message, {}, code)
      }
      throw err
    }
    sendJson(res, 200, this.front.status())
  }

  // Every value is read from the front when scraped: nothing is counted twice or on the data
  // path. Returns the failover histogram, fed by the 'failover' event.
  private defineMetrics (): Histogram {
    collectDefaultMetrics({ register: this.registry })
    this.defineTrafficMetrics()
    this.defineReplicaMetrics()
    this.defineStateMetrics()
    return new Histogram({
      name: 'ftproxy_failover_duration_seconds',
      help: 'Unplanned failovers, from the primary\'s failure detected to service resumed.',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [this.registry],
    })
  }

  private defineTrafficMetrics (): void {
    const front = this.front
    this.gauge('ftproxy_connections', 'Client connections open now.',
      () => this.status().connections)
    this.total('ftproxy_connections_total', 'Client connections accepted.', 'connections_total')
    this.total('ftproxy_connections_rejected_total',
      'Client connections refused (limits.max_connections, not serving).', 'connections_rejected')
    this.registry.registerMetric(new Counter({
      name: 'ftproxy_bytes_total',
      help: 'Client bytes: in = from clients (logged), out = released to clients.',
      labelNames: ['direction'],
      registers: [],
      collect () {
        this.reset()
        this.inc({ direction: 'in' }, front.counters.bytes_in)
        this.inc({ direction: 'out' }, front.counters.bytes_out)
      },
    }))
    this.total('ftproxy_log_entries_total', 'Entries appended to the input log.', 'log_entries')
    this.gauge('ftproxy_log_entries',
      'Entries held in the input log (not yet acknowledged by every serving replica).',
      () => this.status().log_entries)
    this.gauge('ftproxy_log_bytes', 'Bytes held in the input log.', () => this.status().log_bytes)
  }

  private defineReplicaMetrics (): void {
    const status = (): FrontStatus => this.status()
    this.perReplica('ftproxy_replica_up', '1 when the replica\'s health is up.',
      (r) => r.health === 'up' ? 1 : 0)
    this.registry.registerMetric(new Gauge({
      name: 'ftproxy_replica_role',
      help: '1 for the replica\'s current role, 0 for the others.',
      labelNames: ['replica', 'role'],
      registers: [],
      collect () {
        this.reset()
        for (const r of status().replicas) {
          for (const role of ROLES) this.set({ replica: r.name, role }, r.role === role ? 1 : 0)
        }
      },
    }))
    this.perReplica('ftproxy_replica_lag_entries',
      'Log entries handed to the replica and not yet acknowledged.', (r) => r.lag_entries)
    this.perReplica('ftproxy_replica_lag_bytes',
      'Client bytes logged and not yet acknowledged by the replica.', (r) => r.lag_bytes)
  }

  private defineStateMetrics (): void {
    this.gauge('ftproxy_output_held_bytes', 'Primary output held back by the output-commit rule.',
      () => this.status().output_held_bytes)
    this.gauge('ftproxy_protected', '1 when at least one backup is in service.',
      () => this.status().protected ? 1 : 0)
    this.gauge('ftproxy_serving', '1 while the front serves clients.',
      () => this.status().serving ? 1 : 0)
    this.gauge('ftproxy_epoch', 'Current epoch (moves on every failover and switchover).',
      () => this.status().epoch)
    this.total('ftproxy_failovers_total', 'Unplanned failovers (primary lost).', 'failovers')
    this.total('ftproxy_switchovers_total', 'Planned switchovers.', 'switchovers')
    this.total('ftproxy_divergences_total', 'Replica outputs that differed from the primary\'s.',
      'divergences')
    this.total('ftproxy_reseeds_total', 'Re-seeds that brought a replica back as a backup.',
      'reseeds')
    this.total('ftproxy_reseed_failures_total', 'Re-seeds that failed (the replica stayed stale).',
      'reseed_failures')
    this.total('ftproxy_reseed_closed_connections_total',
      'Client connections closed at a re-seed\'s cut (policy close, or a session not carried).',
      'reseed_closed')
    this.total('ftproxy_turns_total',
      'Turns (one connection\'s complete requests) answered by replicas driven directly.', 'turns')
    this.turnWait()
    this.total('ftproxy_uncompared_replies_total',
      'Backup replies dropped, not compared: they differ between correct copies (KEYS, TIME, ...).',
      'uncompared_replies')
    const refused = (): number => this.refused
    this.registry.registerMetric(new Counter({
      name: 'ftproxy_admin_connections_refused_total',
      help: 'Admin connections closed at once because the admin endpoint had its maximum open.',
      registers: [],
      collect () { this.reset(); this.inc(refused()) },
    }))
  }

  /** The status this scrape reads (one front.status() per scrape). */
  private status (): FrontStatus {
    return this.scrape ?? this.front.status()
  }

  // A Counter whose value is the front's own running total, set at scrape time.
  private total (name: string, help: string, key: TotalKey): void {
    const front = this.front
    this.registry.registerMetric(new Counter({
      name, help, registers: [], collect () { this.reset(); this.inc(front.counters[key]) },
    }))
  }

  // prom-client's Histogram cannot be set, and the front keeps its own buckets (counted on the
  // data path without prom-client): this reports them when scraped, in the shape
  // Histogram.get() has (cumulative le buckets, +Inf, _sum, _count), so the text is the same.
  private turnWait (): void {
    const name = 'ftproxy_turn_wait_seconds'
    const help = 'How long a turn waited for the replies it owed, on replicas driven directly.'
    const bounds = TURN_WAIT_BOUNDS_MS.map((ms) => Number((ms / 1000).toPrecision(12)))
    const counters = this.front.counters
    const metric = {
      name,
      help,
      type: 'histogram',
      aggregator: 'sum',
      reset () {}, // the front's counters are never reset
      async get () {
        const counts = counters.turn_wait_buckets
        const bucket = `${name}_bucket`
        let n = 0
        const values: Sample[] = bounds.map((le, i) =>
          ({ labels: { le }, value: (n += counts[i] ?? 0), metricName: bucket }))
        n += counts[bounds.length] ?? 0
        values.push({ labels: { le: '+Inf' }, value: n, metricName: bucket },
          { labels: {}, value: counters.turn_wait_ms / 1000, metricName: `${name}_sum` },
          { labels: {}, value: n, metricName: `${name}_count` })
        return { name, help, type: metric.type, aggregator: metric.aggregator, values }
      },
    }
    // Not one of prom-client's classes: the registry reads only get(), and reset() when reset.
    this.registry.registerMetric(metric as unknown as Metric)
  }

  private gauge (name: string, help: string, value: () => number): void {
    this.registry.registerMetric(new Gauge({
      name, help, registers: [], collect () { this.set(value()) },
    }))
  }

  private perReplica (name: string, help: string, value: (r: ReplicaStatus) => number): void {
    const status = (): FrontStatus => this.status()
    this.registry.registerMetric(new Gauge({
      name,
      help,
      labelNames: ['replica'],
      registers: [],
      collect () {
        this.reset()
        for (const r of status().replicas) this.set({ replica: r.name }, value(r))
      },
    }))
  }
}

/** One line of a metric's text, as prom-client's get() gives it. */
interface Sample { labels: Record<string, number | string>, value: number, metricName: string }

/** The counters that are plain running totals (turn_wait_buckets is not one). */
type TotalKey = {
  [K in keyof FrontCounters]: FrontCounters[K] extends number ? K : never
}[keyof FrontCounters]

function parseUrl (raw: string): URL {
  try {
    return new URL(raw, 'http://admin.invalid')
  } catch {
    throw new HttpError(400, 'malformed request URL')
  }
}

/**
 * The replica a POST names, if any: POST /failover `to`, POST /reseed `replica`, in the
 * query or in a JSON body (`{"to": "b"}`).
 */
function named (url: URL, body: string, field: string): string | undefined {
  const query = url.searchParams.get(field) ?? undefined
  const to = body.trim() !== '' ? bodyTarget(body, query, field) : query
  if (to === '') throw new HttpError(400, `"${field}" must be a replica name`)
  return to
}

function bodyTarget (body: string, query: string | undefined, field: string): string | undefined {
  let parsed: unknown
  try {
    parsed = JSON.parse(body)
  } catch (err) {
    throw new HttpError(400, `malformed JSON body: ${(err as Error).message}`)
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new HttpError(400, `the body must be a JSON object, e.g. {"${field}": "b"}`)
  }
  const { [field]: to, ...rest } = parsed as Record<string, unknown>
  const unknown = Object.keys(rest)
  if (unknown.length > 0) {
    throw new HttpError(400, `unknown field(s) in body: ${unknown.join(', ')}`)
  }
  if (to === undefined || to === null) return query
  if (typeof to !== 'string' || to === '') {
    throw new HttpError(400, `"${field}" must be a replica name`)
  }
  if (query !== undefined && query !== to) {
    const message = `"${field}" is ${JSON.stringify(to)} in the body but ` +
      `${JSON.stringify(query)} ` +
      'in the query'
    throw new HttpError(400, message)
  }
  return to
}

function digest (s: string): Buffer {
  return createHash('sha256').update(s).digest()
}

function sendJson (
  res: http.ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {}
): void {
  const text = JSON.stringify(body) + '\n'
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  })
  res.end(text)
}

/** The request body as text, refused with 413 past MAX_BODY (before reading it when it says so). */
function readBody (req: http.IncomingMessage): Promise<string> {
  const tooLarge = (): HttpError => new HttpError(413, `the body is larger than ${MAX_BODY} bytes`)
  if (Number(req.headers['content-length'] ?? 0) > MAX_BODY) return Promise.reject(tooLarge())
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    // Not `for await`: leaving it early destroys the socket before the 413 is written.
    const onData = (chunk: Buffer): void => {
      size += chunk.length
      if (size <= MAX_BODY) {
        chunks.push(chunk)
        return
      }
      req.off('data', onData)
      req.off('end', onEnd)
      reject(tooLarge())
    }
    const onEnd = (): void => resolve(Buffer.concat(chunks).toString('utf8'))
    req.on('data', onData)
    req.once('end', onEnd)
    req.once('error', reject)
  })
}
