// Arbiter backends behind one factory: the front asks for an `Arbiter` and never branches on kind.

import type { Arbiter } from './arbiter.js'
import { FileArbiter } from './file.js'

export type { Arbiter, ArbiterState } from './arbiter.js'
export { initialState, STOPPED } from './arbiter.js'
export { FileArbiter, lockName } from './file.js'

/** The `arbiter:` config section (grows `tas` and `etcd` variants). */
export type ArbiterConfig = { kind: 'file' }

export function createArbiter (cfg: ArbiterConfig, stateDir: string): Arbiter {
  switch (cfg.kind) {
    case 'file':
      return new FileArbiter({ dir: stateDir })
    default: {
      // Unreachable while the config schema and this switch agree; fails to compile otherwise.
      const kind: never = cfg.kind
      throw new Error(`unknown arbiter kind: ${String(kind)}`)
    }
  }
}
