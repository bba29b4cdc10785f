// One client connection to Redis: its requests, and the connection state that decides how
// many replies each owes and whether they are compared. Each rule mirrors Redis 7.0
// (server.c processCommand, multi.c, pubsub.c) and says why.

import type { Carry, ReplyReader, Request, Session } from './types.js'
import {
  CarryState, SessionReader, Tracked, effectOf, slotsOf, type Slot,
} from './resp-carry.js'
import {
  PUBSUB, SUBSCRIBED_ALLOWED, captureCount, isBlocking, isContainer, plainVerdict,
  uncomparedReason, CHANNEL, type Verdict as PlainVerdict,
} from './resp-commands.js'
import { RequestFramer, type CommandSink } from './resp-parse.js'
import {
  OP_HELLO, OP_MONITOR, OP_NONE, OP_PUBSUB, OP_RESET, OP_UNSUB_ALL, RespReader, RespRequest,
} from './resp-reply.js'

/** Commands with a rule of their own below (and the pub/sub ones). */
const RULES = new Set([
  'multi', 'exec', 'discard', 'watch', 'quit', 'reset', 'monitor', 'hello', 'client', 'sync',
  'psync', 'post', 'host:', 'select', 'auth', 'readonly', 'readwrite', 'unwatch',
])

const EMPTY = Buffer.alloc(0)
/** A RESP3 HELLO reply as a reader needs it (a map: its contents are not read). */
const HELLO3 = Buffer.from('%0\r\n')

type Verdict = PlainVerdict | null

export class RespSession implements Session, CommandSink {
  fallback: string | null = null
  private readonly framer = new RequestFramer(this)
  private readonly readers: SessionReader[] = []
  private out: Request[] = []
  /** QUIT was sent: Redis runs nothing after it. */
  private closed = false
  /** Inside MULTI, and whether every command queued so far is compared. */
  private multi = false
  private multiCompare = true
  /** A CLIENT KILL is queued: EXEC may close other connections. */
  private multiCloses = false
  /** Subscriptions by kind (channels, patterns, shard channels), as requested. */
  private readonly subs: [Set<string>, Set<string>, Set<string>] = [new Set(), new Set(), new Set()]
  private resp3 = false
  private monitor = false
  /** The verdict on the last name seen (pipelines repeat names; the framer reuses them). */
  private lastBase = ''
  private lastVerdict: Verdict = null
  /** Every request so far was shareable: the connection's session is still the default. */
  private pristine = true
  /** The session on the server, as replies confirmed it (what carry() recreates). */
  private readonly state = new CarryState()
  /** Parts of the session changed by commands queued in the current MULTI. */
  private readonly queued = new Set<Slot>()
  /** The last request was ASKING: Redis applies it to the next command only. */
  private asking = false
  /** Bytes of input taken, and of the requests framed from them (less: one in progress). */
  private taken = 0
  private framed = 0

  request (data: Buffer): Request[] {
    if (this.fallback !== null) return []
    // Redis closes the connection after QUIT's reply and reads nothing more: bytes after it
    // owe no reply and change nothing.
    if (this.closed) return [new RespRequest('', data.length, 0, false, true)]
    this.settle()
    this.taken += data.length
    const out: Request[] = []
    this.out = out
    const stop = this.framer.push(data)
    if (this.framer.error !== null) this.fallback = this.framer.error
    else if (this.closed && stop < data.length) {
      out.push(new RespRequest('', data.length - stop, 0, false, true))
    }
    return out
  }

  // The state rules guess from requests, and a refused request (NOAUTH, NOPERM) changes
  // nothing on the server: a SUBSCRIBE refused would leave the session believing the
  // connection subscribed. Once every request so far is answered, the replies tell the
  // server's own state, and the guesses are corrected from them.
  private settle (): void {
    const state = this.readers[0]?.settled()
    if (state === undefined || state === null) return
    this.resp3 = state.resp3
    this.monitor = state.monitor
    state.counts.forEach((n, kind) => { if (n === 0) this.subs[kind]?.clear() })
  }

