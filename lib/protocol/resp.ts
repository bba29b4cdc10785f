// Redis's protocol, RESP2 and RESP3: requests are multibulk arrays or inline lines, framed
// as Redis frames them (resp-parse.ts); replies are every RESP type, told apart from pushed
// messages (resp-reply.ts); the rules for state and for replies that legitimately differ
// are in resp-session.ts and resp-commands.ts.

import type { ClientState, ControlDialect, Protocol } from './types.js'
import { RespSession } from './resp-session.js'

const PONG = Buffer.from('+PONG\r\n')
// A server with requirepass or ACLs answers ftproxy's connection with these: it is serving.
const AUTH_ERRORS = /^-(NOAUTH|NOPERM|WRONGPASS)/

const respControl: ControlDialect = {
  probe: Buffer.from('*1\r\n$4\r\nPING\r\n'),
  healthy: (reply) => reply.equals(PONG) || AUTH_ERRORS.test(reply.toString('latin1', 0, 16)),
  refused: (reply) => reply[0] === 0x2d ? reply.toString('latin1').trimEnd().slice(1) : null,
  clients: Buffer.from('*4\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n$4\r\nTYPE\r\n$6\r\nnormal\r\n'),
  client: clientState,
  identity: Buffer.from('*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n'),
  identityOf: (reply) => /\brun_id:([0-9a-f]+)/.exec(reply.toString('latin1'))?.[1] ?? null,
  laneSettings: Buffer.from('*4\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$7\r\ntimeout\r\n' +
    '$26\r\nclient-output-buffer-limit\r\n'),
  laneBlocked,
}

/**
 * Why the shared lane may not carry requests on this server, from CONFIG GET timeout
 * client-output-buffer-limit. A client's own server connection sits idle while its requests
 * go on the lane: an idle `timeout` would close it under a busy client. An output limit for
 * normal clients applies to the lane as a whole: one client's big reply would close it for
 * all. Refused (ACL, a renamed CONFIG): unknown, so no.
 */
function laneBlocked (reply: Buffer): string | null {
  if (reply[0] === 0x2d) return `CONFIG GET refused: ${reply.toString('latin1').trim()}`
  const words = reply.toString('latin1').split('\r\n')
    .filter((w) => w !== '' && w[0] !== '*' && w[0] !== '$')
  const settings = new Map<string, string>()
  for (let i = 0; i + 1 < words.length; i += 2) settings.set(words[i] ?? '', words[i + 1] ?? '')
  const timeout = settings.get('timeout')
  if (timeout !== '0') return `timeout is ${timeout ?? 'unknown'} (idle clients are closed)`
  const normal = /normal (\d+) (\d+) (\d+)/.exec(settings.get('client-output-buffer-limit') ?? '')
  if (normal === null || normal.slice(1).some((n) => n !== '0')) {
    return 'client-output-buffer-limit for normal clients is set (one reply could close it)'
  }
  return null
}

export const resp: Protocol = {
  name: 'resp',
  serial: true,
  uncompared: true,
  control: respControl,
  session: () => new RespSession(),
}

/**
 * From CLIENT LIST's reply (a bulk string, or RESP3's verbatim `txt:` one; its RESP header
 * optional), the client whose `addr=` is `addr`: blocked when its flags hold `b`, and its
 * `qbuf` (bytes read and not yet run). Lines look like
 * `id=7 addr=127.0.0.1:5555 laddr=… fd=8 name= age=0 idle=0 flags=b … qbuf=26 …`.
 */
function clientState (reply: Buffer, addr: string): ClientState | null {
  const text = body(reply)
  const at = text.indexOf(` addr=${addr} `)
  if (at < 0) return null
  const from = text.lastIndexOf('\n', at) + 1
  const nl = text.indexOf('\n', at)
  const fields = new Map<string, string>()
  for (const word of text.slice(from, nl < 0 ? text.length : nl).trimEnd().split(' ')) {
    const eq = word.indexOf('=')
    if (eq > 0) fields.set(word.slice(0, eq), word.slice(eq + 1))
  }
  const flags = fields.get('flags')
  const qbuf = Number(fields.get('qbuf'))
  if (flags === undefined || !Number.isInteger(qbuf)) return null
  return { blocked: flags.includes('b'), unexecuted: qbuf }
}

// The text of a bulk or verbatim string reply (or the text itself when it has no header).
function body (reply: Buffer): string {
  const first = reply[0]
  if (first !== 0x24 && first !== 0x3d) return reply.toString('latin1')
  const nl = reply.indexOf('\r\n')
  const len = Number(reply.toString('latin1', 1, nl))
  if (nl < 0 || !Number.isInteger(len) || len < 0) return ''
  const start = nl + 2 + (first === 0x3d ? 4 : 0) // verbatim: skip `txt:`
  return reply.toString('latin1', start, nl + 2 + len)
}
