// Edges of the front's restarts found in review (issue 11): a start that fails after it
// adopted a crashed front's servers, a config change across a crash, a clean stop after the
// last in-sync copy was lost, a persisting server, a mix of supervised and direct replicas, a
// replica that missed input while down. The next front either serves every acknowledged write
// or refuses to serve; it never serves from a copy that misses some.

import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import {
  BIN, Client, demoServer, frontYaml, haveRedis, TestFront,
} from '../helpers/cluster.js'
import { freePorts } from '../helpers/ports.js'
import { alive, Cli } from '../helpers/proc.js'
import { RespConn } from '../helpers/resp.js'
import { until } from '../helpers/until.js'

interface Ports { front: number, a: number, b: number, admin?: number }

/**
 * A config file (JSON is YAML) for `ftproxy run`: two supervised demo servers, each started
 * with `args` added to its command line.
 */
function writeConfig (file: string, p: Ports, args: string[] = []): void {
  const replica = (name: string, port: number): object => ({
    name,
    address: `127.0.0.1:${port}`,
    command: ['ftproxy', 'demo-server', '--port', String(port), ...args],
  })
  writeFileSync(file, JSON.stringify({
    listen: `127.0.0.1:${p.front}`,
    state_dir: path.join(path.dirname(file), 'state'),
    protocol: 'line',
    replicas: [replica('a', p.a), replica('b', p.b)],
    health_check: { interval: '200ms', timeout: '200ms', fall: 2, rise: 1 },
    timeouts: { connect: '1s', stall: '1s', linger: '1s' },
    log: { level: 'info', format: 'json' },
    admin: { listen: `127.0.0.1:${p.admin ?? 0}` },
  }))
}

async function setup (t: Test): Promise<{ file: string, p: Ports }> {
  const [front, a, b, admin] = await freePorts(4) as [number, number, number, number]
  const file = path.join(t.testdir({}), 'ftproxy.yaml')
  const p = { front, a, b, admin }
  writeConfig(file, p)
  return { file, p }
}

/** One request on a fresh connection; its one reply line. */
async function ask (port: number, line: string): Promise<string | undefined> {
  const c = await Client.open(port)
  try {
    c.send(`${line}\n`)
    return (await c.waitLines(1))[0]
  } finally {
    c.close()
  }
}

/** A front that served `SET k v` with both servers in sync, then was killed (-9). */
async function crashedFront (t: Test, file: string, port: number): Promise<Cli> {
  const f1 = new Cli(t, ['run', '--config', file])
  await f1.waitEvent('protected')
  t.equal(await ask(port, 'SET k v'), 'OK')
  f1.proc.kill('SIGKILL')
  await f1.waitExit()
  return f1
}

// Guards: a front whose admin endpoint fails to listen after it adopted the servers stopped
// them (close()), and recorded them STOPPED: the front after it served the emptied copies.
t.test('a start that fails after adopting the servers leaves them running', async (t) => {
  const { file, p } = await setup(t)
  const f1 = await crashedFront(t, file, p.front)
  const squat = net.createServer()
  await new Promise<void>((resolve) => squat.listen(p.admin, '127.0.0.1', resolve))
  const f2 = new Cli(t, ['run', '--config', file])
  t.equal((await f2.waitExit(20000)).code, 1, 'the start fails')
  await new Promise((resolve) => squat.close(resolve))
  t.equal(f2.all('replica_process_adopted').length, 2, 'after both servers were adopted')
  t.equal(f2.find('startup_failed')?.code, 'EADDRINUSE', 'the admin port is taken')
  t.ok(f1.pids().every(alive), 'both servers outlived the failed start')

  const f3 = new Cli(t, ['run', '--config', file])
  await f3.waitEvent('protected')
  t.equal(f3.all('replica_process_adopted').length, 2, 'the next front adopts them again')
  t.equal(await ask(p.front, 'GET k'), 'v', 'and serves the data')
})

// Guards: a server recorded by a crashed front, whose command was changed meanwhile, was
// SIGTERMed and spawned anew, empty, and its emptied copy served.
t.test('a changed command after a crash: the recorded servers are adopted as they run',
  async (t) => {
    const { file, p } = await setup(t)
    const f1 = await crashedFront(t, file, p.front)
    writeConfig(file, p, ['--diverge-after', '1000000'])
    const f2 = new Cli(t, ['run', '--config', file])
    await f2.waitEvent('protected')
    t.equal(f2.all('replica_process_config_changed').length, 2, 'the change is logged')
    t.same(f2.all('replica_process_started'), [], 'no server started anew')
    t.ok(f1.pids().every(alive), 'the servers holding the data still run')
    t.equal(await ask(p.front, 'GET k'), 'v', 'the acknowledged write is served')
  })

// Guards: the primary lost with the backup stale: close() recorded every stopped server
// STOPPED, "all alike", and the next front served the empty copies.
t.test('the last in-sync copy lost, then a clean stop: the next front refuses', async (t) => {
  const { file, p } = await setup(t)
  const f1 = new Cli(t, ['run', '--config', file])
  await f1.waitEvent('protected')
  const c = await Client.open(p.front)
  t.teardown(() => c.close())
  c.send('SET k v\n')
  await c.waitLines(1)
  process.kill(f1.pidsOf('b')[0] as number, 'SIGKILL')
  await f1.waitEvent('replica_role', (e) => e.replica === 'b' && e.to === 'stale')
  c.send('SET k2 v2\n')
  await c.waitLines(2)
  process.kill(f1.pidsOf('a')[0] as number, 'SIGKILL')
  t.equal((await f1.waitExit(20000)).code, 1, 'the front stops: nothing can serve')
  t.ok(f1.find('serving_stopped'), 'serving stopped')

  const f2 = new Cli(t, ['run', '--config', file])
  t.equal((await f2.waitExit(20000)).code, 1, 'the next front refuses to serve')
  t.equal(f2.find('startup_failed')?.code, 'ERR_FTPROXY_NO_REPLICA', 'with the code')
  t.notOk(f2.find('listening'), 'it never listened')
})

