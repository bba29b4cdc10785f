// The admin endpoint over real sockets: status and metrics reflect a failover, the token is
// enforced, a planned switchover via POST /failover loses nothing under pipelined load, and
// every bad request gets a 4xx with a JSON error.

import t from 'tap'
import type { Test } from 'tap'
import net from 'node:net'
import { Admin } from '../lib/admin.js'
import { formatHostPort } from '../lib/address.js'
import { FtproxyError } from '../lib/errors.js'
import type { Front } from '../lib/front/front.js'
import { TURN_WAIT_BOUNDS_MS, newCounters } from '../lib/front/counters.js'
import { createLogger, nullLogger } from '../lib/logger.js'
import { Client, demoPair, driveIncr, expectCounts, type TestFront } from './helpers/cluster.js'
import { EventLog, type Event } from './helpers/events.js'
import { until } from './helpers/until.js'

interface Started { admin: Admin, base: string, events: Event[] }

// A logger destination whose JSON lines are collected as events.
function eventLog (): { events: Event[], stream: NodeJS.WritableStream } {
  const log = new EventLog()
  return { events: log.events, stream: log.stream() }
}

const LISTEN = { host: '127.0.0.1', port: 0 }

async function startAdmin (tt: Test, f: TestFront, token?: string): Promise<Started> {
  const { events, stream } = eventLog()
  const admin = new Admin(f.front,
    { listen: LISTEN, token, log: createLogger({ level: 'debug', stream }) })
  tt.teardown(() => admin.close())
  const address = await admin.start()
  tt.same(admin.address, address)
  return { admin, base: `http://${formatHostPort(address)}`, events }
}

async function json (res: Response): Promise<Record<string, any>> {
  return await res.json() as Record<string, any>
}

/** The value of one sample line, e.g. metric(text, 'ftproxy_replica_up{replica="a"}'). */
function metric (text: string, sample: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(sample + ' '))
  return line === undefined ? undefined : Number(line.slice(sample.length + 1))
}

t.test('GET /status has the contract keys and reflects the roles', async (tt) => {
  const { f } = await demoPair(tt)
  const { base, events } = await startAdmin(tt, f)
  const address = base.slice('http://'.length)
  tt.ok(events.find((e) => e.event === 'admin_listening' && e.address === address),
    'admin_listening {address}')
  const res = await fetch(`${base}/status`)
  tt.equal(res.status, 200)
  tt.match(res.headers.get('content-type'), /^application\/json/)
  const st = await json(res)
  const keys = ['epoch', 'primary', 'protected', 'protected_since', 'serving', 'replicas',
    'connections', 'log_entries', 'log_bytes', 'output_held_bytes', 'last_failover', 'protocol']
  for (const k of keys) tt.ok(k in st, `has ${k}`)
  tt.match(st,
    {
      epoch: 1,
      primary: 'a',
      protected: true,
      serving: true,
      connections: 0,
      last_failover: null,
      protocol: 'raw',
    })
  tt.match(st.replicas, [
    { name: 'a', role: 'primary', health: String, lag_entries: 0, lag_bytes: 0, queued_entries: 0 },
    { name: 'b', role: 'backup', health: String, lag_entries: 0, lag_bytes: 0, queued_entries: 0 },
  ])
  const head = await fetch(`${base}/status`, { method: 'HEAD' })
  tt.equal(head.status, 200, 'HEAD works on GET endpoints')
})

