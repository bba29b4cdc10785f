// Configuration: YAML → validated, typed, defaults filled. Parsed once; durations and sizes
// are converted here (to milliseconds and bytes) and nowhere else.
//
//   text ──yaml.parseDocument──▶ Document (+LineCounter) ──toJS──▶ plain data ──zod──▶ Config
//                                     ▲                                           │
//                                     └──── issue paths mapped back to lines ◀────┘
//
// Every problem becomes a ConfigIssue {path, line, message}; all of them are collected and
// thrown together as one ConfigError, so a user fixes a file in one pass, not one per run.

import { readFile } from 'node:fs/promises'
import { isIPv6 } from 'node:net'
import { resolve } from 'node:path'
import { Document, isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument } from 'yaml'
import type { Node as YamlNode } from 'yaml'
import { z } from 'zod'
import { ConfigError } from './errors.js'
import type { ConfigIssue } from './errors.js'

export interface HostPort {
  host: string
  port: number
}

export interface ReplicaConfig {
  /** Unique name, [A-Za-z0-9_.-]+ */
  name: string
  /** The server's address (direct replica). */
  address: HostPort
  /** Optional command to supervise: argv; argv[0] 'ftproxy' means this ftproxy binary. */
  command?: string[]
}

export type OutputCommit = 'ack' | 'match' | 'none'
export type OnBackupLoss = 'continue' | 'block'

export interface Config {
  /** Absolute path of the file this came from ('<embedded>' when none). */
  file: string
  listen: HostPort
  /** Resolved against the process working directory. */
  state_dir: string
  output_commit: OutputCommit
  on_backup_loss: OnBackupLoss
  replicas: ReplicaConfig[]
  /** Durations in milliseconds. */
  health_check: { interval: number, timeout: number, fall: number, rise: number }
  /** Durations in milliseconds. */
  timeouts: { connect: number, stall: number, linger: number, heartbeat: number }
  /** max_lag in bytes. */
  limits: { max_connections: number, max_lag: number }
  arbiter: { kind: 'file' }
  log: { level: 'error' | 'warn' | 'info' | 'debug', format: 'json' | 'text' }
  admin: { listen: HostPort, token?: string }
}

type Defaults = Omit<Config, 'file' | 'replicas'>

/** Every default in one place (durations in ms, sizes in bytes). Frozen: clone before use. */
export const DEFAULTS: Readonly<Defaults> = deepFreeze({
  listen: { host: '127.0.0.1', port: 7000 },
  state_dir: './state',
  output_commit: 'ack',
  on_backup_loss: 'continue',
  health_check: { interval: 1000, timeout: 500, fall: 3, rise: 2 },
  timeouts: { connect: 2000, stall: 3000, linger: 5000, heartbeat: 1000 },
  limits: { max_connections: 10000, max_lag: 8 * 1024 * 1024 },
  arbiter: { kind: 'file' },
  log: { level: 'info', format: 'json' },
  admin: { listen: { host: '127.0.0.1', port: 7900 } }
})

/** Below this, max_lag would stall every connection on a single socket read. */
export const MIN_MAX_LAG = 64 * 1024

// setTimeout overflows above 2^31-1 ms and fires at once: keep durations under it.
const MAX_DURATION = 596 * 3600 * 1000

// ---------------------------------------------------------------------------------------------
// Units

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }
const SIZE_UNITS: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }

/**
 * '250ms', '2s', '1.5s', '1m', '1h' → milliseconds. Units are required; the only bare number
 * accepted is 0. Throws TypeError / RangeError with a message fit for a user.
 */
export function parseDuration (s: string | number): number {
  if (s === 0 || s === '0') return 0
  if (typeof s === 'number') {
    throw new RangeError(`invalid duration ${s}: add a unit (ms, s, m, h), e.g. '${s}ms' or '${s}s'`)
  }
  if (typeof s !== 'string') throw new TypeError(`expected a duration like '2s', got ${describe(s)}`)
  const m = /^(\d+)(?:\.(\d+))?(ms|s|m|h)$/.exec(s)
  if (m == null) {
    if (/^\d+(\.\d+)?$/.test(s)) {
      throw new RangeError(`invalid duration '${s}': add a unit (ms, s, m, h), e.g. '${s}s'`)
    }
    throw new RangeError(`invalid duration '${s}': expected a number and a unit (ms, s, m, h), e.g. '250ms' or '2s'`)
  }
  const ms = scaleDecimal(m[1], m[2] ?? '', DURATION_UNITS[m[3]])
  if (ms === undefined) throw new RangeError(`invalid duration '${s}': not a whole number of milliseconds`)
  return ms
}