// A directory of its own: t.testdir() is frontYaml's state_dir (wiped when called again).
function scratch (t: Test): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ftproxy-edges-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

// Guards: close() recorded every stopped server in sync; Redis with save points comes back
// with what it held, so a diverged (stale) copy counted as a backup in sync after a restart.
t.test('a stale copy that persists is still stale after a clean stop',
  { skip: haveRedis() ? false : 'redis-server not installed' }, async (t) => {
    const ports = await freePorts(2) as [number, number]
    const dir = scratch(t)
    const replicas = (['a', 'b'] as const).map((name, i) => {
      mkdirSync(path.join(dir, name))
      const port = ports[i] as number
      const command = ['redis-server', '--port', String(port), '--bind', '127.0.0.1',
        '--save', '3600 1', '--dir', path.join(dir, name)]
      return { name, port, command }
    })
    const yaml = frontYaml(t, replicas, 'protocol: resp\n')
    const f1 = await new TestFront().start(t, yaml)
    await f1.waitEvent('protected')
    const c = await RespConn.open(f1.port)
    t.teardown(() => c.close())
    t.equal(await c.command('SET', 'k', 'v1'), 'OK')
    const direct = await RespConn.open(ports[1])
    // b acknowledged the SET when it had it, and may run it a moment later: after that, then.
    await until(async () => await direct.command('GET', 'k') === 'v1', 'b to run the SET')
    t.equal(await direct.command('SET', 'k', 'tampered'), 'OK')
    direct.close()
    t.equal(await c.command('GET', 'k'), 'v1')
    await until(() => f1.role('b') === 'stale', 'b diverged')
    await f1.front.close()

    const f2 = await new TestFront().start(t, yaml)
    t.same(f2.find('state_loaded')?.stale, ['b'], 'the state still says b is stale')
    t.equal(f2.role('b'), 'stale', 'the diverged copy is not a backup')
    const d = await RespConn.open(f2.port)
    t.teardown(() => d.close())
    t.equal(await d.command('GET', 'k'), 'v1', 'served from a')
  })

// Guards: the supervised primary stopped by close() was recorded stale while the state still
// named it primary: the next front refused (ERR_FTPROXY_NO_REPLICA) although b held it all.
t.test('a supervised primary and a direct backup: after a clean stop, b serves', async (t) => {
  const [pa] = await freePorts(1) as [number]
  const b = await demoServer(t)
  const yaml = frontYaml(t, [
    { name: 'a', port: pa, command: ['ftproxy', 'demo-server', '--port', String(pa)] },
    { name: 'b', port: b.port },
  ], 'protocol: line\n')
  const f1 = await new TestFront().start(t, yaml)
  await f1.waitEvent('protected')
  t.equal(await ask(f1.port, 'SET k v'), 'OK')
  await f1.front.close()

  const f2 = new TestFront()
  const err = await f2.start(t, yaml).then(() => null, (e: { code?: string }) => e.code)
  t.equal(err, null, 'the next front starts')
  if (err !== null) return
  t.equal(f2.front.status().primary, 'b', 'from b, which was never stopped')
  t.equal(f2.role('a'), 'stale', 'a, restarted empty, is stale')
  t.equal(await ask(f2.port, 'GET k'), 'v', 'the acknowledged write is served')
})

// A demo server on a port fixed beforehand (it comes back there after a kill).
async function demoAt (t: Test, port: number): Promise<ChildProcess> {
  const proc = spawn(process.execPath, [BIN, 'demo-server', '--port', String(port)],
    { stdio: ['ignore', 'pipe', 'ignore'] })
  t.teardown(() => { proc.kill('SIGKILL') })
  let out = ''
  proc.stdout?.on('data', (d: Buffer) => { out += String(d) })
  await until(() => out.includes('"listening"'), `a demo server on ${port}`)
  return proc
}

// Its exit, not its pid: a zombie's other threads may still hold its port.
async function kill9 (proc: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => proc.once('exit', resolve))
  proc.kill('SIGKILL')
  await exited
}

// Guards: a replica down while input was logged was not recorded stale: the next front took
// it for a backup in sync (whether it came back before the restart or not).
for (const backBefore of [true, false]) {
  const when = backBefore ? 'back before' : 'still down at'
  t.test(`a replica down while input was logged, ${when} a restart: still stale`,
    async (t) => {
      const [pb] = await freePorts(1) as [number]
      const a = await demoServer(t)
      const b = await demoAt(t, pb)
      const yaml = frontYaml(t, [{ name: 'a', port: a.port }, { name: 'b', port: pb }],
        'protocol: line\n')
      const f1 = await new TestFront().start(t, yaml)
      await f1.waitEvent('protected')
      await kill9(b)
      await until(() => f1.role('b') === 'down', 'b down, before any input')
      t.equal(await ask(f1.port, 'SET k v'), 'OK')
      if (backBefore) {
        await demoAt(t, pb)
        await until(() => f1.role('b') === 'stale', 'b answers: stale, it missed input')
      }
      await f1.front.close()
      if (!backBefore) await demoAt(t, pb)

      const f2 = await new TestFront().start(t, yaml)
      t.same(f2.find('state_loaded')?.stale, ['b'], 'the state says b is stale')
      t.equal(f2.role('b'), 'stale', 'b is not a backup')
    })
}