t.test('status and metrics reflect traffic and a failover', async (tt) => {
  const { a, f } = await demoPair(tt)
  const { base } = await startAdmin(tt, f)

  const c = await Client.open(f.port)
  c.send('INCR x\nINCR x\n')
  tt.same(await c.waitLines(2), ['1', '2'])
  let text = await (await fetch(`${base}/metrics`)).text()
  tt.equal(metric(text, 'ftproxy_bytes_total{direction="in"}'), 14, 'bytes in: two INCR lines')
  tt.equal(metric(text, 'ftproxy_bytes_total{direction="out"}'), 4, 'bytes out: two replies')
  tt.match(text, /# TYPE ftproxy_bytes_total counter/)
  tt.equal(metric(text, 'ftproxy_connections'), 1)
  tt.equal(metric(text, 'ftproxy_connections_total'), 1)
  tt.ok((metric(text, 'ftproxy_log_entries_total') ?? 0) >= 2, 'OPEN + DATA entries logged')
  tt.equal(metric(text, 'ftproxy_failovers_total'), 0)
  tt.equal(metric(text, 'ftproxy_epoch'), 1)
  tt.equal(metric(text, 'ftproxy_protected'), 1)
  tt.equal(metric(text, 'ftproxy_replica_role{replica="a",role="primary"}'), 1)
  tt.equal(metric(text, 'ftproxy_replica_role{replica="b",role="backup"}'), 1)
  tt.equal(metric(text, 'ftproxy_replica_role{replica="b",role="primary"}'), 0)

  a.kill('SIGKILL')
  await f.waitEvent('failover')
  const st = await json(await fetch(`${base}/status`))
  tt.match(st, {
    epoch: 2,
    primary: 'b',
    protected: false,
    last_failover: { from: 'a', to: 'b', epoch: 2, duration_ms: Number, reason: String },
  })
  tt.equal(st.replicas.find((r: { name: string }) => r.name === 'a').role, 'stale')

  const res = await fetch(`${base}/metrics`)
  tt.equal(res.status, 200)
  tt.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
  text = await res.text()
  tt.equal(metric(text, 'ftproxy_failovers_total'), 1)
  tt.equal(metric(text, 'ftproxy_switchovers_total'), 0)
  tt.equal(metric(text, 'ftproxy_failover_duration_seconds_count'), 1, 'one failover observed')
  tt.equal(metric(text, 'ftproxy_failover_duration_seconds_bucket{le="+Inf"}'), 1)
  tt.equal(metric(text, 'ftproxy_epoch'), 2)
  tt.equal(metric(text, 'ftproxy_protected'), 0)
  tt.equal(metric(text, 'ftproxy_replica_role{replica="a",role="stale"}'), 1)
  tt.equal(metric(text, 'ftproxy_replica_role{replica="b",role="primary"}'), 1)
  tt.equal(metric(text, 'ftproxy_divergences_total'), 0)
  tt.match(text, /# TYPE ftproxy_failovers_total counter/)
  tt.match(text, /# TYPE ftproxy_failover_duration_seconds histogram/)
  tt.match(text, /^process_cpu_user_seconds_total /m, 'default process metrics')
  tt.match(text, /^ftproxy_output_held_bytes \d+$/m)
  tt.match(text, /^ftproxy_replica_lag_entries\{replica="b"\} \d+$/m)
  tt.match(text, /^ftproxy_replica_lag_bytes\{replica="b"\} \d+$/m)
  tt.match(text, /^ftproxy_log_entries \d+$/m)
  tt.match(text, /^ftproxy_connections_rejected_total 0$/m)
  const upOf = async (replica: string): Promise<number | undefined> => metric(
    await (await fetch(`${base}/metrics`)).text(), `ftproxy_replica_up{replica="${replica}"}`)
  // Health goes down after `fall` failed checks: poll the endpoint with a deadline.
  let up: number | undefined
  await until(async () => (up = await upOf('a')) === 0, 'a reported down')
  tt.equal(up, 0, 'a reported down')
  tt.equal(await upOf('b'), 1)
  c.close()
})

t.test('the bearer token is enforced', async (tt) => {
  const { f } = await demoPair(tt)
  const { base, events } = await startAdmin(tt, f, 's3cret-token')
  const refused = [
    ['no header', {}],
    ['wrong token', { authorization: 'Bearer s3cret-tokem' }],
    ['shorter token', { authorization: 'Bearer s3' }],
    ['not bearer', { authorization: 'Basic czNjcmV0LXRva2Vu' }],
  ] as const
  for (const [what, headers] of refused) {
    for (const path of ['/status', '/metrics', '/nope']) {
      const res = await fetch(`${base}${path}`, { headers })
      tt.equal(res.status, 401, `${what}: ${path} → 401`)
      tt.equal(res.headers.get('www-authenticate'), 'Bearer')
      tt.type((await json(res)).error, 'string')
    }
  }
  const fo = await fetch(`${base}/failover`, { method: 'POST' })
  tt.equal(fo.status, 401, 'POST /failover needs the token too')
  await fo.body?.cancel()
  tt.equal(f.front.status().primary, 'a', 'nothing switched')
  const ok = await fetch(`${base}/status`, { headers: { authorization: 'Bearer s3cret-token' } })
  tt.equal(ok.status, 200)
  tt.equal((await json(ok)).primary, 'a')
  const metrics = await fetch(`${base}/metrics`,
    { headers: { authorization: 'bearer s3cret-token' } })
  tt.equal(metrics.status, 200, 'the scheme is case-insensitive')
  await metrics.text()
  tt.ok(events.find((e) => e.event === 'admin_refused' && e.status === 401 && e.level === 'debug'),
    'refusals logged at debug')
})

t.test('POST /failover under pipelined load loses nothing and stays protected', async (tt) => {
  const { f } = await demoPair(tt, 'output_commit: ack')
  const { base } = await startAdmin(tt, f)
  const clients = await Promise.all(Array.from({ length: 6 }, () => Client.open(f.port)))
  const COUNT = 400
  let request: Promise<Response> | undefined
  await driveIncr(clients, {
    count: COUNT,
    keys: clients.map((_, i) => `p${i}`),
    ms: 30000,
    onProgress: (total) => {
      // Mid-load: one switchover a → b (its target from the JSON body).
      if (request === undefined && total > clients.length * 100) {
        const headers = { 'content-type': 'application/json' }
        request = fetch(`${base}/failover`, { method: 'POST', headers, body: '{"to": "b"}' })
      }
    },
  })
  tt.ok(request, 'the switchover was requested mid-load')
  const res = await (request as Promise<Response>)
  tt.equal(res.status, 200)
  const body = await json(res)
  tt.match(body.switchover,
    { from: 'a', to: 'b', epoch: 2, reason: 'switchover', duration_ms: Number })
  tt.match(body, { primary: 'b', epoch: 2, protected: true })
  expectCounts(tt, clients, COUNT)
  const st = await json(await fetch(`${base}/status`))
  tt.match(st, { primary: 'b', epoch: 2, protected: true })
  tt.same(st.replicas.map((r: { role: string }) => r.role), ['backup', 'primary'])
  const text = await (await fetch(`${base}/metrics`)).text()
  tt.equal(metric(text, 'ftproxy_switchovers_total'), 1)
  tt.equal(metric(text, 'ftproxy_failovers_total'), 0)
  tt.equal(metric(text, 'ftproxy_failover_duration_seconds_count'), 0,
    'switchovers are not in the failover histogram')

  // And back, with the target in the query string.
  const back = await fetch(`${base}/failover?to=a`, { method: 'POST' })
  tt.equal(back.status, 200)
  tt.match(await json(back),
    { switchover: { from: 'b', to: 'a', epoch: 3 }, primary: 'a', protected: true })
  tt.notOk(f.find('divergence'))
  tt.notOk(f.find('unprotected'), 'never unprotected')
  for (const c of clients) c.close()
})

t.test('POST /failover is refused with 409 when no backup is in service', async (tt) => {
  const { b, f } = await demoPair(tt)
  const { base, events } = await startAdmin(tt, f)
  b.kill('SIGKILL')
  await until(() => f.role('b') !== 'backup', 'b out of service')
  const res = await fetch(`${base}/failover`, { method: 'POST' })
  tt.equal(res.status, 409)
  tt.match(res.headers.get('content-type'), /^application\/json/)
  const body = await json(res)
  tt.match(body, { error: String, code: 'ERR_FTPROXY_NOT_IN_SYNC' })
  tt.equal(f.front.status().primary, 'a', 'nothing switched')
  const unknown = await fetch(`${base}/failover`, { method: 'POST', body: '{"to": "zz"}' })
  tt.equal(unknown.status, 409, 'a target that is not a backup in service')
  tt.match(await json(unknown), { code: 'ERR_FTPROXY_NOT_IN_SYNC' })
  tt.ok(events.find((e) => e.event === 'admin_refused' && e.status === 409))
})

t.test('bad requests get a 4xx with a JSON error', async (tt) => {
  const { f } = await demoPair(tt)
  const { base, admin } = await startAdmin(tt, f)
  const cases: Array<[string, string, RequestInit, number]> = [
    ['unknown path', '/nope', {}, 404],
    ['trailing junk', '/status/x', {}, 404],
    ['wrong method on /status', '/status', { method: 'POST' }, 405],
    ['wrong method on /metrics', '/metrics', { method: 'DELETE' }, 405],
    ['wrong method on /failover', '/failover', {}, 405],
    ['malformed JSON', '/failover', { method: 'POST', body: '{"to": ' }, 400],
    ['JSON that is not an object', '/failover', { method: 'POST', body: '["b"]' }, 400],
    ['"to" not a string', '/failover', { method: 'POST', body: '{"to": 1}' }, 400],
    ['unknown field', '/failover', { method: 'POST', body: '{"target": "b"}' }, 400],
    ['body and query disagree', '/failover?to=a', { method: 'POST', body: '{"to": "b"}' }, 400],
    ['body over 4 KiB', '/failover',
      { method: 'POST', body: JSON.stringify({ to: 'b', pad: 'x'.repeat(5000) }) }, 413],
  ]
  for (const [what, path, init, status] of cases) {
    const res = await fetch(`${base}${path}`, init)
    tt.equal(res.status, status, `${what} → ${status}`)
    tt.match(res.headers.get('content-type'), /^application\/json/, `${what}: JSON`)
    tt.type((await json(res)).error, 'string', `${what}: {error}`)
    if (status === 405) tt.match(res.headers.get('allow'), /^(GET, HEAD|POST)$/, `${what}: Allow`)
  }
  tt.equal(f.front.status().primary, 'a', 'no bad request switched anything')

  // A chunked body (no content-length) over the limit is cut off while it is read.
  const raw = await rawRequest(admin,
    'POST /failover HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n' +
    `1400\r\n${'x'.repeat(0x1400)}\r\n0\r\n\r\n`)
  tt.match(raw, /^HTTP\/1\.1 413 /)
  tt.match(raw, /\{"error":"[^"]+"\}/)
})

// A stand-in front: enough for the admin endpoint, with no replicas behind it.
function stubFront (switchover: () => Promise<unknown>): Front {
  const front = {
    counters: newCounters(),
    status: () => ({
      epoch: 1,
      primary: 'a',
      protected: true,
      serving: false,
      protocol: 'resp',
      replicas: [],
      protected_since: new Date().toISOString(),
      connections: 0,
      log_entries: 0,
      log_bytes: 0,
      output_held_bytes: 0,
      last_failover: null,
    }),
    switchover,
    on: () => front,
    off: () => front,
  }
  return front as unknown as Front
}

t.test('other switchover errors are a 500 with a JSON error', async (tt) => {
  // The arbiter is lost mid-switchover (hard to provoke with real processes).
  const front = stubFront(async () => {
    throw new FtproxyError('ERR_FTPROXY_ARBITER_LOST', 'lost the test-and-set for epoch 2')
  })
  const { events, stream } = eventLog()
  const admin = new Admin(front, { listen: LISTEN, log: createLogger({ level: 'debug', stream }) })
  tt.teardown(() => admin.close())
  const { port } = await admin.start()
  const res = await fetch(`http://127.0.0.1:${port}/failover`, { method: 'POST' })
  tt.equal(res.status, 500)
  tt.match(await json(res), { error: String, code: 'ERR_FTPROXY_ARBITER_LOST' })
  tt.ok(events.find((e) => e.event === 'admin_error' && e.level === 'warn' &&
    e.code === 'ERR_FTPROXY_ARBITER_LOST'))
  const raw = await rawRequest(admin, 'GET http://[ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n')
  tt.match(raw, /^HTTP\/1\.1 400 /, 'a request target that is no URL')
})

/** Write raw bytes to the admin port and return everything it answers until it closes. */
function rawRequest (admin: Admin, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(admin.address.port, admin.address.host)
    let got = ''
    s.on('data', (d: Buffer) => { got += d.toString() })
    s.on('error', reject)
    s.on('close', () => resolve(got))
    s.end(text)
  })
}

t.test('commit waits are measured in ack mode', async (tt) => {
  const { f } = await demoPair(tt, 'output_commit: ack')
  const admin = new Admin(f.front, { listen: { host: '127.0.0.1', port: 0 }, log: nullLogger() })
  const address = await admin.start()
  tt.teardown(() => admin.close())
  const c = await Client.open(f.port)
  c.send('INCR w\n'.repeat(20))
  await c.waitLines(20)
  const text = await (await fetch(`http://127.0.0.1:${address.port}/metrics`)).text()
  const count = Number(/^ftproxy_commit_wait_seconds_count (\d+)/m.exec(text)?.[1])
  tt.ok(count > 0, `releases observed (${count})`)
  c.close()
})

// ---------------------------------------------------------------------------------------------
// Descriptor exhaustion: the admin port is open to anyone who can connect (the token is checked
// per request), so idle, slow and surplus connections must not pile up.

/** A raw keep-alive HTTP/1.1 connection, to see exactly what the server does with it. */
class RawConn {
  readonly socket: net.Socket
  data = ''
  closed = false
  closedAt = 0
  readonly openedAt = Date.now()

  private constructor (socket: net.Socket) {
    this.socket = socket
    socket.setEncoding('latin1')
    socket.on('data', (d: string) => { this.data += d })
    socket.on('error', () => {}) // a reset is a close here
    socket.on('close', () => { this.closed = true; this.closedAt = Date.now() })
  }

  static async open (tt: Test, admin: Admin): Promise<RawConn> {
    const socket = net.connect(admin.address.port, admin.address.host)
    tt.teardown(() => { socket.destroy() })
    await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject))
    return new RawConn(socket)
  }

  /** One GET on this connection (kept alive): the status and body of its response. */
  async get (path: string): Promise<{ status: number, body: string }> {
    const from = this.data.length
    this.socket.write(`GET ${path} HTTP/1.1\r\nhost: admin\r\n\r\n`)
    let res: { status: number, body: string } | undefined
    await until(() => (res = parseResponse(this.data.slice(from))) ?? this.closed,
      `response to GET ${path}`)
    if (res === undefined) throw new Error(`closed before a response to GET ${path}`)
    return res
  }
}