/** Milliseconds → the largest unit that expresses them exactly: '500ms', '2s', '1m', '1h'. */
export function formatDuration (ms: number): string {
  if (!Number.isSafeInteger(ms) || ms <= 0) return `${ms}ms`
  for (const unit of ['h', 'm', 's']) {
    if (ms % DURATION_UNITS[unit] === 0) return `${ms / DURATION_UNITS[unit]}${unit}`
  }
  return `${ms}ms`
}

/**
 * '512B', '64KiB', '8MiB', '1GiB' (1024-based) or a bare integer → bytes. KB/MB/GB are
 * refused rather than guessed at: 1000 or 1024 is exactly the ambiguity a config must not have.
 */
export function parseSize (s: string | number): number {
  if (typeof s === 'number') {
    if (Number.isSafeInteger(s) && s >= 0) return s
    throw new RangeError(`invalid size ${s}: expected a whole number of bytes or e.g. '64KiB'`)
  }
  if (typeof s !== 'string') throw new TypeError(`expected a size like '8MiB', got ${describe(s)}`)
  if (/^\d+$/.test(s)) return checkSafe(Number(s), s)
  const m = /^(\d+)(?:\.(\d+))?(B|KiB|MiB|GiB)$/.exec(s)
  if (m == null) {
    if (/^\d+(\.\d+)?\s*[kmgt]i?b?$/i.test(s)) {
      throw new RangeError(`invalid size '${s}': use B, KiB, MiB or GiB (1024-based), e.g. '64KiB' or '8MiB'`)
    }
    throw new RangeError(`invalid size '${s}': expected a number and a unit (B, KiB, MiB, GiB), e.g. '8MiB'`)
  }
  const bytes = scaleDecimal(m[1], m[2] ?? '', SIZE_UNITS[m[3]])
  if (bytes === undefined) throw new RangeError(`invalid size '${s}': not a whole number of bytes`)
  return bytes
}

/** Bytes → the largest unit that expresses them exactly: '8MiB', '64KiB', '100B'. */
export function formatSize (bytes: number): string {
  if (!Number.isSafeInteger(bytes) || bytes <= 0) return `${bytes}B`
  for (const unit of ['GiB', 'MiB', 'KiB']) {
    if (bytes % SIZE_UNITS[unit] === 0) return `${bytes / SIZE_UNITS[unit]}${unit}`
  }
  return `${bytes}B`
}

/** '127.0.0.1:7000', 'localhost:7000', '[::1]:7000' → {host, port}. Port 0 is allowed (tests). */
export function parseHostPort (s: string): HostPort {
  if (typeof s !== 'string') throw new TypeError(`expected host:port, got ${describe(s)}`)
  let host: string
  let port: string
  const bracketed = /^\[([^\]]*)\]:([^:]*)$/.exec(s)
  if (bracketed != null) {
    [, host, port] = bracketed
    if (!isIPv6(host)) throw new RangeError(`invalid address '${s}': '${host}' is not an IPv6 address`)
  } else {
    const colon = s.lastIndexOf(':')
    if (colon < 0) throw new RangeError(`invalid address '${s}': expected host:port, e.g. 127.0.0.1:7000`)
    host = s.slice(0, colon)
    port = s.slice(colon + 1)
    if (host.includes(':')) {
      throw new RangeError(`invalid address '${s}': put an IPv6 address in brackets, e.g. [::1]:7000`)
    }
    if (host === '') throw new RangeError(`invalid address '${s}': the host is missing, e.g. 127.0.0.1${s}`)
    if (!/^[A-Za-z0-9._-]+$/.test(host)) throw new RangeError(`invalid address '${s}': '${host}' is not a host name or IP address`)
  }
  if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) {
    throw new RangeError(`invalid address '${s}': the port must be an integer from 0 to 65535`)
  }
  return { host, port: Number(port) }
}

