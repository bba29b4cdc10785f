// What one Redis connection's session holds on its server connection (the user, the protocol
// version, the database, the name...), as the server's replies confirmed it: the requests
// that put a fresh server connection in the same session, for a replica that joins at a
// re-seed's cut (Session.carry, RespSession.carry).
//
// A session command changes the session only if the server accepts it (SELECT 99 is refused
// and leaves the database as it was), so its effect is applied when its reply is read, not
// when it is framed: replies come in order, so effects are applied in order. (Replaying a
// refused request would be harmless in itself, the joining copy refusing it too; but keeping
// only the last one *sent* would turn SELECT 3, SELECT 99 into SELECT 99: database 0.)
// A connection has a reader per replica; the first reply read for a request (whichever
// replica's) applies its effect, and a replica whose reply disagrees (one accepts, one
// refuses) makes the parts it touches uncertain. Only the last value of each part is kept: a
// connection that sends a million SELECTs keeps one (requests not answered yet are held by
// the readers anyway).
// Rules mirror Redis 7.0 (server.c helloCommand, networking.c clearClientConnectionState).

import type { ReplyMark } from './types.js'
import { RespReader, RespRequest } from './resp-reply.js'

/** The parts of a connection's session on the server that are tracked. */
export interface Values {
  /** AUTH's arguments ([password] or [user, password]) of the last login; null: none. */
  auth: readonly string[] | null
  resp3: boolean
  /** The selected database, as SELECT was given it (Redis takes only canonical integers). */
  db: string
  /** The client name; '' is none. */
  name: string
  noEvict: boolean
  /** READONLY (cluster mode only: elsewhere Redis refuses it). */
  readonly: boolean
  /** CLIENT TRACKING on: not carried (invalidations name this connection's server id). */
  tracking: boolean
  /** WATCHed keys: not carried (they live in the source's connection). */
  watch: boolean
}

/** One tracked part of the session. */
export type Slot = keyof Values

// RESET: everything back to a new connection's, but CLIENT NO-EVICT (Redis 7.0 keeps it).
const RESET = {
  auth: null, resp3: false, db: '0', name: '', readonly: false, tracking: false, watch: false,
} as const satisfies Partial<Values>
const DEFAULT: Readonly<Values> = { ...RESET, noEvict: false }

/** What a session command does to the session, by its reply. */
export interface Effect {
  /** Set when the server accepts it. */
  readonly ok?: Partial<Values>
  /** Parts it may change, in ways not known here, when the server accepts it. */
  readonly unknown?: readonly Slot[]
}

/** Everything an effect may touch. */
export function slotsOf (e: Effect): Slot[] {
  return [...Object.keys(e.ok ?? {}) as Slot[], ...e.unknown ?? []]
}

// The first byte of a reply, classed: accepted (+OK, +RESET, HELLO's map or array, EXEC's
// array or RESP3 null), refused (an error), or anything else (an attribute first: not known).
const NONE = 0
const OK = 1
const ERR = 2
const ODD = 3
const OK_BYTES = new Set([0x2b, 0x2a, 0x25, 0x5f]) // + * % _
const ERR_BYTES = new Set([0x2d, 0x21]) // - !

function classOf (first: number | undefined): number {
  if (first === undefined) return ODD
  return OK_BYTES.has(first) ? OK : ERR_BYTES.has(first) ? ERR : ODD
}

/** A request that may change the session: one reply, never blocking. */
export class Tracked extends RespRequest {
  /** The class of the first reply read for it (NONE before). */
  verdict = NONE

  constructor (name: string, size: number, compare: boolean, op: number,
    readonly effect: Effect) {
    super(name, size, 1, false, compare, op)
  }
}

/**
 * The effect of a session command outside MULTI (name as the session names it, argc counting
 * the name), or null when it changes nothing tracked: not a session command, or a form Redis
 * refuses before changing anything (arity, syntax). SELECT, AUTH and CLIENT's arguments are
 * read by the framer (captureCount); null there means longer than it reads.
 */
export function effectOf (
  name: string, argc: number, args: ReadonlyArray<string | null>
): Effect | null {
  switch (name) {
    case 'select': return argc === 2 ? word(args[0], 'db') : null
    case 'client|setname': return argc === 3 ? word(args[1], 'name') : null
    case 'auth': {
      if (argc !== 2 && argc !== 3) return null
      const words = args.slice(0, argc - 1)
      if (words.some((w) => w === null)) return { unknown: ['auth'] }
      return { ok: { auth: words as string[] } }
    }
    case 'readonly': case 'readwrite':
      return argc === 1 ? { ok: { readonly: name === 'readonly' } } : null
    case 'unwatch': return argc === 1 ? { ok: { watch: false } } : null
    case 'watch': return argc >= 2 ? { ok: { watch: true } } : null
    case 'reset': return argc === 1 ? { ok: RESET } : null
    case 'client|tracking': return argc >= 3 ? onOff(args[1], 'tracking') : null
    case 'client|no-evict': return argc === 3 ? onOff(args[1], 'noEvict') : null
    case 'hello': return hello(argc, args)
    default: return null
  }
}

// A part set to one argument (null: longer than the framer reads, so not known).
function word (arg: string | null | undefined, slot: 'db' | 'name'): Effect {
  return typeof arg === 'string' ? { ok: { [slot]: arg } } : { unknown: [slot] }
}