/** A complete response with a content-length, or undefined while it is incomplete. */
function parseResponse (text: string): { status: number, body: string } | undefined {
  const end = text.indexOf('\r\n\r\n')
  if (end < 0) return undefined
  const head = text.slice(0, end)
  const length = Number(/^content-length: *(\d+)/im.exec(head)?.[1] ?? NaN)
  const body = text.slice(end + 4)
  if (!(body.length >= length)) return undefined
  return { status: Number(head.split(' ')[1]), body: body.slice(0, length) }
}

async function stubAdmin (
  tt: Test,
  limits: NonNullable<ConstructorParameters<typeof Admin>[1]['limits']>,
  switchover = async (): Promise<unknown> => { throw new Error('not in this test') }
): Promise<{ admin: Admin, events: Event[] }> {
  const { events, stream } = eventLog()
  const front = stubFront(switchover)
  const admin = new Admin(front,
    { listen: LISTEN, log: createLogger({ level: 'debug', stream }), limits })
  tt.teardown(() => admin.close())
  await admin.start()
  return { admin, events }
}

t.test('idle admin connections are closed after the idle timeout', async (tt) => {
  const IDLE = 300
  const { admin } = await stubAdmin(tt, { idleTimeout: IDLE })
  // One that never says a word (it had no timer at all), one kept alive after a request.
  const silent = await RawConn.open(tt, admin)
  const keptAlive = await RawConn.open(tt, admin)
  tt.equal((await keptAlive.get('/status')).status, 200)
  await until(() => silent.closed, 'the silent connection closed by the server', IDLE + 3000)
  tt.ok(silent.closedAt - silent.openedAt >= IDLE * 0.8,
    `not before the idle timeout (${silent.closedAt - silent.openedAt} ms)`)
  tt.equal(silent.data, '', 'closed without a word')
  // Node adds 1 s to keepAliveTimeout, against races with clients reusing the connection.
  await until(() => keptAlive.closed, 'the kept-alive connection closed', IDLE + 3000)
})

