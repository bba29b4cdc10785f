// Configuration: YAML → validated, typed, defaults filled. Parsed once; durations and sizes
// are converted here (to milliseconds and bytes) and nowhere else.
//
// Every problem becomes a ConfigIssue {path, line, message}; all of them are collected and
// thrown together as one ConfigError, so a user fixes a file in one pass, not one per run.
//
// Two dialects share that machinery and their pieces (host:port, durations, health_check,
// timeouts, log, tls): the front's config (parseConfig) and the agent's (parseAgentConfig).
//
//   types.ts     Config, ReplicaConfig, AgentConfig, TlsConfig …
//   defaults.ts  every default, and the limits values are held to
//   units.ts     durations and sizes ⇄ ms and bytes
//   schema.ts    the zod schemas of both dialects
//   issues.ts    zod issues → key paths and YAML lines
//   load.ts      parse and load (YAML, flags)
//   files.ts     the config file read with a cap; tls PEM files parsed and matched
//   render.ts    back to YAML
//
// Addresses (HostPort, parseHostPort, formatHostPort, isLoopback, reaches) are in
// ../address.ts.

export type { AgentConfig, Config, ReplicaConfig, ReseedConfig, TlsConfig } from './types.js'
export { AGENT_DEFAULTS, DEFAULTS } from './defaults.js'
export { formatDuration, formatSize, parseDuration, parseSize } from './units.js'
export {
  FLAGS_FILE, agentConfigFromFlags, loadAgentConfig, loadConfig, parseAgentConfig, parseConfig,
} from './load.js'
export { renderAgentConfig, renderConfig } from './render.js'
export { configWarnings } from './warnings.js'
