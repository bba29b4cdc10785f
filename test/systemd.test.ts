// The systemd units: what the daemons rely on is there, and `systemd-analyze verify` prints
// nothing for them as shipped (it exits 0 on warnings, so the check is its output).

import t from 'tap'
import { execFile, execFileSync } from 'node:child_process'
import fs from 'node:fs/promises'
import path from 'node:path'

const unitPath = (name: string): string => path.resolve(import.meta.dirname, '../systemd', name)

async function keysOf (name: string): Promise<(k: string) => string[]> {
  const unit = await fs.readFile(unitPath(name), 'utf8')
  return (k) => unit.split('\n')
    .filter((l) => l.startsWith(`${k}=`)).map((l) => l.slice(k.length + 1))
}

function which (cmd: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || undefined
  } catch {
    return undefined
  }
}

const analyze = which('systemd-analyze')
const HARDENING = [
  'DynamicUser', 'NoNewPrivileges', 'ProtectSystem', 'ProtectHome', 'PrivateTmp', 'PrivateDevices',
  'ProtectKernelTunables', 'ProtectKernelModules', 'ProtectControlGroups',
  'RestrictAddressFamilies', 'LockPersonality',
]

const UNITS = [
  {
    name: 'ftproxy.service',
    exec: '/usr/bin/env ftproxy run --config /etc/ftproxy/ftproxy.yaml',
    state: 'ftproxy',
  },
  {
    name: 'ftproxy-agent.service',
    exec: '/usr/bin/env ftproxy agent --config /etc/ftproxy/agent.yaml',
    state: 'ftproxy-agent',
  },
]

for (const u of UNITS) {
  t.test(`${u.name} names what the daemon relies on`, async (t) => {
    const keys = await keysOf(u.name)
    const front = await keysOf('ftproxy.service')
    t.same(keys('Type'), ['notify'])
    t.same(keys('NotifyAccess'), ['all'], 'systemd-notify runs as a child process')
    t.same(keys('ExecStart'), [u.exec])
    t.same(keys('StateDirectory'), [u.state])
    t.same(keys('MemoryDenyWriteExecute'), [], 'V8 needs W+X pages')
    t.same(keys('LimitNOFILE'), ['65536'])
    for (const k of HARDENING) t.same(keys(k), front(k), `${k} as in ftproxy.service`)
    t.ok(keys('NoNewPrivileges').length > 0 && keys('ProtectSystem').length > 0, 'hardened')
  })

  t.test(`systemd-analyze verify prints nothing for ${u.name}`, {
    skip: analyze === undefined && 'systemd-analyze is not installed',
  }, async (t) => {
    const args = ['verify', unitPath(u.name)]
    const { code, out } = await new Promise<{ code: number, out: string }>((resolve) => {
      execFile(analyze as string, args, { encoding: 'utf8' }, (err, stdout, stderr) => {
        resolve({ code: err === null ? 0 : Number(err.code ?? 1), out: stdout + stderr })
      })
    })
    t.equal(out, '', 'no output')
    t.equal(code, 0)
  })
}