export function formatHostPort (hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`
}

// int.frac × unit, exactly (no 1.1 * 1000 = 1100.0000000000002); undefined when not whole.
function scaleDecimal (int: string, frac: string, unit: number): number | undefined {
  const scale = 10 ** frac.length
  const scaled = checkSafe(Number(int + frac) * unit, int + (frac ? '.' + frac : ''))
  return scaled % scale === 0 ? scaled / scale : undefined
}

function checkSafe (n: number, s: string): number {
  if (!Number.isSafeInteger(n)) throw new RangeError(`'${s}' is too large`)
  return n
}

// ---------------------------------------------------------------------------------------------
// Schema. Converters report through zod so that every problem gets a path, hence a line.

function converter<T> (convert: (v: string) => T, what: string, acceptNumber = false) {
  return z.unknown().transform((v, ctx): T => {
    if (typeof v === 'string' || (acceptNumber && typeof v === 'number')) {
      try {
        return convert(v as string)
      } catch (err) {
        ctx.issues.push({ code: 'custom', message: (err as Error).message, input: v })
        return z.NEVER
      }
    }
    const message = v === undefined ? 'required' : `expected ${what}, got ${describe(v)}`
    ctx.issues.push({ code: 'custom', message, input: v })
    return z.NEVER
  })
}

// Cross-field checks run even when a sibling is invalid, so one pass reports everything;
// they guard every value they read.
const always = { when: () => true }

const hostPort = converter(parseHostPort, 'host:port, e.g. 127.0.0.1:7000')

// Zero is valid for parseDuration but never for a timer in this config.
const duration = converter(parseDuration, "a duration like '500ms' or '2s'", true)
  .refine((ms) => ms > 0, { error: 'must be greater than 0' })
  .refine((ms) => ms <= MAX_DURATION, { error: `must be at most ${formatDuration(MAX_DURATION)}` })

const size = converter(parseSize, "a size like '64KiB' or '8MiB'", true)

const count = (min: number) => z.number().int().min(min, { error: `must be at least ${min}` })

// YAML turns `--port, 7101` into a number: take it as the string it obviously means.
const arg = z.unknown().transform((v, ctx): string => {
  if (typeof v === 'string') return v
  if (typeof v === 'number' && Number.isFinite(v)) return String(v)
  ctx.issues.push({ code: 'custom', message: `expected a string, got ${describe(v)}`, input: v })
  return z.NEVER
})

const command = z.array(arg, { error: 'expected a list of arguments, e.g. [redis-server, --port, "6379"]' })
  .min(1, { error: 'must not be empty (leave command out to run nothing)' })
  .superRefine((argv, ctx) => {
    if (argv[0] === '') ctx.addIssue({ code: 'custom', path: [0], message: 'the program name must not be empty' })
  })

const NAME_RE = /^[A-Za-z0-9_.-]+$/

const replicaShape = {
  name: z.string().regex(NAME_RE, { error: "must be letters, digits, '_', '.' or '-'" }),
  address: hostPort.optional(),
  agent: z.unknown().optional(),
  command: command.optional()
}

const replica = z.strictObject(replicaShape)
  .superRefine((r, ctx) => {
    if (r.agent !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['agent'], message: 'agent replicas are not available in this version (log channel not implemented yet)' })
    } else if (r.address === undefined) {
      ctx.addIssue({ code: 'custom', path: ['address'], message: "required: the replica server's host:port" })
    }
  })
  .transform((r): ReplicaConfig => {
    const out: ReplicaConfig = { name: r.name, address: r.address as HostPort }
    if (r.command !== undefined) out.command = r.command
    return out
  })

const replicas = z.array(replica, { error: 'expected a list of replicas' })
  .min(2, { error: 'at least two replicas are needed: a primary and a backup' })
  .superRefine((list, ctx) => {
    if (!Array.isArray(list)) return
    const names = new Map<string, number>()
    const addresses = new Map<string, number>()
    list.forEach((r, i) => {
      // Items may be half-invalid here (zod keeps going): check only what parsed.
      if (typeof r?.name === 'string') {
        const first = names.get(r.name)
        if (first !== undefined) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate name '${r.name}' (also replicas[${first}])` })
        else names.set(r.name, i)
      }
      if (isHostPort(r?.address)) {
        const a = formatHostPort(r.address)
        const first = addresses.get(a)
        if (first !== undefined) ctx.addIssue({ code: 'custom', path: [i, 'address'], message: `duplicate address ${a} (also replicas[${first}])` })
        else addresses.set(a, i)
      }
    })
  }, always)

const d = DEFAULTS

const healthCheckShape = {
  interval: duration.default(d.health_check.interval),
  timeout: duration.default(d.health_check.timeout),
  fall: count(1).default(d.health_check.fall),
  rise: count(1).default(d.health_check.rise)
}