// CLIENT TRACKING and NO-EVICT take on or off (any case); Redis refuses any other word.
function onOff (word: string | null | undefined, slot: 'tracking' | 'noEvict'): Effect | null {
  const w = word?.toLowerCase()
  return w === 'on' || w === 'off' ? { ok: { [slot]: w === 'on' } } : null
}

/**
 * HELLO [protover [AUTH user pass] [SETNAME name]]: all or nothing. Redis parses every option
 * (a bad one is refused, changing nothing), then logs in, then names, then switches RESP.
 */
function hello (argc: number, args: ReadonlyArray<string | null>): Effect | null {
  if (args.length < argc - 1 || args.some((w) => w === null)) {
    return { unknown: ['auth', 'resp3', 'name'] } // more than the framer reads
  }
  const words = args as readonly string[]
  const ok: Partial<Values> = {}
  if (words.length === 0) return { ok }
  // Redis reads it with string2ll and takes 2 or 3: no sign, no leading zero.
  if (words[0] !== '2' && words[0] !== '3') return null
  ok.resp3 = words[0] === '3'
  for (let j = 1; j < words.length; j++) {
    const opt = words[j]?.toLowerCase()
    const more = words.length - 1 - j
    if (opt === 'auth' && more >= 2) {
      ok.auth = words.slice(j + 1, j + 3)
      j += 2
    } else if (opt === 'setname' && more >= 1) {
      ok.name = words[j + 1]
      j++
    } else {
      return null
    }
  }
  return { ok }
}

/** The tracked session of one connection, and what recreates it. */
export class CarryState {
  private readonly values: Values = { ...DEFAULT }
  /** Parts whose value on the server is not known here. */
  private readonly unsure = new Set<Slot>()

  get resp3 (): boolean {
    return this.values.resp3 && !this.unsure.has('resp3')
  }

  /** A reply to a tracked request was read; `first` is its first byte. */
  answered (req: Tracked, first: number | undefined): void {
    const verdict = classOf(first)
    if (req.verdict !== NONE) {
      // Two replicas answered it differently: which one the session follows is not known.
      if (req.verdict !== verdict) this.doubt(slotsOf(req.effect))
      return
    }
    req.verdict = verdict
    const e = req.effect
    if (verdict === ODD) this.doubt(slotsOf(e))
    if (verdict !== OK) return
    this.doubt(e.unknown ?? [])
    if (e.ok) this.set(e.ok)
  }

  private set (part: Partial<Values>): void {
    Object.assign(this.values, part)
    for (const k of Object.keys(part)) this.unsure.delete(k as Slot)
  }

  private doubt (slots: readonly Slot[]): void {
    for (const s of slots) this.unsure.add(s)
  }

  /** Why the session cannot be recreated on a fresh connection, or null. */
  refusal (): string | null {
    // WATCHed keys live in the source's server connection: a fresh one would run EXEC
    // without them.
    if (this.values.watch) return 'watch'
    // Invalidations are addressed to the source's connection (or a redirect id on it).
    if (this.values.tracking) return 'tracking'
    // A part of the session is not known (a session command inside a transaction, replicas
    // that answered it differently, an argument longer than the framer reads).
    if (this.unsure.size > 0) return 'uncertain'
    return null
  }

  /**
   * The requests that recreate the session, one reply each, in an order a fresh connection
   * takes them: AUTH first (with a password set nothing else runs before it), HELLO after it
   * (HELLO without AUTH needs a logged-in connection), then the rest as the carried user.
   * Each was accepted by the source; the joining copy, with the same data and settings,
   * accepts it too (an error reply means it is not in the same session).
   */
  replay (): Buffer {
    const v = this.values
    const cmds: string[][] = []
    if (v.auth !== null) cmds.push(['AUTH', ...v.auth])
    if (v.resp3) cmds.push(['HELLO', '3'])
    if (v.db !== '0') cmds.push(['SELECT', v.db])
    if (v.name !== '') cmds.push(['CLIENT', 'SETNAME', v.name])
    if (v.noEvict) cmds.push(['CLIENT', 'NO-EVICT', 'on'])
    if (v.readonly) cmds.push(['READONLY'])
    return Buffer.concat(cmds.map(multibulk))
  }
}

/** One request as a multibulk array (arguments are latin1: one char per byte, as framed). */
function multibulk (words: readonly string[]): Buffer {
  let s = `*${words.length}\r\n`
  for (const w of words) s += `$${Buffer.byteLength(w, 'latin1')}\r\n${w}\r\n`
  return Buffer.from(s, 'latin1')
}

/**
 * A reader that also hands the first byte of each reply to a tracked request to the session's
 * state (every top-level value ends in a mark, so a value starts where the last one ended).
 */
export class SessionReader extends RespReader {
  /** The first byte of the value being read, once it has started. */
  private first: number | undefined

  constructor (fallback: () => string | null, private readonly state: CarryState) {
    super(fallback)
  }

  override push (data: Buffer): ReplyMark[] {
    const marks = super.push(data)
    let from = 0
    for (const m of marks) {
      if (m.request instanceof Tracked) this.state.answered(m.request, this.first ?? data[from])
      this.first = undefined
      from = m.end
    }
    if (from < data.length) this.first ??= data[from]
    return marks
  }
}
