// The front's own descriptors: how many are open, the soft limit, how many clients that limit
// allows, and whether a failed connect or probe was the front's own shortage rather than the
// replica's fault (HAProxy calls these "local resource errors" and never blames a server).

import fs from 'node:fs'

/**
 * errno codes that describe this host, not the peer: out of descriptors (process, system),
 * of socket buffers or memory, or of local ports (EADDRNOTAVAIL: an unbound connect found no
 * free ephemeral port towards that address).
 */
const LOCAL_CODES: ReadonlySet<string> = new Set([
  'EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM', 'EADDRNOTAVAIL',
])

/** Free descriptors below which a name lookup that failed is put down to the shortage. */
const LOOKUP_MARGIN = 8

/**
 * Whether `err` is the front's own lack of resources. A name lookup (a replica configured by
 * host name) fails as ENOTFOUND when getaddrinfo cannot open /etc/hosts or a DNS socket, so a
 * getaddrinfo error counts too when descriptors are short right now.
 */
export function isLocalResourceError (err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false
  const { code, syscall } = err as NodeJS.ErrnoException
  if (typeof code === 'string' && LOCAL_CODES.has(code)) return true
  return syscall === 'getaddrinfo' && fewerFreeFdsThan(LOOKUP_MARGIN)
}

/**
 * Whether fewer than `n` descriptors are free: opens up to n and closes them at once. Cheap
 * (2n syscalls), where counting /proc/self/fd costs milliseconds per 10 000 descriptors.
 */
function fewerFreeFdsThan (n: number): boolean {
  const opened: number[] = []
  try {
    while (opened.length < n) opened.push(fs.openSync('/dev/null', 'r'))
    return false
  } catch (err) {
    return LOCAL_CODES.has((err as NodeJS.ErrnoException).code ?? '')
  } finally {
    for (const fd of opened) fs.closeSync(fd)
  }
}

/**
 * Descriptors this process has open (Linux /proc, else /dev/fd). O(open descriptors): about
 * 1 ms per 1000, for start-up checks, metrics and rare paths, not per connection. Throws
 * what readdir throws (EMFILE when none is left to read the directory with).
 */
export function openFdCount (): number {
  for (const dir of ['/proc/self/fd', '/dev/fd']) {
    let entries: string[]
    try {
      entries = fs.readdirSync(dir)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue
      throw err
    }
    // The directory's own descriptor, open while it was read, is listed too.
    return Math.max(0, entries.length - 1)
  }
  throw Object.assign(new Error('no /proc/self/fd or /dev/fd to count descriptors'),
    { code: 'ENOENT' })
}

/**
 * The soft "Max open files" limit (RLIMIT_NOFILE): Infinity when unlimited, null where
 * /proc/self/limits does not exist (not Linux). Throws any other read error.
 */
export function fdLimit (): number | null {
  let text: string
  try {
    text = fs.readFileSync('/proc/self/limits', 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
  return parseFdLimit(text)
}

/** The soft "Max open files" of a /proc/<pid>/limits text; null when the line is missing. */
export function parseFdLimit (text: string): number | null {
  for (const line of text.split('\n')) {
    const m = /^Max open files\s+(\S+)\s+(\S+)/.exec(line)
    if (!m) continue
    const soft = m[1] as string
    if (soft === 'unlimited') return Infinity
    const n = Number(soft)
    return Number.isSafeInteger(n) && n >= 0 ? n : null
  }
  return null
}

/**
 * Client connections a descriptor limit allows: each takes its own socket and one per
 * replica, after `reserve` descriptors for everything else (listeners, logs, state, checks).
 * Infinity for an unlimited limit.
 */
export function fdBudget (limit: number, replicas: number, reserve: number): number {
  return Math.max(0, Math.floor((limit - reserve) / (1 + replicas)))
}