const healthCheck = z.strictObject(healthCheckShape)
  .superRefine((h, ctx) => {
    // A probe that may outlast the interval would overlap the next one.
    if (isPositive(h?.timeout) && isPositive(h?.interval) && h.timeout > h.interval) {
      ctx.addIssue({
        code: 'custom',
        path: ['timeout'],
        message: `timeout (${formatDuration(h.timeout)}) must be less than or equal to interval (${formatDuration(h.interval)})`
      })
    }
  }, always)

const timeoutsShape = {
  connect: duration.default(d.timeouts.connect),
  stall: duration.default(d.timeouts.stall),
  linger: duration.default(d.timeouts.linger),
  heartbeat: duration.default(d.timeouts.heartbeat)
}

const limitsShape = {
  max_connections: count(1).default(d.limits.max_connections),
  max_lag: size.default(d.limits.max_lag).refine((n) => n >= MIN_MAX_LAG, {
    error: `must be at least ${formatSize(MIN_MAX_LAG)}: a smaller window makes no sense, ` +
      'a single socket read can be that large and would stall every connection'
  })
}

const ARBITER_KINDS_LATER = ['tas', 'etcd']

// Not strict: a later kind (tas: address, etcd: endpoints) brings its own keys; report the
// kind as unavailable rather than each of its keys as unknown.
const arbiter = z.looseObject({
  kind: z.string({ error: 'expected file' }).default(d.arbiter.kind)
}).superRefine((a, ctx) => {
  if (typeof a.kind !== 'string') return
  if (a.kind !== 'file') {
    const message = ARBITER_KINDS_LATER.includes(a.kind)
      ? `arbiter kind '${a.kind}' is not available in this version`
      : `unknown arbiter kind '${a.kind}': expected file`
    ctx.addIssue({ code: 'custom', path: ['kind'], message })
    return
  }
  for (const key of Object.keys(a)) {
    if (key !== 'kind') ctx.addIssue({ code: 'custom', path: [key], message: unknownKeyMessage(key, ['kind']) })
  }
}).transform((): Config['arbiter'] => ({ kind: 'file' }))

const logShape = {
  level: z.enum(['error', 'warn', 'info', 'debug']).default(d.log.level),
  format: z.enum(['json', 'text']).default(d.log.format)
}

const adminShape = {
  listen: hostPort.default(() => ({ ...d.admin.listen })),
  token: z.string().min(1, { error: 'must not be empty (leave token out for no authentication)' }).optional()
}

const rootShape = {
  listen: hostPort.default(() => ({ ...d.listen })),
  state_dir: z.string().min(1, { error: 'must not be empty' }).default(d.state_dir),
  output_commit: z.enum(['ack', 'match', 'none']).default(d.output_commit),
  on_backup_loss: z.enum(['continue', 'block']).default(d.on_backup_loss),
  replicas,
  health_check: healthCheck.default(() => ({ ...d.health_check })),
  timeouts: z.strictObject(timeoutsShape).default(() => ({ ...d.timeouts })),
  limits: z.strictObject(limitsShape).default(() => ({ ...d.limits })),
  arbiter: arbiter.default(() => ({ ...d.arbiter })),
  log: z.strictObject(logShape).default(() => ({ ...d.log })),
  admin: z.strictObject(adminShape).default(() => ({ listen: { ...d.admin.listen } }))
}

const root = z.strictObject(rootShape).superRefine((c, ctx) => {
  // Same port twice can only fail at bind time, or worse, loop the proxy into itself.
  const listen = isHostPort(c?.listen) ? formatHostPort(c.listen) : undefined
  if (listen !== undefined && c.listen.port !== 0) {
    if (isHostPort(c.admin?.listen) && formatHostPort(c.admin.listen) === listen) {
      ctx.addIssue({ code: 'custom', path: ['admin', 'listen'], message: `must differ from listen (${listen})` })
    }
    if (Array.isArray(c.replicas)) {
      c.replicas.forEach((r, i) => {
        if (isHostPort(r?.address) && formatHostPort(r.address) === listen) {
          ctx.addIssue({ code: 'custom', path: ['replicas', i, 'address'], message: `must differ from listen (${listen}): the proxy would connect to itself` })
        }
      })
    }
  }
}, always)

