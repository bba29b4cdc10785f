// What Linux's /proc says about a process: enough to tell "the very process we started" from a
// later one that got the same pid. Every helper answers null/false where /proc is missing
// (another OS, a sandbox): callers then know nothing, and must not act on a guess.

import fs from 'node:fs'

export interface ProcStat {
  /** One letter: R, S, D, Z (zombie), T, ... */
  state: string
  /** The session id: a process started with setsid() (detached) leads its own: session == pid. */
  session: number
  /** Field 22, starttime: clock ticks since boot, as text (it is an unbounded integer). */
  startTime: string
}

/** /proc/<pid>/stat parsed, or null if there is no such process (or no /proc). */
export function procStat (pid: number): ProcStat | null {
  if (!Number.isSafeInteger(pid) || pid <= 0) return null
  let text: string
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return null
  }
  // `pid (comm) state ppid ...`: comm may hold spaces and ')', so the fields after it start
  // after the LAST ')'. There, index 0 is field 3 (state), so field N is index N - 3.
  const close = text.lastIndexOf(')')
  if (close === -1) return null
  const fields = text.slice(close + 1).trim().split(/\s+/)
  const [state, session, startTime] = [fields[0], fields[6 - 3], fields[22 - 3]]
  if (state === undefined || session === undefined || startTime === undefined) return null
  if (!/^\d+$/.test(startTime) || !/^-?\d+$/.test(session)) return null
  return { state, session: Number(session), startTime }
}

/** The process's start time (clock ticks since boot, as text); null if it does not exist. */
export function startTime (pid: number): string | null {
  return procStat(pid)?.startTime ?? null
}

/**
 * Whether pid still names the process that started at startTime. A zombie counts as gone: it
 * has exited, and whoever reaps it (init, for an orphan) may take its time.
 */
export function isAlive (pid: number, startTime: string): boolean {
  const stat = procStat(pid)
  return stat !== null && stat.state !== 'Z' && stat.startTime === startTime
}

/** This boot's id: start times count from boot, so they compare only within one boot. */
export function bootId (): string | null {
  try {
    return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || null
  } catch {
    return null
  }
}
