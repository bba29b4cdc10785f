// A front's end of a log channel to a test agent on loopback `port`: an AgentTransport with
// short timings, its events logged, closed at the end of the test.

import type { Test } from 'tap'
import { createLogger } from '../../lib/logger.js'
import type { ProtocolName } from '../../lib/protocol/types.js'
import { AgentTransport } from '../../lib/replica/agent-transport.js'
import { EventLog } from './events.js'

let fronts = 0

export function agentTransport (tt: Test, port: number,
  opts: { protocol: ProtocolName, epoch?: number, name?: string }): {
    tr: AgentTransport, log: EventLog
  } {
  const log = new EventLog()
  const tr = new AgentTransport({
    address: { host: '127.0.0.1', port },
    frontId: `${opts.name ?? 'transport'}-${++fronts}`,
    epoch: () => opts.epoch ?? 1,
    window: 1 << 20,
    protocol: opts.protocol,
    interval: 100,
    heartbeat: 3000,
    connectTimeout: 1000,
    log: createLogger({ level: 'debug', stream: log.stream() }),
  })
  tt.teardown(() => tr.close())
  return { tr, log }
}
