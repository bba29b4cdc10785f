// The zod schemas of both dialects: the front's config (root) and the agent's (agentRoot),
// built from shared sections (host:port, durations, health_check, timeouts, log, tls).
// Converters report through zod so that every problem gets a path, hence a line.

import { z } from 'zod'
import { formatHostPort, parseHostPort, reaches, type HostPort } from '../address.js'
import { PROTOCOL_NAMES } from '../protocol/types.js'
import { describe } from '../util/describe.js'
import {
  AGENT_DEFAULTS, DEFAULTS, MAX_DURATION, MIN_MAX_LAG, RESEED_DEFAULTS,
} from './defaults.js'
import { unknownKeyMessage, type KnownKeys } from './issues.js'
import type { Config, ReplicaConfig } from './types.js'
import { formatDuration, formatSize, parseDuration, parseSize } from './units.js'

function converter<T> (
  convert: (v: string) => T,
  what: string,
  acceptNumber = false,
  required = 'required'
) {
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

// Where a connect goes: port 0 is only for listening (the kernel picks one).
const notPortZero = (hp: HostPort): boolean => hp.port !== 0
const PORT_ZERO = 'port 0 cannot be connected to: give the port the server listens on'
const target = hostPort.refine(notPortZero, { error: PORT_ZERO })

// Zero is valid for parseDuration but never for a timer in this config.
const duration = converter(parseDuration, "a duration like '500ms' or '2s'", true)
  .refine((ms) => ms > 0, { error: 'must be greater than 0' })
  .refine((ms) => ms <= MAX_DURATION, {
    error: `must be at most ${formatDuration(MAX_DURATION)}`,
  })

const size = converter(parseSize, "a size like '64KiB' or '8MiB'", true)

const count = (min: number) => z.number().int().min(min, { error: `must be at least ${min}` })

// YAML turns `--port, 7101` into a number: take it as the string it obviously means.
const arg = z.unknown().transform((v, ctx): string => {
  if (typeof v === 'string') return v
  if (typeof v === 'number' && Number.isFinite(v)) return String(v)
  ctx.issues.push({ code: 'custom', message: `expected a string, got ${describe(v)}`, input: v })
  return z.NEVER
})

const command = z.array(arg, {
  error: 'expected a list of arguments, e.g. [redis-server, --port, "6379"]',
})
  .min(1, { error: 'must not be empty (leave command out to run nothing)' })
  .superRefine((argv, ctx) => {
    if (argv[0] === '') {
      ctx.addIssue({ code: 'custom', path: [0], message: 'the program name must not be empty' })
    }
  })

const d = DEFAULTS
const ad = AGENT_DEFAULTS

// ---------------------------------------------------------------------------------------------
// Shared sections: the front and the agent use these same pieces.

const filePath = z.string().min(1, { error: 'must not be empty' })

const tlsShape = {
  cert: filePath,
  key: filePath,
  ca: filePath,
}

const tls = z.strictObject(tlsShape)

const healthCheckShape = {
  interval: duration.default(d.health_check.interval),
  timeout: duration.default(d.health_check.timeout),
  fall: count(1).default(d.health_check.fall),
  rise: count(1).default(d.health_check.rise),
}

const healthCheck = z.strictObject(healthCheckShape)
  .superRefine((h, ctx) => {
    // A probe that may outlast the interval would overlap the next one.
    if (isPositive(h?.timeout) && isPositive(h?.interval) && h.timeout > h.interval) {
      ctx.addIssue({
        code: 'custom',
        path: ['timeout'],
        message: `timeout (${formatDuration(h.timeout)}) must be less than or equal to ` +
          `interval (${formatDuration(h.interval)})`,
      })
    }
  }, always)
  .default(() => ({ ...d.health_check }))

const timeoutsShape = {
  connect: duration.default(d.timeouts.connect),
  stall: duration.default(d.timeouts.stall),
  linger: duration.default(d.timeouts.linger),
  heartbeat: duration.default(d.timeouts.heartbeat),
}

const logShape = {
  level: z.enum(['error', 'warn', 'info', 'debug']).default(d.log.level),
  format: z.enum(['json', 'text']).default(d.log.format),
}

const log = z.strictObject(logShape).default(() => ({ ...d.log }))

const stateDir = (dflt: string) =>
  z.string().min(1, { error: 'must not be empty' }).default(dflt)

// ---------------------------------------------------------------------------------------------
// The front's config

const NAME_RE = /^[A-Za-z0-9_.-]+$/

const replicaShape = {
  name: z.string().regex(NAME_RE, { error: "must be letters, digits, '_', '.' or '-'" }),
  address: target.optional(),
  agent: target.optional(),
  tls: tls.optional(),
  command: command.optional(),
}

const BOTH = 'give either address (direct) or agent (through an agent), not both'
const NEITHER = "required: give either address (direct: the server's host:port) " +
  "or agent (through an agent: the agent's host:port)"
const AGENT_COMMAND = "an agent replica's server is supervised by its agent: " +
  "put command in the agent's config"
const DIRECT_TLS = 'tls is for agent replicas only (the log channel to an agent); ' +
  'a direct replica has no TLS'

// A value given but invalid is not undefined (zod leaves a marker), so these checks see what
// the user wrote even when a sibling failed: "both" or "neither" is reported in the same pass.
const replica = z.strictObject(replicaShape)
  .superRefine((r, ctx) => {
    if (typeof r !== 'object' || r === null || Array.isArray(r)) return
    const direct = r.address !== undefined
    const viaAgent = r.agent !== undefined
    if (direct && viaAgent) {
      ctx.addIssue({ code: 'custom', path: [], message: BOTH })
    } else if (!direct && !viaAgent) {
      ctx.addIssue({ code: 'custom', path: [], message: NEITHER })
    }
    if (viaAgent && r.command !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['command'], message: AGENT_COMMAND })
    }
    if (!viaAgent && r.tls !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['tls'], message: DIRECT_TLS })
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