// Allowed keys per (normalised) object path, for "did you mean" hints.
const KNOWN_KEYS: Record<string, string[]> = {
  '': Object.keys(rootShape),
  'replicas[]': Object.keys(replicaShape),
  health_check: Object.keys(healthCheckShape),
  timeouts: Object.keys(timeoutsShape),
  limits: Object.keys(limitsShape),
  log: Object.keys(logShape),
  admin: Object.keys(adminShape)
}

// ---------------------------------------------------------------------------------------------
// Parsing

/**
 * YAML text → Config. Throws one ConfigError listing every problem, each with its key path
 * (`replicas[1].address`) and 1-based line. `state_dir` is resolved against `cwd`.
 */
export function parseConfig (text: string, file: string, cwd = process.cwd()): Config {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, prettyErrors: false })
  const lineAt = (offset: number) => lineCounter.linePos(offset).line

  if (doc.errors.length > 0) {
    throw new ConfigError(file, doc.errors.map((e) => ({
      path: '',
      line: lineAt(e.pos[0]),
      message: e.code === 'MULTIPLE_DOCS'
        ? 'YAML: only one document is allowed (remove the extra ---)'
        : `YAML: ${e.message}`
    })))
  }
  if (doc.contents == null || (isScalar(doc.contents) && doc.contents.value == null)) {
    throw new ConfigError(file, [{ path: '', line: 1, message: 'the file is empty: it needs at least `replicas` (two or more)' }])
  }
  if (!isMap(doc.contents)) {
    throw new ConfigError(file, [{
      path: '',
      line: lineOfNode(doc.contents, lineAt),
      message: `expected a map of settings (key: value) at the top level, got ${describe(doc.contents.toJSON())}`
    }])
  }

  let data: unknown
  try {
    data = doc.toJS({ maxAliasCount: 100 })
  } catch (err) {
    throw new ConfigError(file, [{ path: '', message: `YAML: ${(err as Error).message}` }])
  }

  const result = root.safeParse(data, { reportInput: true })
  if (!result.success) {
    const issues: ConfigIssue[] = []
    for (const iss of result.error.issues) {
      for (const { path, message } of explain(iss)) {
        issues.push({ path: formatPath(path), line: lineOfPath(doc, path, lineAt), message })
      }
    }
    // By line, so the list reads top to bottom like the file.
    issues.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity))
    throw new ConfigError(file, issues)
  }

  const c = result.data
  return { file, ...c, state_dir: resolve(cwd, c.state_dir) }
}

/** Reads and parses a config file; `file` in the result is its absolute path. */
export async function loadConfig (path: string): Promise<Config> {
  const file = resolve(path)
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new ConfigError(file, [{ path: '', message: `cannot read: ${(err as Error).message}` }])
  }
  return parseConfig(text, file)
}

export interface RenderOptions {
  /** Replace secrets (admin.token) with '********', e.g. for `check-config` output. */
  redact?: boolean
}

/**
 * The effective config as YAML, durations and sizes in human units, keys in the documented
 * order, without `file`. parseConfig(renderConfig(c)) gives back c (unless redacted).
 */
export function renderConfig (c: Config, opts: RenderOptions = {}): string {
  const admin: Record<string, string> = { listen: formatHostPort(c.admin.listen) }
  if (c.admin.token !== undefined) admin.token = opts.redact === true ? '********' : c.admin.token
  const plain = {
    listen: formatHostPort(c.listen),
    state_dir: c.state_dir,
    output_commit: c.output_commit,
    on_backup_loss: c.on_backup_loss,
    replicas: c.replicas.map((r) => ({
      name: r.name,
      address: formatHostPort(r.address),
      ...(r.command !== undefined ? { command: r.command } : {})
    })),
    health_check: {
      interval: formatDuration(c.health_check.interval),
      timeout: formatDuration(c.health_check.timeout),
      fall: c.health_check.fall,
      rise: c.health_check.rise
    },
    timeouts: {
      connect: formatDuration(c.timeouts.connect),
      stall: formatDuration(c.timeouts.stall),
      linger: formatDuration(c.timeouts.linger),
      heartbeat: formatDuration(c.timeouts.heartbeat)
    },
    limits: { max_connections: c.limits.max_connections, max_lag: formatSize(c.limits.max_lag) },
    arbiter: { kind: c.arbiter.kind },
    log: { level: c.log.level, format: c.log.format },
    admin
  }
  const doc = new Document(plain)
  // Small maps and argv on one line, as in DESIGN.md.
  for (const key of ['health_check', 'timeouts', 'limits', 'arbiter', 'log', 'admin']) {
    const node = doc.get(key, true)
    if (isMap(node)) node.flow = true
  }
  c.replicas.forEach((r, i) => {
    const node = doc.getIn(['replicas', i, 'command'], true)
    if (isSeq(node)) node.flow = true
  })
  return doc.toString({ lineWidth: 0 })
}

