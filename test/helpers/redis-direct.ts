// Two redis-server copies that no front supervises (protocol resp: each is known by its
// run_id), and the config of an `ftproxy run` process in front of them, for tests that kill
// and restart servers and fronts at chosen moments.

import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import type { Test } from 'tap'
import { freePorts } from './ports.js'
import { Cli } from './proc.js'
import { RespConn } from './resp.js'
import { until } from './until.js'

export interface DirectRedis {
  /** The front's port, and each copy's. */
  port: number
  ports: { a: number, b: number }
  /** The front's config file. */
  file: string
  /** Start copy `name` (empty: a new run_id); it is listening when this resolves. */
  start: (name: 'a' | 'b', args?: string[]) => Promise<ChildProcess>
  /** `ftproxy run` before them, once protected and with k = v written through it. */
  serve: () => Promise<Cli>
  /**
   * Until b's server has run that write: its acknowledgement came from the front's own
   * process, so a front that dies with the primary may take it along (README, guarantees).
   */
  backupRan: () => Promise<void>
}

export async function directRedis (t: Test, extra: string[] = []): Promise<DirectRedis> {
  const dir = t.testdir({ state: {} })
  const [port, a, b] = await freePorts(3) as [number, number, number]
  const ports = { a, b }
  const start = async (name: 'a' | 'b', args: string[] = []): Promise<ChildProcess> => {
    const data = path.join(dir, name)
    mkdirSync(data, { recursive: true })
    const proc = spawn('redis-server', ['--port', String(ports[name]), '--bind', '127.0.0.1',
      '--save', '', '--appendonly', 'no', '--dir', data, ...args], { stdio: 'ignore' })
    t.teardown(() => { proc.kill('SIGKILL') })
    await until(() => RespConn.open(ports[name]).then((c) => { c.close(); return true },
      () => false), `redis ${name} to listen`)
    return proc
  }
  const file = path.join(dir, 'ftproxy.yaml')
  writeFileSync(file, [
    `listen: 127.0.0.1:${port}`, `state_dir: ${JSON.stringify(path.join(dir, 'state'))}`,
    'protocol: resp', 'replicas:',
    `  - { name: a, address: "127.0.0.1:${a}" }`, `  - { name: b, address: "127.0.0.1:${b}" }`,
    'health_check: { interval: 200ms, timeout: 200ms, fall: 2, rise: 1 }',
    'log: { level: info, format: json }', 'admin: { listen: 127.0.0.1:0 }', ...extra, '',
  ].join('\n'))
  const serve = async (): Promise<Cli> => {
    const f = new Cli(t, ['run', '--config', file])
    await f.waitEvent('protected', undefined, 20000)
    const c = await RespConn.open(port)
    await c.command('SET', 'k', 'v')
    c.close()
    return f
  }
  const backupRan = async (): Promise<void> => {
    const c = await RespConn.open(b)
    await until(async () => await c.command('GET', 'k') === 'v', 'b to run the write')
    c.close()
  }
  return { port, ports, file, start, serve, backupRan }
}