type ReplicaInput = Partial<Record<'name' | 'address' | 'agent', unknown>> | undefined

// Items may be half-invalid here (zod keeps going): check only what parsed.
function checkUnique (list: ReplicaInput[], ctx: z.RefinementCtx): void {
  const names = new Map<string, number>()
  // Direct and agent addresses together: two replicas behind one port are one replica.
  const addresses = new Map<string, number>()
  list.forEach((r, i) => {
    if (typeof r?.name === 'string') {
      const first = names.get(r.name)
      if (first === undefined) names.set(r.name, i)
      else {
        const message = `duplicate name '${r.name}' (also replicas[${first}])`
        ctx.addIssue({ code: 'custom', path: [i, 'name'], message })
      }
    }
    for (const key of ['address', 'agent'] as const) {
      const hp = r?.[key]
      if (!isHostPort(hp)) continue
      const a = formatHostPort(hp)
      const first = addresses.get(a)
      if (first === undefined) addresses.set(a, i)
      else {
        const message = `duplicate address ${a} (also replicas[${first}])`
        ctx.addIssue({ code: 'custom', path: [i, key], message })
      }
    }
  })
}

const replicas = z.array(replica, { error: 'expected a list of replicas' })
  .min(2, { error: 'at least two replicas are needed: a primary and a backup' })
  .superRefine((list, ctx) => {
    if (Array.isArray(list)) checkUnique(list, ctx)
  }, always)

const limitsShape = {
  max_connections: count(1).default(d.limits.max_connections),
  max_lag: size.default(d.limits.max_lag).refine((n) => n >= MIN_MAX_LAG, {
    error: `must be at least ${formatSize(MIN_MAX_LAG)}: a smaller window makes no sense, ` +
      'a single socket read can be that large and would stall every connection',
  }),
  max_memory: size.default(d.limits.max_memory).refine((n) => n >= 4 * MIN_MAX_LAG, {
    error: `must be at least ${formatSize(4 * MIN_MAX_LAG)}: every connection that holds ` +
      'anything needs a few socket reads of room',
  }),
}

const ARBITER_KINDS_LATER = ['tas', 'etcd']

// Not strict: a later kind (tas: address, etcd: endpoints) brings its own keys; report the
// kind as unavailable rather than each of its keys as unknown.
const arbiter = z.looseObject({
  kind: z.string({ error: 'expected file' }).default(d.arbiter.kind),
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
    if (key === 'kind') continue
    ctx.addIssue({ code: 'custom', path: [key], message: unknownKeyMessage(key, ['kind']) })
  }
}).transform((): Config['arbiter'] => ({ kind: 'file' }))

const adminShape = {
  listen: hostPort.default(() => ({ ...d.admin.listen })),
  token: z.string()
    .min(1, { error: 'must not be empty (leave token out for no authentication)' })
    .optional(),
}

const reseedShape = {
  command,
  timeout: duration.default(RESEED_DEFAULTS.timeout),
  cut_timeout: duration.default(RESEED_DEFAULTS.cut_timeout),
  open_connections: z.enum(['reattach', 'close']).default(RESEED_DEFAULTS.open_connections),
  auto: z.boolean({ error: 'expected true or false' }).default(RESEED_DEFAULTS.auto),
}

const rootShape = {
  listen: hostPort.default(() => ({ ...d.listen })),
  state_dir: stateDir(d.state_dir),
  output_commit: z.enum(['ack', 'match', 'none']).default(d.output_commit),
  protocol: z.enum(PROTOCOL_NAMES).default(d.protocol),
  on_backup_loss: z.enum(['continue', 'block']).default(d.on_backup_loss),
  replicas,
  health_check: healthCheck,
  timeouts: z.strictObject(timeoutsShape).default(() => ({ ...d.timeouts })),
  limits: z.strictObject(limitsShape).default(() => ({ ...d.limits })),
  arbiter: arbiter.default(() => ({ ...d.arbiter })),
  log,
  admin: z.strictObject(adminShape).default(() => ({ listen: { ...d.admin.listen } })),
  reseed: z.strictObject(reseedShape).optional(),
}