  // A reader created late reads a server connection put in this session (a replica joined at
  // a re-seed's cut, after carry()'s replay): it starts knowing its replies are RESP3.
  reader (): RespReader {
    const r = new SessionReader(() => this.fallback, this.state)
    if (this.state.resp3) {
      r.expect(new RespRequest('hello', 0, 1, false, false, OP_HELLO))
      r.push(HELLO3)
    }
    this.readers.push(r)
    return r
  }

  release (reader: ReplyReader): void {
    const i = this.readers.indexOf(reader as SessionReader)
    if (i >= 0) this.readers.splice(i, 1)
  }

  /**
   * How this connection goes on on a fresh server connection (see Session.carry): the
   * requests that recreate its session there, or why it cannot (one word). Called at a
   * re-seed's cut, once every reply framed so far was read by this session's readers.
   */
  carry (): Carry {
    // Redis closes the connection after QUIT: there is nothing to go on with.
    if (this.closed) return { refused: 'closed' }
    // Its replies cannot be counted (CLIENT REPLY OFF/SKIP, a protocol error, SYNC).
    if (this.fallback !== null) return { refused: 'fallback' }
    // A request partly received: the fresh connection would get only the rest of it.
    if (this.framed !== this.taken) return { refused: 'partial' }
    if (this.pristine) return { replay: EMPTY }
    this.settle()
    const refused = this.owed() ?? this.inside() ?? this.state.refusal()
    return refused === null ? { replay: this.state.replay() } : { refused }
  }

  // Requests that still owe replies: their replies (and the session they leave) would come
  // on the source's connection only.
  private owed (): string | null {
    // No reader can frame the server's output: nothing confirmed the session.
    if (this.readers.length > 0 && this.readers.every((r) => r.error !== null)) return 'unframed'
    // Some reader has read every reply framed so far; none: a blocking command waits (or
    // the caller did not wait for every reply).
    return this.readers.some((r) => r.settled() !== null) ? null : 'blocked'
  }

  // States that live in the source's server connection and cannot be recreated by requests.
  private inside (): string | null {
    // The queued commands are held by the source's connection, for its EXEC.
    if (this.multi) return 'multi'
    // Its messages come from the source's subscriptions; a replay of the SUBSCRIBEs would
    // send confirmations the client never asked for.
    if (this.subscribed()) return 'subscribed'
    // The feed is each copy's own; a MONITOR on the fresh connection starts another.
    if (this.monitor) return 'monitor'
    // It applies to the next command on the source's connection (cluster redirection).
    if (this.asking) return 'asking'
    return null
  }

  capture (name: string): number {
    return captureCount(name)
  }

  command (size: number, argc: number, base: string, args: Array<string | null>): boolean {
    this.asking = base === 'asking' && !this.multi
    // `*0`, `*-1` and blank inline lines: Redis skips them without a reply.
    if (argc === 0) return this.emit(new RespRequest('', size, 0, false, true))
    if (base !== this.lastBase) {
      this.lastBase = base
      this.lastVerdict = RULES.has(base) || PUBSUB.has(base) ? null : plainVerdict(base)
    }
    const plain = this.lastVerdict
    // The common case: a command with no rule, on a connection in no special state.
    if (plain !== null && !this.multi && !this.monitor && !this.subscribed()) {
      const shareable = this.pristine && plain.shareable
      this.pristine = shareable
      const op = OP_NONE
      return this.emit(
        new RespRequest(base, size, 1, plain.blocking, plain.compare, op, CHANNEL, shareable))
    }
    this.pristine = false
    // Redis takes these for HTTP or a cross-protocol attack and closes without a reply.
    if (base === 'post' || base === 'host:') return this.stop('an HTTP request, not RESP')
    const sub = argc > 1 && isContainer(base) ? args[0] : undefined
    const name = typeof sub === 'string' ? `${base}|${sub.toLowerCase()}` : base
    // A RESP2 connection that is subscribed may only (un)subscribe, PING, QUIT and RESET:
    // Redis refuses the rest with one error, and they change nothing.
    if (!this.resp3 && this.subscribed() && !SUBSCRIBED_ALLOWED.has(base)) {
      return this.emit(new RespRequest(name, size, 1, false, true))
    }
    const handled = this.special(size, argc, base, name, args)
    if (handled !== undefined) return handled
    const compare = uncomparedReason(name, base, argc, args) === null
    // Inside MULTI a command is queued: +QUEUED (or an error) now, its real reply in EXEC's
    // array; a blocking command there never blocks (Redis runs it as with a zero timeout).
    if (this.multi) {
      this.multiCompare &&= compare
      return this.emit(new RespRequest(name, size, 1, false, true))
    }
    // A MONITOR connection is refused every command that touches the keyspace: none blocks.
    const blocking = !this.monitor && isBlocking(base, args)
    return this.emit(new RespRequest(name, size, 1, blocking, compare))
  }

