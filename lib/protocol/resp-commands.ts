// What ftproxy needs to know about Redis commands (7.0): which have subcommands, which block,
// and which answer differently on two correct copies. Names are lower case; a subcommand is
// named 'container|sub' as Redis itself names it (client|list, object|idletime).

/** Commands whose second word is a subcommand (Redis 7.0's container commands). */
const CONTAINERS = new Set([
  'acl', 'client', 'cluster', 'command', 'config', 'function', 'latency', 'memory', 'module',
  'object', 'pubsub', 'script', 'slowlog', 'xgroup', 'xinfo',
])

/** Whether the first word names a container command. */
export function isContainer (base: string): boolean {
  return CONTAINERS.has(base)
}

/**
 * Arguments after the name the session reads (as strings), by command; others are skipped
 * unread. Containers read their subcommand; the rest read what a rule below looks at.
 */
export function captureCount (base: string): number {
  switch (base) {
    case 'subscribe': case 'psubscribe': case 'ssubscribe':
    case 'unsubscribe': case 'punsubscribe': case 'sunsubscribe':
      return Infinity // channel names: the session tracks the subscriptions
    case 'xread': case 'xreadgroup':
      return 16 // the options before STREAMS (at most 9 words)
    case 'client': return 2 // CLIENT REPLY OFF, CLIENT SETNAME name
    case 'xinfo': return 3 // XINFO STREAM key FULL
    // The session a connection carries to a fresh server connection (resp-carry.ts).
    case 'hello': return 8 // protover AUTH user pass SETNAME name, and a repeat
    case 'auth': return 2 // [user] password
    case 'select': return 1
    default: return CONTAINERS.has(base) ? 1 : 0
  }
}

/** Commands that may wait for another connection's input before they answer. */
const BLOCKING = new Set([
  'blpop', 'brpop', 'brpoplpush', 'blmove', 'blmpop', 'bzpopmin', 'bzpopmax', 'bzmpop',
  'wait', 'waitaof',
])

/**
 * Whether a command (outside MULTI) may block. XREAD and XREADGROUP block only with a BLOCK
 * option; their options are read as Redis's xreadCommand reads them, up to STREAMS, so that a
 * group or consumer named "BLOCK" is not taken for the option.
 */
export function isBlocking (base: string, args: ReadonlyArray<string | null>): boolean {
  if (BLOCKING.has(base)) return true
  if (base !== 'xread' && base !== 'xreadgroup') return false
  for (let i = 0; i < args.length; i++) {
    const word = args[i]?.toLowerCase()
    if (word === 'streams') return false
    if (word === 'block') return true
    if (word === 'count') i++
    else if (word === 'group' && base === 'xreadgroup') i += 2
  }
  return false
}

interface Uncompared {
  readonly reason: string
  /** Only some forms differ: argc counts the name, arg(i) is the i-th argument. */
  readonly when?: (argc: number, args: ReadonlyArray<string | null>) => boolean
}

// Each Redis process seeds its dict hash function at random, so two correct copies list the
// entries of a hashtable-encoded key (and the keyspace itself) in different orders.
const ORDER = 'iteration order of a hash table, seeded at random per process'
const CLOCK = "read off the copy's own clock"
const PROCESS = 'a fact about the server process, not the data'
const RANDOM = 'a random pick that changes nothing'

/**
 * THE list of replies that legitimately differ between two correct copies: a backup's reply
 * to these is counted and dropped, never compared. Keys are command names, 'container|sub',
 * or 'container|*' for every subcommand. Commands that *change* state at random (SPOP, EVAL
 * scripts, XADD with an automatic id) are not here: a difference there is a real divergence.
 */