t.test('a request that takes longer than the idle timeout is answered', async (tt) => {
  const IDLE = 300
  let finish = (): void => {}
  const switched = new Promise<void>((resolve) => { finish = resolve })
  const { admin } = await stubAdmin(tt, { idleTimeout: IDLE }, async () => {
    await switched
    return { from: 'a', to: 'b' }
  })
  // A silent connection opened after the request: once the server has closed it, the request
  // has been under way for longer than the idle timeout.
  const request = fetch(`http://${formatHostPort(admin.address)}/failover`, { method: 'POST' })
  const silent = await RawConn.open(tt, admin)
  await until(() => silent.closed, 'the silent connection closed', IDLE + 3000)
  finish()
  const res = await request
  tt.equal(res.status, 200)
  tt.match(await json(res), { switchover: { from: 'a', to: 'b' } })
})

t.test('a client that sends its headers slowly is cut off at the headers timeout', async (tt) => {
  const HEADERS = 500
  const { admin } = await stubAdmin(tt, { headersTimeout: HEADERS, idleTimeout: 10000 })
  const slow = await RawConn.open(tt, admin)
  // One byte every 100 ms, for ever: never idle, never done.
  const text = 'GET /status HTTP/1.1\r\nx-slow: '
  let sent = 0
  const drip = setInterval(() => {
    if (!slow.closed) slow.socket.write(text[sent] ?? 'x')
    sent++
  }, 100)
  tt.teardown(() => clearInterval(drip))
  await until(() => slow.closed, 'the slow client cut off', HEADERS + 2500)
  const lasted = slow.closedAt - slow.openedAt
  tt.ok(lasted >= HEADERS * 0.8, `not before the headers timeout (${lasted} ms)`)
  tt.ok(sent > 3, `it was sending all along (${sent} bytes)`)
  tt.match(slow.data, /^(HTTP\/1\.1 408 |$)/, 'a 408, or nothing')
})

