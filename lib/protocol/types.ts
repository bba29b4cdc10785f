// The seam between ftproxy and an application protocol. A protocol module frames one
// connection's client input into requests and its server output into replies, and says how
// many replies each request owes. With that, every replica can be given the requests of all
// connections in one order (turns, see replica/applier.ts), and the front can tell a reply
// that legitimately differs between two correct copies from a divergence.
//
// Adding a protocol (memcached, HTTP/1.1) means adding a file that implements Protocol and
// naming it in index.ts; nothing in the front or the applier changes.

export const PROTOCOL_NAMES = ['raw', 'line', 'resp'] as const
export type ProtocolName = typeof PROTOCOL_NAMES[number]

export function isProtocolName (name: string): name is ProtocolName {
  return (PROTOCOL_NAMES as readonly string[]).includes(name)
}

/** One complete client request, as framed from the connection's input. */
export interface Request {
  /** The command's name, lower case ('' when the protocol has no names), for events. */
  readonly name: string
  /** Its length in bytes in the client's input. */
  readonly size: number
  /** Replies the server will send for it: 0 (e.g. under CLIENT REPLY OFF), 1, or n. */
  readonly replies: number
  /**
   * The server may take it and answer only later, when another connection's input arrives
   * (BLPOP and the like): a turn cannot wait for its reply, it ends once the server took it.
   */
  readonly blocking: boolean
  /**
   * Whether its replies are compared between copies. False for replies that differ on two
   * correct copies (iteration order, clocks, process facts): counted and dropped on a backup.
   */
  readonly compare: boolean
  /**
   * Its effect and its reply do not depend on which connection carries it (a plain data
   * command on a connection that never changed its session): a replica may send it on one
   * connection shared by all such requests, pipelined, in log order (lib/replica/lane.ts).
   * Optional: absent means false.
   */
  readonly shareable?: boolean
  /**
   * It may close other connections, ftproxy's own included (resp: CLIENT KILL, or an EXEC
   * that runs one): the replica checks its own connections before the next entry, so that
   * reopening them happens at the same point in the order on every copy. Absent: false.
   */
  readonly closesOthers?: boolean
}

/** One complete reply (or message) in the server's output. */
export interface ReplyMark {
  /** Where it ends, as an offset into the chunk just given to ReplyReader.push. */
  readonly end: number
  /** The request it answers; null for a message the server pushed on its own (pub/sub). */
  readonly request: Request | null
  /** Whether these bytes are compared between copies (see Request.compare). */
  readonly compare: boolean
}

/** Frames one connection's server output, against the requests its Session framed. */
export interface ReplyReader {
  /** The server's output for the connection, in order, in chunks cut anywhere. */
  push (data: Buffer): ReplyMark[]
  /** Set once the output cannot be framed (the reason); push then returns nothing. */
  readonly error: string | null
  /**
   * Expect replies to `request` too, as if the session had framed it after this reader was
   * created: for a reader created late, or one fed requests framed by another session (the
   * shared lane). Optional: without it, the caller frames the bytes again.
   */
  expect? (request: Request): void
}

/** The framing state of one client connection. */
export interface Session {
  /**
   * The client's input, in order, in chunks cut anywhere. Returns the requests these bytes
   * complete; a trailing partial request is kept and completed by later input.
   */
  request (data: Buffer): Request[]
  /**
   * Set once (the reason) when this connection cannot be ordered any more: its input could
   * not be framed (a protocol error), or its replies cannot be counted (CLIENT REPLY OFF).
   * request() then returns nothing, and the connection falls back to raw ordering.
   */
  readonly fallback: string | null
  /**
   * What this connection's session needs on a fresh server connection to go on there, for a
   * replica joined at a re-seed's cut (every earlier request has been answered then).
   * Optional: absent means the session carries nothing (every connection is alike).
   */
  carry? (): Carry
  /**
   * A reader of this session's is not used any more (its replica left): it is forgotten,
   * and expects nothing more. Optional: sessions that keep nothing per reader.
   */
  release? (reader: ReplyReader): void
  /**
   * A new reader of the server's output for this connection. It expects replies to every
   * request framed after its creation (create readers before the first request).
   */
  reader (): ReplyReader
}

/**
 * How a connection goes on on a replica that joins at a re-seed's cut: the requests that put
 * a fresh server connection in the same session (their replies are dropped), or why it
 * cannot go on there (it is then closed cleanly at the cut).
 */
export type Carry = { replay: Buffer } | { refused: string }

/**
 * Commands on a control connection (one per replica, opened before any client's): health
 * probes and the check that the server took a blocking request. resp only.
 */
export interface ControlDialect {
  /** A request whose one reply says the server is serving (resp: PING). */
  readonly probe: Buffer
  /**
   * Whether that reply shows a serving server: the healthy answer, or a refusal of ftproxy's
   * unauthenticated connection (the server is up; it just will not take orders from it).
   */
  healthy (reply: Buffer): boolean
  /** The server refused a control request (resp: an error reply): its text, else null. */
  refused (reply: Buffer): string | null
  /** A request listing the server's view of its clients (resp: CLIENT LIST TYPE normal). */
  readonly clients: Buffer
  /**
   * From that reply: the state of the client whose socket the server sees at `addr`
   * (host:port), or null if it is not listed.
   */
  client (reply: Buffer, addr: string): ClientState | null
  /** A request whose reply names the server's process (resp: INFO server, its run_id). */
  readonly identity?: Buffer
  /** From that reply: the name, or null (refused, or not said). */
  identityOf? (reply: Buffer): string | null
  /** A request for the server settings that decide whether the shared lane may be used. */
  readonly laneSettings?: Buffer
  /** From that reply: why the shared lane may not be used on this server, or null. */
  laneBlocked? (reply: Buffer): string | null
}

export interface ClientState {
  /** The server blocked it on a command (resp: flags contains b). */
  blocked: boolean
  /** Bytes the server has read from it and not executed yet (resp: qbuf). */
  unexecuted: number
}

export interface Protocol {
  readonly name: ProtocolName
  /** Whether requests of all connections go to every replica in one order (turns). */
  readonly serial: boolean
  /** Whether some replies may legitimately differ between copies (Request.compare false). */
  readonly uncompared: boolean
  /** Framing state for a new connection. */
  session (): Session
  /** The control dialect (resp), or none. */
  readonly control: ControlDialect | null
}
