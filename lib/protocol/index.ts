// The protocol modules by name. Adding a protocol means adding its module here.

import type { Protocol, ProtocolName } from './types.js'
import { raw } from './raw.js'
import { line } from './line.js'
import { resp } from './resp.js'

const PROTOCOLS: Record<ProtocolName, Protocol> = { raw, line, resp }

export function protocolFor (name: ProtocolName): Protocol {
  return PROTOCOLS[name]
}

export type { Protocol, ProtocolName } from './types.js'
