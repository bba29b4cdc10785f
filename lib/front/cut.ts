// A re-seed's cut (front/reseed.ts runs the command; this is the front's part of it):
//
//   hold input ──▶ every serving replica (the source too) has processed every entry and
//   produced every output ──▶ finish(): the command completes the copy ──▶ the target is
//   recorded in sync (arbiter) ──▶ it is attached as a backup from this point of the log
//   on: each open connection goes on on it (reattach) or is closed ──▶ input resumes
//
// Input resumes whatever happens; a target that did not join stays out of service.

import { performance } from 'node:perf_hooks'
import { FtproxyError } from '../errors.js'
import type { Replica } from './replica.js'
import type { Roles, RolesOptions } from './roles.js'
import { pollUntil } from '../util/timer.js'

/** What a re-seed's cut did. */
export interface CutInfo {
  /** How long client input was held (ms). */
  pause_ms: number
  /** Connections that go on on the new backup, and those closed at the cut. */
  reattached: number
  closed: number
}

export interface CutOptions {
  /** The re-seed's deadline (performance.now() ms). */
  deadline: number
  /** The longest input may be held (ms): reseed.cut_timeout. */
  holdMs: number
  policy: 'reattach' | 'close'
  /** The target's incarnation when the re-seed began: the copy went into that process. */
  since: string | null
}

const cutFailed = (msg: string, reason: string): FtproxyError =>
  new FtproxyError('ERR_FTPROXY_RESEED_FAILED', msg, { reason })
const targetFailed = (target: Replica): FtproxyError =>
  cutFailed(`${target.name} exited during the re-seed`, 'target_exited')

export async function cut (roles: Roles, o: RolesOptions, target: Replica, source: Replica,
  finish: (holdEnd: number) => Promise<void>, opts: CutOptions): Promise<CutInfo> {
  const life = o.lifecycle
  if (!life.is('serving')) throw cutFailed('a failover or switchover is under way', 'busy')
  if (target.role !== 'seeding') throw targetFailed(target)
  const t0 = performance.now()
  life.set('switching', `re-seed cut of ${target.name}`)
  roles.cutting = true
  o.hooks.hold()
  try {
    const stall = o.config().timeouts.stall
    const holdEnd = t0 + opts.holdMs
    const gone = (): boolean => !source.serving || target.role !== 'seeding' ||
      !life.is('switching')
    if (!await roles.untilInSync(Math.min(opts.deadline, holdEnd, t0 + stall), gone)) {
      throw cutFailed(`${source.name} did not get in sync for the cut`, 'not_in_sync')
    }
    // The command finishes the copy by holdEnd, or it is stopped and the re-seed fails.
    await finish(holdEnd)
    // The copy went into the process that was there when the re-seed began, if it still is.
    const after = await o.incarnation(target)
    if (target.role !== 'seeding' || !life.active) throw cutFailed('interrupted', 'interrupted')
    if (opts.since !== after) {
      throw cutFailed(`${target.name} restarted during the re-seed`, 'restarted')
    }
    // None known (an agent's is told by its next session's handshake, recorded then).
    if (after !== null) roles.incarnations[target.name] = after
    else delete roles.incarnations[target.name]
    await recordJoin(roles, target)
    // Its process exited while the record was written (Roles.onExit): the record is undone.
    if (target.role !== 'seeding') {
      await roles.persistStale()
      throw targetFailed(target)
    }
    const info = join(roles, o, target, source, opts.policy)
    // Closed connections end on every server before anything after them is let in.
    await pollUntil(() => info.closing.every((id) => !o.conns.has(id)), t0 + stall)
    return { pause_ms: ms(t0), reattached: info.reattached, closed: info.closing.length }
  } finally {
    roles.cutting = false
    if (life.is('switching') && !roles.holding) life.set('serving', 'cut over')
    o.hooks.release()
    o.conns.afterProgress()
  }
}

// The target is in sync from now on: recorded first, acted on after.
async function recordJoin (roles: Roles, target: Replica): Promise<void> {
  roles.joining = target
  const won = await roles.cas({ epoch: roles.state.epoch + 1, primary: null })
  roles.joining = null
  if (won) return
  roles.stopServing(roles.lost(`the re-seed of ${target.name}`))
  throw cutFailed(`could not record the re-seed of ${target.name}`, 'arbiter')
}

function join (roles: Roles, o: RolesOptions, target: Replica, source: Replica,
  policy: 'reattach' | 'close'): { reattached: number, closing: number[] } {
  roles.setRole(target, 'backup', `re-seeded from ${source.name}`)
  const t = roles.attach(target, true)
  if (target.viaAgent) target.health.stop() // from now on its channel tells
  const { closing, reattached } = o.conns.join(target, policy, (conn, replay) => {
    t.open(conn, replay)
  })
  roles.reportProtection(`${target.name} re-seeded`)
  for (const c of closing) c.closeAtCut()
  return { reattached, closing: closing.map((c) => c.id) }
}

const ms = (from: number): number => Math.round((performance.now() - from) * 100) / 100
