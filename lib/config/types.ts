// The shapes a parsed config takes: what the rest of ftproxy reads. Durations are in
// milliseconds and sizes in bytes by the time anything sees them.

import type { HostPort } from '../address.js'
import type { ProtocolName } from '../protocol/types.js'

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
  /**
   * agent replica: mutual TLS to the agent (client certificate, key, and the CA that signed
   * the agent's)
   */
  tls?: TlsConfig
  /** direct replica: a command to supervise: argv; argv[0] 'ftproxy' means this binary. */
  command?: string[]
}

type OutputCommit = 'ack' | 'match' | 'none'
type OnBackupLoss = 'continue' | 'block'

export interface Config {
  /** Absolute path of the file this came from ('<embedded>' when none). */
  file: string
  listen: HostPort
  /** Resolved against the process working directory. */
  state_dir: string
  output_commit: OutputCommit
  /**
   * How client input and server output are framed: raw (bytes, per-connection order only),
   * line or resp (requests of all connections go to every replica in one order).
   */
  protocol: ProtocolName
  on_backup_loss: OnBackupLoss
  replicas: ReplicaConfig[]
  /** Durations in milliseconds. */
  health_check: { interval: number, timeout: number, fall: number, rise: number }
  /** Durations in milliseconds. */
  timeouts: { connect: number, stall: number, linger: number, heartbeat: number }
  /** max_lag and max_memory in bytes. */
  limits: { max_connections: number, max_lag: number, max_memory: number }
  arbiter: { kind: 'file' }
  log: { level: 'error' | 'warn' | 'info' | 'debug', format: 'json' | 'text' }
  admin: { listen: HostPort, token?: string }
  /** Re-protection: how a stale replica is brought back in sync (absent: it stays stale). */
  reseed?: ReseedConfig
}

export interface ReseedConfig {
  /** argv; prints `ready` after its prepare phase, gets `cut` on stdin, exits 0 when done. */
  command: string[]
  /** The whole re-seed, prepare included (ms). */
  timeout: number
  /** The longest client input is held for the cut (ms; within `timeout` too). */
  cut_timeout: number
  /** What becomes of client connections open at the cut. */
  open_connections: 'reattach' | 'close'
  /** Re-seed without being asked: after a restart, a return, a divergence. */
  auto: boolean
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
  /**
   * Optional mutual TLS on the log channel (this agent's certificate, key, and the CA that
   * signed the front's).
   */
  tls?: TlsConfig
  /** Probes of the local server. Durations in milliseconds. */
  health_check: { interval: number, timeout: number, fall: number, rise: number }
  /** Durations in milliseconds. */
  timeouts: { connect: number, linger: number }
  log: { level: 'error' | 'warn' | 'info' | 'debug', format: 'json' | 'text' }
}
