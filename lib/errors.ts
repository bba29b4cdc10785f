// Typed errors with stable codes. Tests and callers check `err.code`, never message text.

export type ErrorCode =
  | 'ERR_FTPROXY_CONFIG'          // the configuration is invalid
  | 'ERR_FTPROXY_LOCKED'          // another front holds the state directory
  | 'ERR_FTPROXY_STATE'           // the state file is unreadable or malformed
  | 'ERR_FTPROXY_ARBITER_LOST'    // a test-and-set on the arbiter was lost
  | 'ERR_FTPROXY_NO_REPLICA'      // no replica can serve
  | 'ERR_FTPROXY_CONNECT_TIMEOUT' // a connect to a replica timed out
  | 'ERR_FTPROXY_FENCED'          // a peer refused an epoch older than it has seen
  | 'ERR_FTPROXY_EPOCH_JUMP'      // an agent refused an epoch far beyond the newest it has seen
  | 'ERR_FTPROXY_FRAME'           // a log-channel frame could not be decoded or encoded
  | 'ERR_FTPROXY_PROTOCOL'        // a log-channel peer broke the handshake or protocol
  | 'ERR_FTPROXY_HEARTBEAT'       // nothing heard on a log channel within timeouts.heartbeat
  | 'ERR_FTPROXY_TLS'             // the front or the agent refused the other's TLS certificate
  | 'ERR_FTPROXY_SERVER_DOWN'     // an agent's server is down
  | 'ERR_FTPROXY_NOT_IN_SYNC'     // a planned switchover found no backup in sync
  | 'ERR_FTPROXY_CONTROL_CLOSED'  // the server closed ftproxy's control connection
  | 'ERR_FTPROXY_SERVER_RESTARTED' // the control connection reconnected to another process
  | 'ERR_FTPROXY_CONTROL_PROTOCOL' // a server's reply on the control connection was unframeable
  | 'ERR_FTPROXY_UNHEALTHY'       // a server answered a health probe, but not as a serving one
  | 'ERR_FTPROXY_BUSY'            // no answer in time to a probe on the control connection
  | 'ERR_FTPROXY_STATE_LOST'      // every replica's server restarted: none holds the state
  | 'ERR_FTPROXY_RESEED_REFUSED'  // a re-seed cannot start (not configured, busy, no target)
  | 'ERR_FTPROXY_RESEED_FAILED'   // a re-seed started and failed (command, timeout, cut)

export class FtproxyError extends Error {
  readonly code: ErrorCode
  readonly details: Record<string, unknown>

  constructor (code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message)
    this.name = 'FtproxyError'
    this.code = code
    this.details = details
  }
}

/** One problem in a config file: the key path and, where known, its 1-based YAML line. */
export interface ConfigIssue {
  path: string
  line?: number
  message: string
}

export class ConfigError extends FtproxyError {
  readonly issues: ConfigIssue[]

  constructor (file: string, issues: ConfigIssue[]) {
    const lines = issues.map((i) =>
      `  ${file}${i.line ? `:${i.line}` : ''}: ${i.path || '(root)'}: ${i.message}`)
    super('ERR_FTPROXY_CONFIG',
      `${file}: ${issues.length} configuration error(s)\n` + lines.join('\n'), { file })
    this.name = 'ConfigError'
    this.issues = issues
  }
}
