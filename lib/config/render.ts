// Rendering: a parsed config back to YAML, durations and sizes in human units, keys in the
// documented order. parse(render(c)) gives back c.

import { Document, isMap, isSeq } from 'yaml'
import { formatHostPort } from '../address.js'
import type { Path } from './issues.js'
import type { AgentConfig, Config, TlsConfig } from './types.js'
import { formatDuration, formatSize } from './units.js'

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
    protocol: c.protocol,
    on_backup_loss: c.on_backup_loss,
    replicas: c.replicas.map((r) => ({
      name: r.name,
      ...(r.address !== undefined ? { address: formatHostPort(r.address) } : {}),
      ...(r.agent !== undefined ? { agent: formatHostPort(r.agent) } : {}),
      ...(r.tls !== undefined ? { tls: renderTls(r.tls) } : {}),
      ...(r.command !== undefined ? { command: r.command } : {}),
    })),
    health_check: renderHealthCheck(c.health_check),
    timeouts: {
      connect: formatDuration(c.timeouts.connect),
      stall: formatDuration(c.timeouts.stall),
      linger: formatDuration(c.timeouts.linger),
      heartbeat: formatDuration(c.timeouts.heartbeat),
    },
    limits: {
      max_connections: c.limits.max_connections,
      max_lag: formatSize(c.limits.max_lag),
      max_memory: formatSize(c.limits.max_memory),
    },
    arbiter: { kind: c.arbiter.kind },
    log: { level: c.log.level, format: c.log.format },
    admin,
    ...(c.reseed !== undefined
      ? {
          reseed: {
            command: c.reseed.command,
            timeout: formatDuration(c.reseed.timeout),
            cut_timeout: formatDuration(c.reseed.cut_timeout),
            open_connections: c.reseed.open_connections,
            auto: c.reseed.auto,
          },
        }
      : {}),
  }
  return toYaml(plain,
    ['health_check', 'timeouts', 'limits', 'arbiter', 'log', 'admin'],
    [...c.replicas.map((_, i) => ['replicas', i, 'command']), ['reseed', 'command']])
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
    timeouts: {
      connect: formatDuration(c.timeouts.connect),
      linger: formatDuration(c.timeouts.linger),
    },
    log: { level: c.log.level, format: c.log.format },
  }
  return toYaml(plain, ['health_check', 'timeouts', 'log'], [['command']])
}

function renderHealthCheck (h: Config['health_check']): Record<string, string | number> {
  return {
    interval: formatDuration(h.interval),
    timeout: formatDuration(h.timeout),
    fall: h.fall,
    rise: h.rise,
  }
}

function renderTls (t: TlsConfig): TlsConfig {
  return { cert: t.cert, key: t.key, ca: t.ca }
}

// Small maps and argv on one line, as in docs/design.md.
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
