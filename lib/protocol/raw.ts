// No framing: bytes are bytes. Each replica reads its client sockets in its own order, so
// connections that share state are not ordered against each other (see README).

import type { Protocol, ReplyReader, Session } from './types.js'

const reader: ReplyReader = { push: () => [], error: null }

const session: Session = {
  request: () => [],
  fallback: null,
  reader: () => reader,
}

export const raw: Protocol = {
  name: 'raw',
  serial: false,
  uncompared: false,
  control: null,
  // Stateless: one session serves every connection.
  session: () => session,
}