  // Commands that change the connection's state; undefined for the others. Each checks the
  // arity Redis checks first: a wrong one is one error reply and changes nothing.
  private special (
    size: number, argc: number, base: string, name: string, args: Array<string | null>
  ): boolean | undefined {
    switch (base) {
      case 'multi': return argc === 1 ? this.startMulti(size) : undefined
      case 'exec': case 'discard':
        if (argc !== 1 || !this.multi) return undefined
        this.multi = false
        return this.emitExec(name, size, base === 'exec')
      // WATCH is never queued (inside MULTI it is an error), QUIT never (it closes).
      case 'watch':
        if (this.multi) return this.emit(new RespRequest(name, size, 1, false, true))
        return this.tracked(name, size, argc, args)
      case 'select': case 'auth': case 'readonly': case 'readwrite': case 'unwatch':
        return this.tracked(name, size, argc, args)
      case 'quit':
        this.closed = true
        this.emit(new RespRequest(name, size, 1, false, true))
        return false
      case 'reset': return argc === 1 ? this.reset(size) : undefined
      case 'monitor': return argc === 1 && !this.multi ? this.startMonitor(size) : undefined
      case 'hello': return this.hello(size, argc, args)
      case 'client':
        if (name === 'client|reply' && argc === 3) {
          const mode = args[1]?.toLowerCase()
          // The server stops answering, so nothing tells when it has run a request.
          if (mode === 'off' || mode === 'skip') return this.stop(`CLIENT REPLY ${mode}`)
        }
        return this.tracked(name, size, argc, args)
      case 'sync': case 'psync':
        // Outside MULTI the reply is an RDB file and then the replication stream.
        return this.multi ? undefined : this.stop(`${base.toUpperCase()}: a replication stream`)
      default:
        return PUBSUB.has(base) ? this.pubsub(size, argc, base, args) : undefined
    }
  }

  // A command that may change the session: its effect applies once its reply is read
  // (undefined: it changes nothing tracked). Inside MULTI it is queued, and runs at EXEC.
  private tracked (
    name: string, size: number, argc: number, args: Array<string | null>
  ): boolean | undefined {
    const effect = effectOf(name, argc, args)
    if (effect === null) return undefined
    if (this.multi) {
      for (const s of slotsOf(effect)) this.queued.add(s)
      return undefined
    }
    return this.emit(new Tracked(name, size, true, OP_NONE, effect))
  }

  // EXEC's array holds the queued commands' replies: compared only if all of theirs are.
  // Either ends WATCH. Whether the session commands queued took effect is not known here
  // (each may have been refused inside the array): those parts become uncertain.
  private emitExec (name: string, size: number, exec: boolean): boolean {
    const unknown = exec ? [...this.queued] : []
    this.queued.clear()
    const effect = { ok: { watch: false }, unknown }
    const req = new Tracked(name, size, !exec || this.multiCompare, OP_NONE, effect)
    req.closesOthers = exec && this.multiCloses
    this.multiCloses = false
    return this.emit(req)
  }