const UNCOMPARED = new Map<string, Uncompared>([
  // Iteration order.
  ['keys', { reason: ORDER }],
  ['scan', { reason: `${ORDER}; the cursor is a position in that table` }],
  ['sscan', { reason: ORDER }],
  ['hscan', { reason: ORDER }],
  ['zscan', { reason: `${ORDER} (skiplist-encoded sorted sets are scanned through theirs)` }],
  ['smembers', { reason: ORDER }],
  // SINTER walks its smallest set; SUNION and SDIFF build a temporary set and list it.
  ['sinter', { reason: ORDER }],
  ['sunion', { reason: ORDER }],
  ['sdiff', { reason: ORDER }],
  ['hgetall', { reason: ORDER }],
  ['hkeys', { reason: ORDER }],
  ['hvals', { reason: ORDER }],
  ['dump', { reason: `${ORDER}: hashtable-encoded sets and hashes serialize in that order` }],
  ['pubsub|channels', { reason: ORDER }],
  ['pubsub|shardchannels', { reason: ORDER }],
  // With no argument they confirm each subscription in dict order (patterns are a list).
  ['unsubscribe', { reason: ORDER, when: (argc) => argc === 1 }],
  ['sunsubscribe', { reason: ORDER, when: (argc) => argc === 1 }],
  ['config|get', { reason: `${ORDER}; and ports, paths and pids differ` }],
  ['function|list', { reason: ORDER }],
  ['function|dump', { reason: ORDER }],
  ['module|list', { reason: `${ORDER}; and paths differ` }],
  // Clocks.
  ['time', { reason: CLOCK }],
  ['lastsave', { reason: CLOCK }],
  ['ttl', { reason: `the time left, ${CLOCK}` }],
  ['pttl', { reason: `the time left, ${CLOCK}` }],
  // EXPIRE and SET EX store now + ttl, with each copy's now at the moment it ran the command:
  // the stored absolute time differs by the copies' lag (Redis replicates PEXPIREAT for this).
  ['expiretime', { reason: `an absolute time set from a relative one, ${CLOCK}` }],
  ['pexpiretime', { reason: `an absolute time set from a relative one, ${CLOCK}` }],
  ['object|idletime', { reason: `idle time, ${CLOCK}` }],
  ['object|freq', { reason: 'the LFU counter: random increments and time decay' }],
  ['xinfo|consumers', { reason: `consumer idle times, ${CLOCK}` }],
  ['xinfo|stream', {
    reason: `FULL lists seen and delivery times, ${CLOCK}`,
    when: (argc, args) => argc > 3 && args[2]?.toLowerCase() === 'full',
  }],
  ['xpending', {
    reason: `the extended form lists idle times, ${CLOCK}`,
    when: (argc) => argc > 3,
  }],
  ['slowlog|*', { reason: `command timings and ids, ${CLOCK}` }],
  ['latency|*', { reason: `latency samples, ${CLOCK}` }],
  // Process facts.
  ['info', { reason: PROCESS }],
  ['client|id', { reason: `${PROCESS}: connection ids count every connection the server took` }],
  ['client|list', { reason: `${PROCESS}: ids, addresses, ages, buffers` }],
  ['client|info', { reason: `${PROCESS}: ids, addresses, ages, buffers` }],
  ['client|trackinginfo', { reason: `${PROCESS}: the redirect is a connection id` }],
  ['client|getredir', { reason: `${PROCESS}: a connection id` }],
  ['hello', { reason: `${PROCESS}: the map holds the connection id` }],
  ['memory|*', { reason: PROCESS }],
  ['role', { reason: `${PROCESS}: replication offsets` }],
  ['debug', { reason: `${PROCESS}: object internals, digests of internals, timings` }],
  ['cluster|*', { reason: `${PROCESS}: node ids and cluster state` }],
  ['function|stats', { reason: `${PROCESS}: the running script` }],
  ['acl|log', { reason: `${PROCESS}: client addresses and times` }],
  ['bgsave', { reason: `${PROCESS}: whether a background child is still running` }],
  ['bgrewriteaof', { reason: `${PROCESS}: whether a background child is still running` }],
  ['save', { reason: `${PROCESS}: whether a background child is still running` }],
  ['wait', { reason: `${PROCESS}: the server's own replicas` }],
  ['lolwut', { reason: `${PROCESS}: the version, and random art` }],
  // The command table: dict order (redis-cli sends COMMAND DOCS as it starts).
  ['command', { reason: ORDER }],
  ['command|*', { reason: ORDER }],
  // Random reads.
  ['randomkey', { reason: RANDOM }],
  ['srandmember', { reason: RANDOM }],
  ['hrandfield', { reason: RANDOM }],
  ['zrandmember', { reason: RANDOM }],
  ['acl|genpass', { reason: RANDOM }],
])

/**
 * Why a command's reply is not compared, or null when it is. `name` is the full name
 * (container|sub), `base` its first word.
 */
