// The log channel's frames: their layout, limits and types. codec.ts encodes and decodes
// them; nothing here touches bytes.
//
//   +---------+--------+---------+------------------+
//   | len u32 | type u8| epoch   | body ...         |   len = 1 + 4 + body (bytes after len)
//   |         |        |  u32    |                  |   5 <= len <= maxFrame
//   +---------+--------+---------+------------------+
//
// Integers are big-endian; u64 values must fit a JS number (<= 2^53 - 1). A string is
// u16 length + UTF-8 (at most 1024 bytes). Bodies by type:
//
//    1 HELLO      'FTPX' | version u16 | frontId str | window u32 | protocol str |
//                 n u32 | n × (conn u32, offset u64)
//    2 WELCOME    version u16 | applied u64 | incarnation str | n u32 | n × (conn u32, seq u64)
//    3 OPEN       seq u64 | conn u32
//    4 DATA       seq u64 | conn u32 | data (rest of the frame, non-empty)
//    5 EOF        seq u64 | conn u32
//    6 CLOSE      seq u64 | conn u32
//    7 ACK        seq u64
//    8 OUT        conn u32 | offset u64 | data (rest of the frame, non-empty)
//    9 OUT_EOF    conn u32 | offset u64 | reset u8 (0 | 1)
//   10 OUT_CLOSE  conn u32
//   11 OUT_ACK    conn u32 | offset u64
//   12 HEARTBEAT  (empty)
//   13 ERROR      code str | message str
//   14 SYNC       seq u64   front → agent: say when every entry up to seq has been run
//   15 SYNCED     seq u64   agent → front: every entry up to seq was run and answered
//
// Every field is read exactly: a short body, bytes after the last field, an unknown type or a
// value out of range is an ERR_FTPROXY_FRAME, and one such error fails the decoder for good
// (the stream position is lost, so the caller closes the channel).

// 2: HELLO names the application protocol (the agent frames and orders by it).
// 3: WELCOME names the server's incarnation (lib/incarnation.ts).
// 4: SYNC and SYNCED (a re-seed's cut waits until an agent's server has run every entry).
export const PROTOCOL_VERSION = 4
export const MAGIC = 'FTPX'
/** Largest `len` a decoder accepts by default: a full DATA/OUT frame plus room to spare. */
export const DEFAULT_MAX_FRAME = 1024 * 1024 + 64
/** Largest payload an encoder puts in one DATA or OUT frame; see splitData(). */
export const MAX_DATA = 1024 * 1024
/** Largest UTF-8 length of a string field. */
export const MAX_STRING = 1024
/** Longest protocol name helloLen() allows for (the names are short: raw, line, resp). */
const MAX_PROTOCOL_NAME = 16

/**
 * `len` of the largest HELLO whose resume list names `n` connections (frontId at MAX_STRING):
 * type, epoch, magic, version, frontId, window, protocol (a short name), n, then 12 bytes per
 * connection.
 */
export function helloLen (n: number): number {
  return 1 + 4 + 4 + 2 + (2 + MAX_STRING) + 4 + (2 + MAX_PROTOCOL_NAME) + 4 + 12 * n
}

export const FrameType = {
  HELLO: 1,
  WELCOME: 2,
  OPEN: 3,
  DATA: 4,
  EOF: 5,
  CLOSE: 6,
  ACK: 7,
  OUT: 8,
  OUT_EOF: 9,
  OUT_CLOSE: 10,
  OUT_ACK: 11,
  HEARTBEAT: 12,
  ERROR: 13,
  SYNC: 14,
  SYNCED: 15,
} as const

export type FrameName = keyof typeof FrameType

export interface ResumePoint { conn: number, offset: number }
export interface ConnAck { conn: number, seq: number }

export interface HelloFrame {
  type: 'HELLO'
  epoch: number
  version: number
  frontId: string
  /** Output bytes the agent may send ahead per connection. */
  window: number
  /** The application protocol (ProtocolName): how the agent frames and orders the log. */
  protocol: string
  resume: ResumePoint[]
}
export interface WelcomeFrame {
  type: 'WELCOME'
  epoch: number
  version: number
  applied: number
  /**
   * Which server process the agent applies to (lib/incarnation.ts): it changes whenever the
   * server restarts. Empty: the agent cannot tell.
   */
  incarnation: string
  acks: ConnAck[]
}
interface OpenFrame { type: 'OPEN', epoch: number, seq: number, conn: number }
interface DataFrame { type: 'DATA', epoch: number, seq: number, conn: number, data: Buffer }
interface EofFrame { type: 'EOF', epoch: number, seq: number, conn: number }
interface CloseFrame { type: 'CLOSE', epoch: number, seq: number, conn: number }
interface AckFrame { type: 'ACK', epoch: number, seq: number }
export interface OutFrame { type: 'OUT', epoch: number, conn: number, offset: number, data: Buffer }
interface OutEofFrame {
  type: 'OUT_EOF'
  epoch: number
  conn: number
  offset: number
  reset: boolean
}
interface OutCloseFrame { type: 'OUT_CLOSE', epoch: number, conn: number }
interface OutAckFrame { type: 'OUT_ACK', epoch: number, conn: number, offset: number }
interface HeartbeatFrame { type: 'HEARTBEAT', epoch: number }
interface ErrorFrame { type: 'ERROR', epoch: number, code: string, message: string }
/**
 * The front asks: answer once the server has run every entry up to `seq` (written, and with a
 * serial protocol answered; see Session.sync). One in flight at a time.
 */
interface SyncFrame { type: 'SYNC', epoch: number, seq: number }
/**
 * The agent answers a SYNC: every entry up to `seq` (its last applied, at least the one
 * asked) has been run, and all the output it produced was sent before this frame.
 */
interface SyncedFrame { type: 'SYNCED', epoch: number, seq: number }

export type Frame =
  | HelloFrame | WelcomeFrame | OpenFrame | DataFrame | EofFrame | CloseFrame | AckFrame
  | OutFrame | OutEofFrame | OutCloseFrame | OutAckFrame | HeartbeatFrame | ErrorFrame
  | SyncFrame | SyncedFrame