interface RootInput {
  listen?: unknown
  admin?: { listen?: unknown }
  replicas?: unknown
}

// Same port twice can only fail at bind time, or worse, loop the proxy into itself. `reaches`
// says whether a connect would land on a listener, spellings aside (localhost, [::1], 0.0.0.0).
function checkNotListen (c: RootInput | undefined, ctx: z.RefinementCtx): void {
  const listen = isHostPort(c?.listen) && c.listen.port !== 0 ? c.listen : undefined
  const admin = isHostPort(c?.admin?.listen) && c.admin.listen.port !== 0
    ? c.admin.listen
    : undefined
  if (listen && admin && (reaches(admin, listen) || reaches(listen, admin))) {
    const message = `must differ from listen (${formatHostPort(listen)})`
    ctx.addIssue({ code: 'custom', path: ['admin', 'listen'], message })
  }
  if (!Array.isArray(c?.replicas)) return
  c.replicas.forEach((r: ReplicaInput, i) => {
    for (const key of ['address', 'agent'] as const) {
      const hp = r?.[key]
      if (!isHostPort(hp)) continue
      let message: string | undefined
      if (listen && reaches(hp, listen)) {
        message = `must differ from listen (${formatHostPort(listen)}): ` +
          'the proxy would connect to itself'
      } else if (admin && reaches(hp, admin)) {
        message = `must differ from admin.listen (${formatHostPort(admin)}): ` +
          'the proxy would connect to its own admin endpoint'
      }
      if (message === undefined) continue
      ctx.addIssue({ code: 'custom', path: ['replicas', i, key], message })
    }
  })
}

export const root = z.strictObject(rootShape)
  .superRefine((c, ctx) => checkNotListen(c, ctx), always)

/** Allowed keys per (normalised) object path, for "did you mean" hints. */
export const KNOWN_KEYS: KnownKeys = {
  '': Object.keys(rootShape),
  'replicas[]': Object.keys(replicaShape),
  'replicas[].tls': Object.keys(tlsShape),
  health_check: Object.keys(healthCheckShape),
  timeouts: Object.keys(timeoutsShape),
  limits: Object.keys(limitsShape),
  log: Object.keys(logShape),
  admin: Object.keys(adminShape),
  reseed: Object.keys(reseedShape),
}

// ---------------------------------------------------------------------------------------------
// The agent's config

const agentTimeoutsShape = {
  connect: timeoutsShape.connect,
  linger: timeoutsShape.linger,
}

const server = converter(parseHostPort, 'host:port, e.g. 127.0.0.1:6379', false,
  "required: the local server's host:port, e.g. 127.0.0.1:6379")
  .refine(notPortZero, { error: PORT_ZERO })

// The front sends its protocol when the log channel connects: one place to set it, so the
// two can never disagree. Named here only to say so, rather than 'unknown key'.
const AGENT_PROTOCOL = "set protocol in the front's config only: the front tells its agents"

const agentRootShape = {
  listen: hostPort.default(() => ({ ...ad.listen })),
  server,
  state_dir: stateDir(ad.state_dir),
  command: command.optional(),
  tls: tls.optional(),
  health_check: healthCheck,
  timeouts: z.strictObject(agentTimeoutsShape).default(() => ({ ...ad.timeouts })),
  log,
  protocol: z.unknown().refine(() => false, { error: AGENT_PROTOCOL }).optional(),
}

export const agentRoot = z.strictObject(agentRootShape).superRefine((c, ctx) => {
  if (isHostPort(c?.listen) && c.listen.port !== 0 && isHostPort(c.server) &&
    reaches(c.server, c.listen)) {
    const message = `must differ from listen (${formatHostPort(c.listen)}): ` +
      'the agent would connect to itself'
    ctx.addIssue({ code: 'custom', path: ['server'], message })
  }
}, always)

/** The agent's allowed keys per (normalised) object path. */
export const AGENT_KNOWN_KEYS: KnownKeys = {
  '': Object.keys(agentRootShape),
  tls: Object.keys(tlsShape),
  health_check: Object.keys(healthCheckShape),
  timeouts: Object.keys(agentTimeoutsShape),
  log: Object.keys(logShape),
}

// ---------------------------------------------------------------------------------------------

function isPositive (n: unknown): n is number {
  return typeof n === 'number' && n > 0
}

function isHostPort (v: unknown): v is HostPort {
  return typeof v === 'object' && v !== null &&
    typeof (v as HostPort).host === 'string' && typeof (v as HostPort).port === 'number'
}