  private startMulti (size: number): boolean {
    // MULTI inside MULTI is an error and leaves the transaction as it is.
    if (!this.multi) {
      this.multi = true
      this.multiCompare = true
      this.multiCloses = false
      this.queued.clear()
    }
    return this.emit(new RespRequest('multi', size, 1, false, true))
  }

  // RESET runs even inside MULTI: it discards the transaction, the subscriptions, MONITOR and
  // RESP3 (and CLIENT REPLY, which has already made the connection fall back).
  private reset (size: number): boolean {
    this.multi = false
    this.queued.clear()
    for (const s of this.subs) s.clear()
    this.resp3 = false
    this.monitor = false
    const effect = effectOf('reset', 1, []) ?? {}
    return this.emit(new Tracked('reset', size, true, OP_RESET, effect))
  }

  // MONITOR answers +OK and then streams every command the server runs, with times and
  // client addresses; the reader tells that feed from replies. A second MONITOR answers
  // nothing at all. (Inside MULTI it is queued and fails in EXEC.)
  private startMonitor (size: number): boolean {
    if (this.monitor) return this.emit(new RespRequest('monitor', size, 0, false, true))
    this.monitor = true
    return this.emit(new RespRequest('monitor', size, 1, false, true, OP_MONITOR))
  }

  // HELLO 3 switches the replies to RESP3, HELLO 2 back; its reply holds the connection id.
  // Inside MULTI the switch would happen in the middle of EXEC's array.
  private hello (size: number, argc: number, args: Array<string | null>): boolean {
    if (this.multi) return this.stop('HELLO inside MULTI')
    if (args[0] === '3') this.resp3 = true
    else if (args[0] === '2') this.resp3 = false
    const effect = effectOf('hello', argc, args)
    if (effect === null) return this.emit(new RespRequest('hello', size, 1, false, false, OP_HELLO))
    return this.emit(new Tracked('hello', size, false, OP_HELLO, effect))
  }

  // (P|S)SUBSCRIBE a b c: one confirmation per argument (repeats included). Their
  // UNSUBSCRIBEs: one per argument, or with none, one per subscription of the kind (one if
  // there is none). Inside MULTI the confirmations would land in EXEC's array, more than one
  // element per command, so that cannot be framed.
  private pubsub (size: number, argc: number, base: string, args: Array<string | null>): boolean {
    const ps = PUBSUB.get(base)
    if (ps === undefined || (ps.subscribe && argc < 2)) {
      return this.emit(new RespRequest(base, size, 1, false, true))
    }
    if (this.multi) return this.stop(`${base.toUpperCase()} inside MULTI`)
    const set = this.subs[ps.kind]
    const compare = uncomparedReason(base, base, argc, args) === null
    if (argc === 1) {
      const replies = Math.max(1, set.size)
      set.clear()
      return this.emit(new RespRequest(base, size, replies, false, compare, OP_UNSUB_ALL, ps.kind))
    }
    for (const a of args) {
      if (a === null) return this.stop('a channel name too long to track')
      if (ps.subscribe) set.add(a)
      else set.delete(a)
    }
    return this.emit(new RespRequest(base, size, argc - 1, false, compare, OP_PUBSUB, ps.kind))
  }

  private subscribed (): boolean {
    return this.subs[0].size + this.subs[1].size + this.subs[2].size > 0
  }

  private emit (req: RespRequest): boolean {
    if (req.name === 'client|kill') {
      if (this.multi) this.multiCloses = true
      else req.closesOthers = true
    }
    this.out.push(req)
    this.framed += req.size
    if (req.replies > 0) for (const r of this.readers) r.expect(req)
    return true
  }

  // The connection cannot be ordered from here on.
  private stop (reason: string): boolean {
    this.fallback = reason
    return false
  }
}
