// What a valid config still leaves unguarded: said by check-config (stderr) and logged by
// run (`config_warning`), never an error.

import type { Config } from './types.js'

export function configWarnings (cfg: Config): string[] {
  const out: string[] = []
  for (const r of cfg.replicas) {
    if (r.agent !== undefined || r.command !== undefined || cfg.protocol === 'resp') continue
    out.push(`replicas.${r.name}: ftproxy cannot tell whether this server restarted (it is ` +
      `neither supervised by ftproxy nor behind an agent, and protocol ${cfg.protocol} has no ` +
      'way to ask): a server that restarts empty while the front is down would be trusted; ' +
      'give it a command, an agent, or use protocol resp')
  }
  return out
}
