// The front's deciding core (log, connections, roles) wired to fakes: an arbiter whose
// test-and-sets the test decides, transports that record entries and emit what the test
// says, client sockets that record writes. No sockets, no timers, no processes.

import { EventEmitter } from 'node:events'
import type { Arbiter, ArbiterState } from '../../lib/arbiter/index.js'
import { parseConfig } from '../../lib/config/index.js'
import { FtproxyError } from '../../lib/errors.js'
import type { ClientSocket, Conn } from '../../lib/front/conn.js'
import { createCore, type Core } from '../../lib/front/core.js'
import { newCounters } from '../../lib/front/counters.js'
import type { Entry } from '../../lib/front/log.js'
import { Replica } from '../../lib/front/replica.js'
import type { FrontEvents } from '../../lib/front/roles.js'
import { createLogger } from '../../lib/logger.js'
import type { Transport, TransportEvents } from '../../lib/replica/transport.js'
import { EventLog } from './events.js'

type CasOutcome = 'win' | 'lose' | 'throw' | 'enospc'

class FakeArbiter implements Arbiter {
  stored: ArbiterState = { epoch: 0, primary: null, stale: [], owner: '', incarnations: {} }
  /** Outcomes of the next test-and-sets, in order ('win' when empty: if the epoch matches). */
  readonly outcomes: CasOutcome[] = []
  /** While set, every test-and-set waits for it. */
  gate: Promise<void> | null = null
  calls = 0

  async open (): Promise<ArbiterState> {
    return { ...this.stored, stale: [...this.stored.stale] }
  }

  async compareAndSet (expectEpoch: number, next: ArbiterState): Promise<boolean> {
    this.calls++
    if (this.gate) await this.gate
    const outcome = this.outcomes.shift() ?? 'win'
    if (outcome === 'throw') throw new Error('arbiter unreachable')
    if (outcome === 'enospc') {
      const details = { file: 'state.json', cause: 'ENOSPC' }
      throw new FtproxyError('ERR_FTPROXY_STATE', 'state.json: cannot write: ENOSPC', details)
    }
    if (outcome === 'lose' || expectEpoch !== this.stored.epoch) return false
    this.stored = { ...next, owner: 'fake' }
    return true
  }

  async close (): Promise<void> {}
}

class FakeTransport extends EventEmitter<TransportEvents> implements Transport {
  sent = 0
  readonly entries: Entry[] = []
  readonly paused = new Set<number>()
  closed = false
  readonly endsConfirmed = true
  readonly prober = null
  readonly queued = 0

  get unacked (): number {
    return this.entries.length
  }

  apply (entry: Entry): void {
    this.entries.push(entry)
    this.sent = entry.seq
  }

  /** The server took every entry handed over so far. */
  ackAll (): void {
    for (const e of this.entries.splice(0)) this.emit('ack', e)
  }

  output (conn: number, text: string): void {
    this.emit('output', conn, Buffer.from(text))
  }

  pause (conn: number): void {
    this.paused.add(conn)
  }

  resume (conn: number): void {
    this.paused.delete(conn)
  }

  close (): void {
    this.closed = true
  }
}

class FakeSocket implements ClientSocket {
  readonly written: Buffer[] = []
  ended = false
  destroyed = false
  paused = false
  writableLength = 0

  get text (): string {
    return Buffer.concat(this.written).toString()
  }

  write (data: Buffer): boolean {
    this.written.push(data)
    return true
  }

  end (): void { this.ended = true }
  destroy (): void { this.destroyed = true }
  pause (): void { this.paused = true }
  resume (): void { this.paused = false }
}

export interface FakeFront extends Core {
  arbiter: FakeArbiter
  replicas: Replica[]
  transports: Map<string, FakeTransport>
  events: EventLog
  front: EventEmitter<FrontEvents>
  hooks: { hold: number, release: number, stop: number }
  replica (name: string): Replica
  transport (name: string): FakeTransport
  /** A client connection, OPEN logged. */
  connect (): { c: Conn, socket: FakeSocket }
}

/** A core with replicas `names` (the first primary), started as Front.begin would. */
export async function fakeFront (names = ['a', 'b'], yaml = ''): Promise<FakeFront> {
  const list = names.map((n, i) => `  - name: ${n}\n    address: 127.0.0.1:${7101 + i}\n`).join('')
  const text = `listen: 127.0.0.1:0\nstate_dir: ./state\n${yaml}\nreplicas:\n${list}`
  const config = parseConfig(text, 'fake.yaml')
  const events = new EventLog()
  const log = createLogger({ stream: events.stream(), level: 'debug' })
  const replicas = config.replicas.map((r, i) => new Replica(i, r, config, log))
  const transports = new Map<string, FakeTransport>()
  const arbiter = new FakeArbiter()
  const front = new EventEmitter<FrontEvents>()
  const hooks = { hold: 0, release: 0, stop: 0 }
  const core = createCore({
    config: () => config,
    log,
    arbiter,
    replicas,
    transport: (r) => {
      const tr = new FakeTransport()
      transports.set(r.name, tr)
      return tr
    },
    hooks: {
      hold: () => { hooks.hold++ },
      release: () => { hooks.release++ },
      stop: () => { hooks.stop++ },
    },
    events: front,
    counters: newCounters(),
  })
  core.roles.load(await arbiter.open())
  for (const r of replicas) r.health.state = 'up'
  await core.roles.takeEpoch()
  for (const r of replicas) if (r.serving) core.roles.attach(r)
  core.lifecycle.set('serving', 'test')
  core.roles.reportProtection('startup')
  const byName = <T>(m: Map<string, T> | T[], name: string): T => {
    const v = m instanceof Map ? m.get(name) : m.find((r) => (r as Replica).name === name)
    if (v === undefined) throw new Error(`no ${name}`)
    return v
  }
  return {
    ...core,
    arbiter,
    replicas,
    transports,
    events,
    front,
    hooks,
    replica: (name) => byName(replicas, name),
    transport: (name) => byName(transports, name),
    connect: () => {
      const socket = new FakeSocket()
      const c = core.conns.open(socket)
      c.append('OPEN')
      return { c, socket }
    },
  }
}