t.test('past max connections, one more is closed at once; open ones still work', async (tt) => {
  const { admin, events } = await stubAdmin(tt, { maxConnections: 2 })
  const a = await RawConn.open(tt, admin)
  const b = await RawConn.open(tt, admin)
  // A response on each proves the server has accepted both.
  tt.equal((await a.get('/status')).status, 200)
  tt.equal((await b.get('/status')).status, 200)

  const extra = await RawConn.open(tt, admin)
  await until(() => extra.closed, 'the connection over the cap closed', 2000)
  tt.ok(extra.closedAt - extra.openedAt < 1000, 'closed at once')
  tt.equal(extra.data, '', 'without a word')

  tt.equal((await a.get('/status')).status, 200, 'an open connection still serves')
  // What /metrics serves (its chunked body is not worth parsing by hand here).
  tt.equal(metric(await admin.registry.metrics(), 'ftproxy_admin_connections_refused_total'), 1,
    'counted')
  tt.match(events.find((e) => e.event === 'admin_connections_full'),
    { level: 'warn', max_connections: 2, refused: 1 })

  // Once one closes, a new connection gets in.
  b.socket.end()
  await until(async () => {
    const c = await RawConn.open(tt, admin)
    const ok = (await c.get('/status').catch(() => undefined))?.status === 200
    c.socket.destroy()
    return ok
  }, 'a new connection served after one closed')
})

