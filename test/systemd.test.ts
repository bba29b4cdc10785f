import t from 'tap'
import { execFile, execFileSync } from 'node:child_process'
import fs from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

const UNIT = path.resolve(import.meta.dirname, '../systemd/ftproxy.service')

function which (cmd: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || undefined
  } catch {
    return undefined
  }
}

const analyze = which('systemd-analyze')

t.test('the unit names what the daemon relies on', async (t) => {
  const unit = await fs.readFile(UNIT, 'utf8')
  const keys = (k: string) => unit.split('\n').filter((l) => l.startsWith(`${k}=`)).map((l) => l.slice(k.length + 1))
  t.same(keys('Type'), ['notify'])
  t.same(keys('NotifyAccess'), ['all'], 'systemd-notify runs as a child process')
  t.same(keys('ExecStart'), ['/usr/bin/ftproxy run --config /etc/ftproxy/ftproxy.yaml'])
  t.same(keys('StateDirectory'), ['ftproxy'])
  t.same(keys('MemoryDenyWriteExecute'), [], 'V8 needs W+X pages')
  t.same(keys('LimitNOFILE'), ['65536'])
})

// systemd-analyze verify exits 0 on warnings, so the check is that it prints nothing. The real
// ExecStart binary is not installed here, so verify a copy that runs an existing one.
t.test('systemd-analyze verify prints nothing', { skip: analyze === undefined && 'systemd-analyze is not installed' }, async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'ftproxy-unit-'))
  t.teardown(() => fs.rm(dir, { recursive: true, force: true }))
  const unit = await fs.readFile(UNIT, 'utf8')
  const copy = path.join(dir, 'ftproxy.service')
  const exec = process.execPath
  const replaced = unit.replace(/^ExecStart=\/usr\/bin\/ftproxy /m, `ExecStart=${exec} `)
  t.not(replaced, unit, 'ExecStart replaced')
  await fs.writeFile(copy, replaced)
  const { code, out } = await new Promise<{ code: number, out: string }>((resolve) => {
    execFile(analyze as string, ['verify', copy], { encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : Number(err.code ?? 1), out: stdout + stderr })
    })
  })
  t.equal(out, '', 'no output')
  t.equal(code, 0)
})
