import t from 'tap'
import { execFile, execFileSync } from 'node:child_process'
import fs from 'node:fs/promises'
import path from 'node:path'

const UNIT = path.resolve(import.meta.dirname, '../systemd/ftproxy-agent.service')

function which (cmd: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || undefined
  } catch {
    return undefined
  }
}

const analyze = which('systemd-analyze')

t.test('the agent unit names what the agent relies on', async (t) => {
  const unit = await fs.readFile(UNIT, 'utf8')
  const keys = (k: string) => unit.split('\n').filter((l) => l.startsWith(`${k}=`)).map((l) => l.slice(k.length + 1))
  t.same(keys('Type'), ['notify'])
  t.same(keys('NotifyAccess'), ['all'], 'systemd-notify runs as a child process')
  t.same(keys('ExecStart'), ['/usr/bin/env ftproxy agent --config /etc/ftproxy/agent.yaml'])
  t.same(keys('StateDirectory'), ['ftproxy-agent'])
  t.same(keys('MemoryDenyWriteExecute'), [], 'V8 needs W+X pages')

  // The same hardening as the front's unit.
  const front = await fs.readFile(path.resolve(import.meta.dirname, '../systemd/ftproxy.service'), 'utf8')
  const hardening = ['DynamicUser', 'NoNewPrivileges', 'ProtectSystem', 'ProtectHome', 'PrivateTmp', 'PrivateDevices',
    'ProtectKernelTunables', 'ProtectKernelModules', 'ProtectControlGroups', 'RestrictAddressFamilies', 'LockPersonality']
  const frontKeys = (k: string) => front.split('\n').filter((l) => l.startsWith(`${k}=`)).map((l) => l.slice(k.length + 1))
  for (const k of hardening) t.same(keys(k), frontKeys(k), `${k} as in ftproxy.service`)
})

// systemd-analyze verify exits 0 on warnings, so the check is that it prints nothing. The unit
// is verified as shipped (ExecStart is /usr/bin/env, which exists wherever systemd does).
t.test('systemd-analyze verify prints nothing', { skip: analyze === undefined && 'systemd-analyze is not installed' }, async (t) => {
  const { code, out } = await new Promise<{ code: number, out: string }>((resolve) => {
    execFile(analyze as string, ['verify', UNIT], { encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : Number(err.code ?? 1), out: stdout + stderr })
    })
  })
  t.equal(out, '', 'no output')
  t.equal(code, 0)
})