// ---------------------------------------------------------------------------------------------
// Issues: zod issue → (path, message) pairs → lines

type Path = PropertyKey[]

function explain (iss: z.core.$ZodIssue): Array<{ path: Path, message: string }> {
  const input = (iss as { input?: unknown }).input
  switch (iss.code) {
    case 'unrecognized_keys': {
      const known = KNOWN_KEYS[normalisePath(iss.path)] ?? []
      return iss.keys.map((key) => ({ path: [...iss.path, key], message: unknownKeyMessage(key, known) }))
    }
    case 'invalid_type':
      if (input === undefined) return [{ path: iss.path, message: 'required' }]
      // Keep a schema's own message; replace zod's generic one.
      if (!iss.message.startsWith('Invalid input')) break
      return [{ path: iss.path, message: `expected ${article(iss.expected)}, got ${describe(input)}` }]
    case 'invalid_value':
      if (input === undefined) return [{ path: iss.path, message: 'required' }]
      return [{ path: iss.path, message: `expected one of ${iss.values.map(String).join(' | ')}, got ${describe(input)}` }]
  }
  return [{ path: iss.path, message: iss.message }]
}

function unknownKeyMessage (key: string, known: string[]): string {
  const near = known.find((k) => editDistance(k, key) <= 2)
  return near !== undefined ? `unknown key (did you mean '${near}'?)` : 'unknown key'
}

/** ['replicas', 1, 'address'] → 'replicas[1].address' */
function formatPath (path: Path): string {
  let s = ''
  for (const seg of path) s += typeof seg === 'number' ? `[${seg}]` : (s === '' ? String(seg) : `.${String(seg)}`)
  return s
}

function normalisePath (path: Path): string {
  return formatPath(path).replace(/\[\d+\]/g, '[]')
}

// Walk the YAML nodes along the path as far as they exist. A scalar reports its own line;
// a collection reports the line of its key; a missing key reports its parent's line.
function lineOfPath (doc: Document, path: Path, lineAt: (offset: number) => number): number | undefined {
  let node: unknown = doc.contents
  let line = lineOfNode(node, lineAt)
  for (const seg of path) {
    if (isAlias(node)) node = node.resolve(doc)
    if (isMap(node)) {
      const pair = node.items.find((p) => keyString(p.key) === String(seg))
      if (pair === undefined) break
      node = pair.value
      line = isScalar(node) && node.value != null
        ? lineOfNode(node, lineAt) ?? line
        : lineOfNode(pair.key, lineAt) ?? line
    } else if (isSeq(node) && typeof seg === 'number' && node.items[seg] != null) {
      node = node.items[seg]
      line = lineOfNode(node, lineAt) ?? line
    } else {
      break
    }
  }
  return line
}

function lineOfNode (node: unknown, lineAt: (offset: number) => number): number | undefined {
  const range = (node as YamlNode | null)?.range
  return range != null ? lineAt(range[0]) : undefined
}

function keyString (key: unknown): string {
  return isScalar(key) ? String(key.value) : String(key)
}

// ---------------------------------------------------------------------------------------------
// Small helpers

function describe (v: unknown): string {
  if (v === null) return 'an empty value'
  if (v === undefined) return 'nothing'
  if (Array.isArray(v)) return 'a list'
  if (typeof v === 'object') return 'a map'
  if (typeof v === 'string') return `'${v}'`
  return `${typeof v} ${String(v)}`
}

function article (expected: string): string {
  const words: Record<string, string> = { object: 'a map', array: 'a list', int: 'an integer', number: 'a number', string: 'a string', boolean: 'true or false' }
  return words[expected] ?? expected
}

function isPositive (n: unknown): n is number {
  return typeof n === 'number' && n > 0
}

function isHostPort (v: unknown): v is HostPort {
  return typeof v === 'object' && v !== null && typeof (v as HostPort).host === 'string' && typeof (v as HostPort).port === 'number'
}

function editDistance (a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = cur
    }
  }
  return row[b.length]
}

function deepFreeze<T> (o: T): T {
  if (typeof o === 'object' && o !== null) {
    for (const v of Object.values(o)) deepFreeze(v)
    Object.freeze(o)
  }
  return o
}