// ---------------------------------------------------------------------------------------------
// Serial protocols (line, resp): the front counts turns and their waits itself; the endpoint
// shows them as they are when scraped.

async function stubbed (tt: Test): Promise<{ front: Front, base: string }> {
  const front = stubFront(async () => { throw new Error('not in this test') })
  const admin = new Admin(front, { listen: LISTEN, log: nullLogger() })
  tt.teardown(() => admin.close())
  return { front, base: `http://${formatHostPort(await admin.start())}` }
}

t.test('/status passes the protocol through', async (tt) => {
  const { base } = await stubbed(tt)
  tt.equal((await json(await fetch(`${base}/status`))).protocol, 'resp')
})

t.test('turns, the turn-wait histogram and uncompared replies', async (tt) => {
  const { front, base } = await stubbed(tt)
  const scrape = async (): Promise<string> => await (await fetch(`${base}/metrics`)).text()

  let text = await scrape()
  tt.match(text, /# TYPE ftproxy_turns_total counter/)
  tt.match(text, /# HELP ftproxy_turn_wait_seconds \S/)
  tt.match(text, /# TYPE ftproxy_turn_wait_seconds histogram/)
  tt.match(text, /# TYPE ftproxy_uncompared_replies_total counter/)
  tt.equal(metric(text, 'ftproxy_turns_total'), 0)
  tt.equal(metric(text, 'ftproxy_uncompared_replies_total'), 0)
  tt.equal(metric(text, 'ftproxy_turn_wait_seconds_bucket{le="+Inf"}'), 0, 'empty at first')
  tt.equal(metric(text, 'ftproxy_turn_wait_seconds_count'), 0)
  tt.equal(metric(text, 'ftproxy_turn_wait_seconds_sum'), 0)

  // Per-bucket counts as the front keeps them: ≤ 0.1 ms 3, ≤ 1 ms 2, ≤ 250 ms 1, over 1 s 4.
  const counters = front.counters
  const n = TURN_WAIT_BOUNDS_MS.length
  const per = new Array<number>(n + 1).fill(0)
  per[TURN_WAIT_BOUNDS_MS.indexOf(0.1)] = 3
  per[TURN_WAIT_BOUNDS_MS.indexOf(1)] = 2
  per[TURN_WAIT_BOUNDS_MS.indexOf(250)] = 1
  per[n] = 4
  counters.turn_wait_buckets = per
  counters.turn_wait_ms = 12_345.5
  counters.turns = 10
  counters.uncompared_replies = 7
  text = await scrape()
  tt.equal(metric(text, 'ftproxy_turns_total'), 10)
  tt.equal(metric(text, 'ftproxy_uncompared_replies_total'), 7)

  // Cumulative, in seconds, every bound in order, +Inf last: what Prometheus expects.
  const buckets = text.split('\n')
    .filter((l) => l.startsWith('ftproxy_turn_wait_seconds_bucket'))
    .map((l) => {
      const m = /^ftproxy_turn_wait_seconds_bucket\{le="([^"]+)"\} (\d+)$/.exec(l)
      return m === null ? [l] : [m[1], Number(m[2])]
    })
  let cumulative = 0
  const want = TURN_WAIT_BOUNDS_MS.map((ms, i) => [String(ms / 1000), (cumulative += per[i] ?? 0)])
  want.push(['+Inf', 10])
  tt.same(buckets, want, 'cumulative le buckets')
  tt.same(buckets.slice(0, 4), [['0.0001', 3], ['0.00025', 3], ['0.0005', 3], ['0.001', 5]],
    'bounds in seconds, written plainly')
  tt.equal(metric(text, 'ftproxy_turn_wait_seconds_count'), 10, '_count is the +Inf bucket')
  tt.equal(metric(text, 'ftproxy_turn_wait_seconds_sum'), 12.3455, '_sum in seconds')

  // Read at every scrape, never cached.
  per[0] = 4
  counters.turns = 11
  text = await scrape()
  tt.equal(metric(text, 'ftproxy_turn_wait_seconds_bucket{le="0.0001"}'), 4)
  tt.equal(metric(text, 'ftproxy_turn_wait_seconds_bucket{le="+Inf"}'), 11)
  tt.equal(metric(text, 'ftproxy_turn_wait_seconds_count'), 11)
  tt.equal(metric(text, 'ftproxy_turns_total'), 11)
})