export function uncomparedReason (
  name: string, base: string, argc: number, args: ReadonlyArray<string | null>
): string | null {
  const entry = UNCOMPARED.get(name) ?? (name === base ? undefined : UNCOMPARED.get(`${base}|*`))
  if (entry === undefined) return null
  if (entry.when !== undefined && !entry.when(argc, args)) return null
  return entry.reason
}

/**
 * The verdict on a command that needs none of its arguments (no subcommand, no option, no
 * form-dependent entry above), or null when it does. The same for every request of that
 * name, so sessions compute it once per run of a name.
 */
export function plainVerdict (base: string): Verdict | null {
  if (CONTAINERS.has(base) || base === 'xread' || base === 'xreadgroup') return null
  const entry = UNCOMPARED.get(base)
  if (entry?.when !== undefined) return null
  const shareable = SHAREABLE.has(base)
  return { compare: entry === undefined, blocking: BLOCKING.has(base), shareable }
}

export interface Verdict { compare: boolean, blocking: boolean, shareable: boolean }

/**
 * Plain data commands whose effect and reply depend only on the keyspace, not on the
 * connection that sends them (no database selected, no transaction, no subscription, no
 * name, no blocking, no clock): a replica may carry them for many connections on one shared
 * connection, pipelined in log order (lib/replica/lane.ts). A connection that sends anything
 * else leaves the shared connection for good (its session may differ from then on).
 */
const SHAREABLE = new Set([
  // strings
  'get', 'set', 'setnx', 'setex', 'psetex', 'getset', 'getdel', 'mget', 'mset', 'msetnx',
  'incr', 'incrby', 'incrbyfloat', 'decr', 'decrby', 'append', 'strlen', 'getrange', 'setrange',
  'substr',
  // keys
  'del', 'unlink', 'exists', 'type', 'rename', 'renamenx', 'copy', 'touch',
  // lists
  'lpush', 'rpush', 'lpushx', 'rpushx', 'lpop', 'rpop', 'llen', 'lrange', 'lindex', 'lset',
  'lrem', 'ltrim', 'linsert', 'lpos', 'lmove', 'rpoplpush',
  // sets
  'sadd', 'srem', 'sismember', 'smismember', 'scard', 'smove',
  // hashes
  'hset', 'hsetnx', 'hget', 'hmget', 'hmset', 'hdel', 'hexists', 'hlen', 'hincrby',
  'hincrbyfloat', 'hstrlen',
  // sorted sets
  'zadd', 'zrem', 'zscore', 'zmscore', 'zincrby', 'zcard', 'zcount', 'zrange', 'zrangebyscore',
  'zrevrange', 'zrevrangebyscore', 'zrank', 'zrevrank', 'zlexcount', 'zrangebylex',
  'zrevrangebylex', 'zremrangebyrank', 'zremrangebyscore', 'zremrangebylex', 'zpopmin',
  'zpopmax',
  // hyperloglog, bitmaps
  'pfadd', 'pfcount', 'pfmerge', 'setbit', 'getbit', 'bitcount', 'bitpos',
  // connection-neutral
  'ping', 'echo',
])

/** Commands a RESP2 connection may send while subscribed; Redis refuses the rest. */
export const SUBSCRIBED_ALLOWED = new Set([
  'ping', 'subscribe', 'ssubscribe', 'psubscribe', 'unsubscribe', 'sunsubscribe',
  'punsubscribe', 'quit', 'reset',
])

/** Subscription kinds: channels, patterns, shard channels (Redis counts them apart). */
export type Kind = 0 | 1 | 2
export const CHANNEL: Kind = 0
export const PATTERN: Kind = 1
const SHARD: Kind = 2

/** Pub/sub commands: their kind and whether they subscribe. */
export const PUBSUB = new Map<string, { kind: Kind, subscribe: boolean }>([
  ['subscribe', { kind: CHANNEL, subscribe: true }],
  ['unsubscribe', { kind: CHANNEL, subscribe: false }],
  ['psubscribe', { kind: PATTERN, subscribe: true }],
  ['punsubscribe', { kind: PATTERN, subscribe: false }],
  ['ssubscribe', { kind: SHARD, subscribe: true }],
  ['sunsubscribe', { kind: SHARD, subscribe: false }],
])
