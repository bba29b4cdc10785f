// Configuration: YAML → validated, typed, defaults filled. Parsed once; durations and sizes
// are converted here (to milliseconds and bytes) and nowhere else.
//
//   text ──yaml.parseDocument──▶ Document (+LineCounter) ──toJS──▶ plain data ──zod──▶ Config
//                                     ▲                                           │
//                                     └──── issue paths mapped back to lines ◀────┘
//
// Every problem becomes a ConfigIssue {path, line, message}; all of them are collected and
// thrown together as one ConfigError, so a user fixes a file in one pass, not one per run.
//
// Two dialects share that machinery and their pieces (host:port, durations, health_check,
// timeouts, log, tls): the front's config (parseConfig) and the agent's (parseAgentConfig).

import { constants as fsConstants } from 'node:fs'
import { access, readFile, stat } from 'node:fs/promises'
import { BlockList, isIPv4, isIPv6 } from 'node:net'
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

/** Mutual TLS: absolute paths (relative ones are resolved against the working directory). */
export interface TlsConfig {
  /** This side's certificate (PEM). */
  cert: string
  /** This side's private key (PEM). */
  key: string
  /** The CA that signed the peer's certificate (PEM). */
  ca: string
}

/** Exactly one of `address` (direct) and `agent` (through an agent) is set. */
export interface ReplicaConfig {
  /** Unique name, [A-Za-z0-9_.-]+ */
  name: string
  /** direct replica: the server's address */
  address?: HostPort
  /** agent replica: the agent's log-channel address */
  agent?: HostPort
  /** agent replica: mutual TLS to the agent (client certificate, key, and the CA that signed the agent's) */
  tls?: TlsConfig
  /** direct replica: a command to supervise: argv; argv[0] 'ftproxy' means this ftproxy binary. */
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

export interface AgentConfig {
  /** Absolute path of the file this came from ('<flags>' when built from flags). */
  file: string
  /** Where the front's log channel connects. */
  listen: HostPort
  /** The local legacy server. */
  server: HostPort
  /** The newest epoch seen (fencing). Resolved against the process working directory. */
  state_dir: string
  /** Optional command to supervise the server: argv; argv[0] 'ftproxy' means this binary. */
  command?: string[]
  /** Optional mutual TLS on the log channel (this agent's certificate, key, and the CA that signed the front's). */
  tls?: TlsConfig
  /** Probes of the local server. Durations in milliseconds. */
  health_check: { interval: number, timeout: number, fall: number, rise: number }
  /** Durations in milliseconds. */
  timeouts: { connect: number, linger: number }
  log: { level: 'error' | 'warn' | 'info' | 'debug', format: 'json' | 'text' }
}

type Defaults = Omit<Config, 'file' | 'replicas'>
type AgentDefaults = Omit<AgentConfig, 'file' | 'server' | 'command' | 'tls'>

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

/** The agent's defaults; health_check, timeouts and log are the front's. Frozen. */
export const AGENT_DEFAULTS: Readonly<AgentDefaults> = deepFreeze({
  listen: { host: '127.0.0.1', port: 7201 },
  state_dir: './agent-state',
  health_check: { ...DEFAULTS.health_check },
  timeouts: { connect: DEFAULTS.timeouts.connect, linger: DEFAULTS.timeouts.linger },
  log: { ...DEFAULTS.log }
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

const LOOPBACK = new BlockList()
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4')
LOOPBACK.addAddress('::1', 'ipv6')

/**
 * True for 127.0.0.0/8, ::1 (any spelling, and IPv4-mapped 127.x) and 'localhost': a listener
 * there is reachable from this machine only. Other names are not resolved: false.
 */
export function isLoopback (host: string): boolean {
  if (host.toLowerCase() === 'localhost') return true
  if (isIPv4(host)) return LOOPBACK.check(host, 'ipv4')
  if (isIPv6(host)) return LOOPBACK.check(host, 'ipv6')
  return false
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

function converter<T> (convert: (v: string) => T, what: string, acceptNumber = false, required = 'required') {
  return z.unknown().transform((v, ctx): T => {
    if (typeof v === 'string' || (acceptNumber && typeof v === 'number')) {
      try {
        return convert(v as string)
      } catch (err) {
        ctx.issues.push({ code: 'custom', message: (err as Error).message, input: v })
        return z.NEVER
      }
    }
    const message = v === undefined ? required : `expected ${what}, got ${describe(v)}`
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

const d = DEFAULTS
const ad = AGENT_DEFAULTS

// Shared sections: the front and the agent use these same pieces.

const filePath = z.string().min(1, { error: 'must not be empty' })

const tlsShape = {
  cert: filePath,
  key: filePath,
  ca: filePath
}

const tls = z.strictObject(tlsShape)

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
  .default(() => ({ ...d.health_check }))

const timeoutsShape = {
  connect: duration.default(d.timeouts.connect),
  stall: duration.default(d.timeouts.stall),
  linger: duration.default(d.timeouts.linger),
  heartbeat: duration.default(d.timeouts.heartbeat)
}

const logShape = {
  level: z.enum(['error', 'warn', 'info', 'debug']).default(d.log.level),
  format: z.enum(['json', 'text']).default(d.log.format)
}

const log = z.strictObject(logShape).default(() => ({ ...d.log }))

const stateDir = (dflt: string) => z.string().min(1, { error: 'must not be empty' }).default(dflt)

// ---------------------------------------------------------------------------------------------
// The front's config

const NAME_RE = /^[A-Za-z0-9_.-]+$/

const replicaShape = {
  name: z.string().regex(NAME_RE, { error: "must be letters, digits, '_', '.' or '-'" }),
  address: hostPort.optional(),
  agent: hostPort.optional(),
  tls: tls.optional(),
  command: command.optional()
}

// A value given but invalid is not undefined (zod leaves a marker), so these checks see what
// the user wrote even when a sibling failed: "both" or "neither" is reported in the same pass.
const replica = z.strictObject(replicaShape)
  .superRefine((r, ctx) => {
    if (typeof r !== 'object' || r === null || Array.isArray(r)) return
    const direct = r.address !== undefined
    const viaAgent = r.agent !== undefined
    if (direct && viaAgent) {
      ctx.addIssue({ code: 'custom', path: [], message: 'give either address (direct) or agent (through an agent), not both' })
    } else if (!direct && !viaAgent) {
      ctx.addIssue({ code: 'custom', path: [], message: "required: give either address (direct: the server's host:port) or agent (through an agent: the agent's host:port)" })
    }
    if (viaAgent && r.command !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['command'], message: "an agent replica's server is supervised by its agent: put command in the agent's config" })
    }
    if (!viaAgent && r.tls !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['tls'], message: 'tls is for agent replicas only (the log channel to an agent); a direct replica has no TLS' })
    }
  }, always)
  .transform((r): ReplicaConfig => {
    const out: ReplicaConfig = { name: r.name }
    if (r.address !== undefined) out.address = r.address
    if (r.agent !== undefined) out.agent = r.agent
    if (r.tls !== undefined) out.tls = r.tls
    if (r.command !== undefined) out.command = r.command
    return out
  })

const replicas = z.array(replica, { error: 'expected a list of replicas' })
  .min(2, { error: 'at least two replicas are needed: a primary and a backup' })
  .superRefine((list, ctx) => {
    if (!Array.isArray(list)) return
    const names = new Map<string, number>()
    // Direct and agent addresses together: two replicas behind one port are one replica.
    const addresses = new Map<string, number>()
    list.forEach((r, i) => {
      // Items may be half-invalid here (zod keeps going): check only what parsed.
      if (typeof r?.name === 'string') {
        const first = names.get(r.name)
        if (first !== undefined) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate name '${r.name}' (also replicas[${first}])` })
        else names.set(r.name, i)
      }
      for (const key of ['address', 'agent'] as const) {
        const hp = r?.[key]
        if (!isHostPort(hp)) continue
        const a = formatHostPort(hp)
        const first = addresses.get(a)
        if (first !== undefined) ctx.addIssue({ code: 'custom', path: [i, key], message: `duplicate address ${a} (also replicas[${first}])` })
        else addresses.set(a, i)
      }
    })
  }, always)

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

const adminShape = {
  listen: hostPort.default(() => ({ ...d.admin.listen })),
  token: z.string().min(1, { error: 'must not be empty (leave token out for no authentication)' }).optional()
}

const rootShape = {
  listen: hostPort.default(() => ({ ...d.listen })),
  state_dir: stateDir(d.state_dir),
  output_commit: z.enum(['ack', 'match', 'none']).default(d.output_commit),
  on_backup_loss: z.enum(['continue', 'block']).default(d.on_backup_loss),
  replicas,
  health_check: healthCheck,
  timeouts: z.strictObject(timeoutsShape).default(() => ({ ...d.timeouts })),
  limits: z.strictObject(limitsShape).default(() => ({ ...d.limits })),
  arbiter: arbiter.default(() => ({ ...d.arbiter })),
  log,
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
        for (const key of ['address', 'agent'] as const) {
          const hp = r?.[key]
          if (isHostPort(hp) && formatHostPort(hp) === listen) {
            ctx.addIssue({ code: 'custom', path: ['replicas', i, key], message: `must differ from listen (${listen}): the proxy would connect to itself` })
          }
        }
      })
    }
  }
}, always)

// Allowed keys per (normalised) object path, for "did you mean" hints.
const KNOWN_KEYS: Record<string, string[]> = {
  '': Object.keys(rootShape),
  'replicas[]': Object.keys(replicaShape),
  'replicas[].tls': Object.keys(tlsShape),
  health_check: Object.keys(healthCheckShape),
  timeouts: Object.keys(timeoutsShape),
  limits: Object.keys(limitsShape),
  log: Object.keys(logShape),
  admin: Object.keys(adminShape)
}

// ---------------------------------------------------------------------------------------------
// The agent's config

const agentTimeoutsShape = {
  connect: timeoutsShape.connect,
  linger: timeoutsShape.linger
}

const agentRootShape = {
  listen: hostPort.default(() => ({ ...ad.listen })),
  server: converter(parseHostPort, 'host:port, e.g. 127.0.0.1:6379', false, "required: the local server's host:port, e.g. 127.0.0.1:6379"),
  state_dir: stateDir(ad.state_dir),
  command: command.optional(),
  tls: tls.optional(),
  health_check: healthCheck,
  timeouts: z.strictObject(agentTimeoutsShape).default(() => ({ ...ad.timeouts })),
  log
}

const agentRoot = z.strictObject(agentRootShape).superRefine((c, ctx) => {
  if (isHostPort(c?.listen) && c.listen.port !== 0 && isHostPort(c.server) &&
    formatHostPort(c.server) === formatHostPort(c.listen)) {
    ctx.addIssue({ code: 'custom', path: ['server'], message: `must differ from listen (${formatHostPort(c.listen)}): the agent would connect to itself` })
  }
}, always)

const AGENT_KNOWN_KEYS: Record<string, string[]> = {
  '': Object.keys(agentRootShape),
  tls: Object.keys(tlsShape),
  health_check: Object.keys(healthCheckShape),
  timeouts: Object.keys(agentTimeoutsShape),
  log: Object.keys(logShape)
}

// Flag names for agentConfigFromFlags, by config key.
const AGENT_FLAGS: Record<string, string> = { listen: '--listen', server: '--server', state_dir: '--state-dir' }

// ---------------------------------------------------------------------------------------------
// Parsing

interface Dialect<S extends z.ZodType> {
  schema: S
  /** Allowed keys per normalised object path, for "did you mean" hints. */
  knownKeys: Record<string, string[]>
  /** What an empty file is told. */
  empty: string
}

const FRONT: Dialect<typeof root> = {
  schema: root,
  knownKeys: KNOWN_KEYS,
  empty: 'the file is empty: it needs at least `replicas` (two or more)'
}

const AGENT: Dialect<typeof agentRoot> = {
  schema: agentRoot,
  knownKeys: AGENT_KNOWN_KEYS,
  empty: "the file is empty: it needs at least `server` (the local server's host:port)"
}

/** Validated data, and the line of a key path in the text it came from (for later checks). */
interface Parsed<T> {
  data: T
  lineOf: (path: Path) => number | undefined
}

/**
 * YAML text → validated data of one dialect. Throws one ConfigError listing every problem,
 * each with its key path (`replicas[1].address`) and 1-based line.
 */
function parseYaml<S extends z.ZodType> (dialect: Dialect<S>, text: string, file: string): Parsed<z.output<S>> {
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
    throw new ConfigError(file, [{ path: '', line: 1, message: dialect.empty }])
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

  const lineOf = (path: Path) => lineOfPath(doc, path, lineAt)
  const result = dialect.schema.safeParse(data, { reportInput: true })
  if (!result.success) {
    throw new ConfigError(file, issuesOf(result.error, dialect.knownKeys, (path) => ({ path: formatPath(path), line: lineOf(path) })))
  }
  return { data: result.data, lineOf }
}

/** zod's issues → ConfigIssues placed by `place` (a key path and line, or a flag name), by line. */
function issuesOf (error: z.ZodError, knownKeys: Record<string, string[]>, place: (path: Path) => Omit<ConfigIssue, 'message'>): ConfigIssue[] {
  const issues: ConfigIssue[] = []
  for (const iss of error.issues) {
    for (const { path, message } of explain(iss, knownKeys)) issues.push({ ...place(path), message })
  }
  // By line, so the list reads top to bottom like the file.
  issues.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity))
  return issues
}

async function readConfigText (path: string): Promise<{ file: string, text: string }> {
  const file = resolve(path)
  try {
    return { file, text: await readFile(file, 'utf8') }
  } catch (err) {
    throw new ConfigError(file, [{ path: '', message: `cannot read: ${(err as Error).message}` }])
  }
}

function resolveTls (cwd: string, t: TlsConfig): TlsConfig {
  return { cert: resolve(cwd, t.cert), key: resolve(cwd, t.key), ca: resolve(cwd, t.ca) }
}

/** The files a tls section names, with their key paths. */
function tlsFiles (at: Path, t: TlsConfig): Array<{ path: Path, file: string }> {
  return (['cert', 'key', 'ca'] as const).map((key) => ({ path: [...at, key], file: t[key] }))
}

/** Every named file must be a readable regular file; throws one ConfigError listing those that are not. */
async function checkFiles (file: string, lineOf: (path: Path) => number | undefined, files: Array<{ path: Path, file: string }>): Promise<void> {
  const problems = await Promise.all(files.map(async (f): Promise<ConfigIssue | undefined> => {
    const at = { path: formatPath(f.path), line: lineOf(f.path) }
    try {
      if (!(await stat(f.file)).isFile()) return { ...at, message: `cannot read: '${f.file}' is not a file` }
      await access(f.file, fsConstants.R_OK)
      return undefined
    } catch (err) {
      return { ...at, message: `cannot read: ${(err as Error).message}` }
    }
  }))
  const issues = problems.filter((i) => i !== undefined)
  if (issues.length > 0) throw new ConfigError(file, issues)
}

/**
 * YAML text → Config. Throws one ConfigError listing every problem, each with its key path
 * (`replicas[1].address`) and 1-based line. `state_dir` and tls paths are resolved against
 * `cwd`. Pure: files named by tls are checked by loadConfig, not here.
 */
export function parseConfig (text: string, file: string, cwd = process.cwd()): Config {
  return frontConfig(parseYaml(FRONT, text, file).data, file, cwd)
}

function frontConfig (c: z.output<typeof root>, file: string, cwd: string): Config {
  return {
    file,
    ...c,
    state_dir: resolve(cwd, c.state_dir),
    replicas: c.replicas.map((r) => r.tls !== undefined ? { ...r, tls: resolveTls(cwd, r.tls) } : r)
  }
}

/**
 * Reads and parses a config file; `file` in the result is its absolute path. Also checks that
 * the files named by each replica's tls exist and are readable (issues at replicas[i].tls.cert …).
 */
export async function loadConfig (path: string): Promise<Config> {
  const { file, text } = await readConfigText(path)
  const { data, lineOf } = parseYaml(FRONT, text, file)
  const c = frontConfig(data, file, process.cwd())
  await checkFiles(file, lineOf, c.replicas.flatMap((r, i) => r.tls !== undefined ? tlsFiles(['replicas', i, 'tls'], r.tls) : []))
  return c
}

/**
 * Agent YAML text → AgentConfig, with the same rules and errors as parseConfig. `state_dir` and
 * tls paths are resolved against `cwd`. No tls on a non-loopback listen is allowed here (the
 * agent warns at run time; see isLoopback).
 */
export function parseAgentConfig (text: string, file: string, cwd = process.cwd()): AgentConfig {
  return agentConfig(parseYaml(AGENT, text, file).data, file, cwd)
}

function agentConfig (c: z.output<typeof agentRoot>, file: string, cwd: string): AgentConfig {
  const out: AgentConfig = {
    file,
    listen: c.listen,
    server: c.server,
    state_dir: resolve(cwd, c.state_dir),
    health_check: c.health_check,
    timeouts: c.timeouts,
    log: c.log
  }
  if (c.command !== undefined) out.command = c.command
  if (c.tls !== undefined) out.tls = resolveTls(cwd, c.tls)
  return out
}

/** Reads and parses an agent config file, and checks the files its tls names. */
export async function loadAgentConfig (path: string): Promise<AgentConfig> {
  const { file, text } = await readConfigText(path)
  const { data, lineOf } = parseYaml(AGENT, text, file)
  const c = agentConfig(data, file, process.cwd())
  if (c.tls !== undefined) await checkFiles(file, lineOf, tlsFiles(['tls'], c.tls))
  return c
}

/** `file` of an AgentConfig built by agentConfigFromFlags. */
export const FLAGS_FILE = '<flags>'

/**
 * `ftproxy agent --listen … --server … --state-dir …` → AgentConfig, validated like the file
 * (defaults for what is not given). Problems throw one ConfigError whose issue paths are the
 * flag names ('--server').
 */
export function agentConfigFromFlags (flags: { listen?: string, server?: string, stateDir?: string }, cwd = process.cwd()): AgentConfig {
  const data: Record<string, unknown> = {}
  if (flags.listen !== undefined) data.listen = flags.listen
  if (flags.server !== undefined) data.server = flags.server
  if (flags.stateDir !== undefined) data.state_dir = flags.stateDir
  const result = agentRoot.safeParse(data, { reportInput: true })
  if (!result.success) {
    throw new ConfigError(FLAGS_FILE, issuesOf(result.error, AGENT_KNOWN_KEYS, (path) => ({
      path: AGENT_FLAGS[String(path[0])] ?? formatPath(path)
    })))
  }
  return agentConfig(result.data, FLAGS_FILE, cwd)
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
      ...(r.address !== undefined ? { address: formatHostPort(r.address) } : {}),
      ...(r.agent !== undefined ? { agent: formatHostPort(r.agent) } : {}),
      ...(r.tls !== undefined ? { tls: renderTls(r.tls) } : {}),
      ...(r.command !== undefined ? { command: r.command } : {})
    })),
    health_check: renderHealthCheck(c.health_check),
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
  return toYaml(plain,
    ['health_check', 'timeouts', 'limits', 'arbiter', 'log', 'admin'],
    c.replicas.map((_, i) => ['replicas', i, 'command']))
}

/**
 * The effective agent config as YAML, in the documented key order, without `file`.
 * parseAgentConfig(renderAgentConfig(c)) gives back c.
 */
export function renderAgentConfig (c: AgentConfig): string {
  const plain = {
    listen: formatHostPort(c.listen),
    server: formatHostPort(c.server),
    state_dir: c.state_dir,
    ...(c.command !== undefined ? { command: c.command } : {}),
    ...(c.tls !== undefined ? { tls: renderTls(c.tls) } : {}),
    health_check: renderHealthCheck(c.health_check),
    timeouts: { connect: formatDuration(c.timeouts.connect), linger: formatDuration(c.timeouts.linger) },
    log: { level: c.log.level, format: c.log.format }
  }
  return toYaml(plain, ['health_check', 'timeouts', 'log'], [['command']])
}

function renderHealthCheck (h: Config['health_check']): Record<string, string | number> {
  return { interval: formatDuration(h.interval), timeout: formatDuration(h.timeout), fall: h.fall, rise: h.rise }
}

function renderTls (t: TlsConfig): TlsConfig {
  return { cert: t.cert, key: t.key, ca: t.ca }
}

// Small maps and argv on one line, as in DESIGN.md.
function toYaml (plain: object, flowMaps: string[], flowSeqs: Path[]): string {
  const doc = new Document(plain)
  for (const key of flowMaps) {
    const node = doc.get(key, true)
    if (isMap(node)) node.flow = true
  }
  for (const path of flowSeqs) {
    const node = doc.getIn(path, true)
    if (isSeq(node)) node.flow = true
  }
  return doc.toString({ lineWidth: 0 })
}

// ---------------------------------------------------------------------------------------------
// Issues: zod issue → (path, message) pairs → lines

type Path = PropertyKey[]

function explain (iss: z.core.$ZodIssue, knownKeys: Record<string, string[]>): Array<{ path: Path, message: string }> {
  const input = (iss as { input?: unknown }).input
  switch (iss.code) {
    case 'unrecognized_keys': {
      const known = knownKeys[normalisePath(iss.path)] ?? []
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
