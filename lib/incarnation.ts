// Which server process a replica is: its incarnation. The arbiter's state records, per
// replica, the incarnation it vouches for; a server that is not that process any more (it
// restarted, and with it lost its state) is never served from nor counted as in sync until
// it is re-seeded.
//
//   supervised by the front   proc:<pid>@<start time>    (the process itself)
//   protocol resp             redis:<run_id>             (INFO server: drawn at its start)
//   agent replica             the agent's report          (its own supervision or run_id)
//   otherwise                 null: cannot be told (check-config warns)

import type { HostPort } from './address.js'
import { STOPPED } from './arbiter/index.js'
import { protocolFor } from './protocol/index.js'
import type { ProtocolName } from './protocol/types.js'
import { dial } from './replica/dial.js'
import { runningTimeout } from './util/timer.js'

/** What a replica's incarnation can be read from. */
export interface IncarnationSource {
  name: string
  address: HostPort
  /** The supervisor's pid@start time, if the front runs the server (null: none running). */
  supervised: (() => string | null) | null
  /** The agent's report (agent replicas; null until its channel said). */
  agent: (() => string | null) | null
  /**
   * A connection already open to the server to ask on (resp: the applier's control
   * connection), so that no connection is opened at a moment unrelated to the log; null or
   * absent: one is opened for the question.
   */
  ask?: ((request: Buffer) => Promise<Buffer> | null) | null
}

// How a Redis names its process: the resp control dialect's question (INFO server) and
// its reading of the answer (run_id), as its control connection asks at every connect.
const { identity: INFO_SERVER, identityOf: runIdOf } = respIdentity()

function respIdentity (): { identity: Buffer, identityOf: (reply: Buffer) => string | null } {
  const { identity, identityOf } = protocolFor('resp').control ?? {}
  if (!identity || !identityOf) throw new TypeError('resp names no identity')
  return { identity, identityOf }
}

/** Its incarnation now; null when it cannot be told (or the server did not say in time). */
export async function readIncarnation (
  r: IncarnationSource, protocol: ProtocolName, timeout: number
): Promise<string | null> {
  return (await readIdentity(r, protocol, timeout)).id
}

/** An incarnation read: `refused`, the server answered that it will not say (see below). */
export interface IdentityRead { id: string | null, refused: boolean }

/**
 * ...and whether the server refused to say: an error reply (requirepass, ACLs, a renamed
 * INFO) is a definite answer that it cannot be told, where silence may only mean busy.
 */
export async function readIdentity (
  r: IncarnationSource, protocol: ProtocolName, timeout: number
): Promise<IdentityRead> {
  const none = { id: null, refused: false }
  if (r.agent) return { id: r.agent(), refused: false }
  if (r.supervised) {
    const proc = r.supervised()
    return { id: proc === null ? null : `proc:${proc}`, refused: false }
  }
  if (protocol !== 'resp') return none
  const asked = r.ask?.(INFO_SERVER) ?? null
  // A connection that failed (the server restarted under it) is no answer: ask anew.
  const reply = (asked ? await within(asked, timeout).catch(() => null) : null) ??
    await redisInfo(r.address, timeout).catch(() => null)
  if (reply === null) return none
  if (reply[0] === 0x2d) return { id: null, refused: true } // '-'
  const id = runIdOf(reply)
  return { id: id === null ? null : `redis:${id}`, refused: false }
}

/** p's value, or null if it takes longer than ms. */
export function within<T> (p: Promise<T | null>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<null>((resolve) => { timer = setTimeout(resolve, ms, null) })
  return Promise.race([p, late]).finally(() => clearTimeout(timer))
}

// INFO server's reply (as far as its run_id, or an error line), on a connection of its own
// (closed at once); null if none came in time.
async function redisInfo (address: HostPort, timeout: number): Promise<Buffer | null> {
  const socket = await dial(address, timeout, 'incarnation check')
  return await new Promise((resolve) => {
    let reply = Buffer.alloc(0)
    const done = (answer: Buffer | null): void => {
      timer.clear()
      socket.destroy()
      resolve(answer)
    }
    const timer = runningTimeout(timeout, () => done(null))
    socket.on('data', (d: Buffer) => {
      reply = Buffer.concat([reply, d])
      if (runIdOf(reply) !== null || (reply[0] === 0x2d && reply.includes('\r\n'))) done(reply)
      else if (reply.length > 64 * 1024) done(null)
    })
    socket.on('close', () => done(null))
    socket.write(INFO_SERVER)
  })
}

/** How a replica's incarnation compares with the one recorded. */
export type Verdict =
  | 'same'      // the process the state vouches for
  | 'unknown'   // nothing recorded, or it cannot be told: taken as it is (and recorded)
  | 'stopped'   // the front stopped it on purpose, with every other: all came back empty
  | 'changed'   // another process: whatever it held is gone

export function compare (recorded: string | undefined, now: string | null): Verdict {
  if (recorded === undefined || now === null) return 'unknown'
  if (recorded === now) return 'same'
  return recorded === STOPPED ? 'stopped' : 'changed'
}

export interface StartupCheck {
  /** Replicas to mark stale, with what changed. */
  stale: Array<{ name: string, was: string, now: string }>
  /** Every replica the state vouched for lost its state: nothing may serve. */
  lost: boolean
}

/**
 * At a front's start: which replicas not stale in the state are not the process it vouched
 * for (STOPPED ones came back empty, but so did every other: close() marks them stale
 * otherwise).
 */
export function checkAtStart (
  replicas: ReadonlyArray<{ name: string, stale: boolean, now: string | null }>,
  recorded: Readonly<Record<string, string>>
): StartupCheck {
  const live = replicas.filter((r) => !r.stale)
  const stale = live
    .filter((r) => compare(recorded[r.name], r.now) === 'changed')
    .map((r) => ({ name: r.name, was: recorded[r.name] ?? '', now: r.now ?? '' }))
  return { stale, lost: stale.length > 0 && stale.length === live.length }
}

/** A reachable server that did not say which process it is, where one is on record. */
export const UNREADABLE = 'unreadable'

/**
 * At a front's start: a replica's incarnation. One that can be told (`tellable`: a direct
 * Redis) with one on record is asked again until `ms` have passed (unless it refuses to
 * say: then it cannot be told, as before it was recorded); still silent, it is
 * UNREADABLE, which is not the process on record: a server that restarted and is busy (a
 * long command, a big load) is not taken for the one the state vouched for.
 */
export async function readAtStart (read: () => Promise<IdentityRead>,
  recorded: string | undefined, tellable: boolean, ms: number): Promise<string | null> {
  const deadline = Date.now() + ms
  for (;;) {
    const { id, refused } = await read()
    if (id !== null || refused || !tellable || recorded === undefined || recorded === STOPPED) {
      return id
    }
    if (Date.now() > deadline) return UNREADABLE
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** Whether two records of incarnations (ArbiterState.incarnations) say the same. */
export function sameRecord (a: Record<string, string>, b: Record<string, string>): boolean {
  const entries = Object.entries(a)
  return entries.length === Object.keys(b).length && entries.every(([k, v]) => b[k] === v)
}
