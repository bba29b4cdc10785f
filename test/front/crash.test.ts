// The front itself dies (kill -9), alone or with a server, at any moment of a re-seed: the
// next front never serves from a server that lost its state, nor counts a half-seeded one
// as in sync. Fronts and demo servers are real processes here.

import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { BIN, Client, haveRedis } from '../helpers/cluster.js'
import { freePorts } from '../helpers/ports.js'
import { alive, Cli } from '../helpers/proc.js'
import { directRedis, type DirectRedis } from '../helpers/redis-direct.js'
import { RespConn } from '../helpers/resp.js'
import { until } from '../helpers/until.js'

interface Setup {
  file: string
  port: number
  dir: string
  backupPort: number
  write: (reseed: string) => void
}

async function setup (t: Test): Promise<Setup> {
  const dir = t.testdir({ state: {} })
  const [port, pa, pb] = await freePorts(3) as [number, number, number]
  const file = path.join(dir, 'ftproxy.yaml')
  const write = (reseed: string): void => writeFileSync(file, [
    `listen: 127.0.0.1:${port}`,
    `state_dir: ${JSON.stringify(path.join(dir, 'state'))}`,
    'protocol: line',
    'replicas:',
    `  - { name: a, address: "127.0.0.1:${pa}", command: [ftproxy, demo-server, --port, "${pa}"] }`,
    `  - { name: b, address: "127.0.0.1:${pb}", command: [ftproxy, demo-server, --port, "${pb}"] }`,
    'health_check: { interval: 200ms, timeout: 200ms, fall: 2, rise: 1 }',
    'timeouts: { connect: 1s, stall: 1s, linger: 1s }',
    'log: { level: info, format: json }',
    'admin: { listen: 127.0.0.1:0 }',
    reseed,
    '',
  ].join('\n'))
  write('reseed: { command: [ftproxy, demo-reseed], timeout: 20s }')
  return { file, port, dir, backupPort: pb, write }
}

// Kills whatever a front left running (its servers outlive it now), by pid.
function reap (t: Test, front: Cli): void {
  t.teardown(() => {
    for (const pid of front.pids()) if (alive(pid)) process.kill(pid, 'SIGKILL')
  })
}

async function start (t: Test, s: Setup): Promise<Cli> {
  const front = new Cli(t, ['run', '--config', s.file])
  reap(t, front)
  await front.waitEvent('listening')
  return front
}

async function ask (c: Client, line: string): Promise<string> {
  const n = c.lines.length
  c.send(`${line}\n`)
  await c.waitLines(n + 1)
  return c.lines[n] as string
}

/**
 * Until the backup's server has run the last write. A direct replica's acknowledgement
 * comes from the front's own process (a serial protocol acknowledges an entry it holds for
 * its turn): one that dies with the primary loses what the backup had not been given yet.
 * These tests are about emptied copies, not that window (see README, guarantees).
 */
async function backupRan (port: number, key: string, value: string): Promise<void> {
  const c = await Client.open(port)
  await until(async () => await ask(c, `GET ${key}`) === value, 'the backup to run the write')
  c.close()
}

async function fill (port: number, n: number): Promise<Client> {
  const c = await Client.open(port)
  c.send(Array.from({ length: n }, (_, i) => `SET k${i} v${i}\n`).join(''))
  await c.waitLines(n)
  return c
}

const roleOf = (front: Cli, name: string): unknown =>
  front.all('replica_role').filter((e) => e.replica === name).at(-1)?.to

t.test('the front alone dies: the next one adopts its servers, data and all', async (t) => {
  const s = await setup(t)
  const f1 = await start(t, s)
  await f1.waitEvent('protected')
  ;(await fill(s.port, 100)).close()
  const pids = f1.pids()
  f1.proc.kill('SIGKILL')
  await f1.waitExit()
  t.ok(pids.every(alive), 'both demo servers outlived their front')

  const f2 = await start(t, s)
  t.equal(f2.all('replica_process_adopted').length, 2, 'both adopted')
  t.same(f2.all('replica_process_started'), [], 'none started anew')
  t.notOk(f2.find('replica_restarted'), 'no server counted as restarted')
  await f2.waitEvent('protected')
  const c = await Client.open(s.port)
  t.teardown(() => c.close())
  t.equal(await ask(c, 'GET k7'), 'v7', 'the data is still there')
})

t.test('the front and the primary die together; the primary comes back first', async (t) => {
  const s = await setup(t)
  const f1 = await start(t, s)
  await f1.waitEvent('protected')
  ;(await fill(s.port, 100)).close()
  await backupRan(s.backupPort, 'k99', 'v99')
  const [a] = f1.pidsOf('a')
  f1.proc.kill('SIGKILL')
  process.kill(a as number, 'SIGKILL')
  await f1.waitExit()

  // The next front starts a (empty) anew and adopts b, which holds the data.
  const f2 = await start(t, s)
  const restarted = await f2.waitEvent('replica_restarted')
  t.equal(restarted.replica, 'a', 'a is known to have lost its state')
  t.equal(f2.find('listening')?.primary, 'b', 'b serves')
  const c = await Client.open(s.port)
  t.teardown(() => c.close())
  t.equal(await ask(c, 'GET k7'), 'v7', 'no data served from the emptied copy')
  await f2.waitEvent('reseeded', (e) => e.replica === 'a', 30000)
  await f2.waitEvent('protected')
  t.equal(await ask(c, 'GET k8'), 'v8')
})

t.test('every server lost its state: refused, until an operator vouches for one', async (t) => {
  const s = await setup(t)
  const f1 = await start(t, s)
  await f1.waitEvent('protected')
  ;(await fill(s.port, 10)).close()
  const pids = f1.pids()
  f1.proc.kill('SIGKILL')
  for (const pid of pids) process.kill(pid, 'SIGKILL')
  await f1.waitExit()

  const f2 = new Cli(t, ['run', '--config', s.file])
  reap(t, f2)
  const exit = await f2.waitExit(20000)
  t.equal(exit.code, 1, 'the front refuses to serve')
  t.match(f2.stderr + f2.stdout, /ERR_FTPROXY_STATE_LOST/, 'with the code')
  t.match(f2.stderr + f2.stdout, /\ba \(was proc:/, 'naming each replica and what changed')

  const f3 = new Cli(t, ['run', '--config', s.file, '--accept-state-from', 'b'])
  reap(t, f3)
  await f3.waitEvent('listening')
  t.ok(f3.find('state_accepted'), 'the operator\'s choice is logged')
  t.equal(f3.find('listening')?.primary, 'b')
  await f3.waitEvent('reseeded', (e) => e.replica === 'a', 30000)
})

// A command that holds the re-seed where the test wants it, and says where it is.
function holdingCommand (s: Setup, at: 'prepare' | 'cut'): string {
  const marker = path.join(s.dir, `${at}.pid`)
  const script = path.join(s.dir, `hold-${at}.sh`)
  const copy = `printf 'cut\\n' | ${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} ` +
    'demo-reseed > /dev/null'
  const body = at === 'prepare'
    ? `echo $$ > ${marker}.tmp && mv ${marker}.tmp ${marker}\nexec sleep 60\n`
    : `echo ready\nread line\n${copy}\necho $$ > ${marker}.tmp && mv ${marker}.tmp ${marker}\n` +
      'exec sleep 60\n'
  writeFileSync(script, `#!/bin/sh\n${body}`, { mode: 0o755 })
  return marker
}

for (const at of ['prepare', 'cut'] as const) {
  t.test(`the front dies during a re-seed's ${at}: the target is still stale after`,
    async (t) => {
      const s = await setup(t)
      const marker = holdingCommand(s, at)
      s.write(`reseed: { command: [${JSON.stringify(path.join(s.dir, `hold-${at}.sh`))}], ` +
        'timeout: 60s }')
      const f1 = await start(t, s)
      await f1.waitEvent('protected')
      ;(await fill(s.port, 100)).close()
      const [b] = f1.pidsOf('b')
      process.kill(b as number, 'SIGKILL')
      await f1.waitEvent('reseed_started', (e) => e.replica === 'b', 20000)
      let held = 0
      await until(() => {
        try { held = Number(readFileSync(marker, 'utf8')) } catch {}
        return held > 0
      }, `the command in its ${at}`, 20000)
      t.teardown(() => { try { process.kill(-held, 'SIGKILL') } catch {} })
      if (at === 'cut') t.equal(roleOf(f1, 'b'), 'seeding', 'b is being seeded, input held')
      f1.proc.kill('SIGKILL')
      await f1.waitExit()

      s.write('reseed: { command: [ftproxy, demo-reseed], timeout: 20s }')
      const f2 = await start(t, s)
      const loaded = f2.find('state_loaded')
      t.same(loaded?.stale, ['b'], 'the state still says b is stale')
      t.notOk(f2.find('protected'), 'not protected by the half-seeded copy')
      const c = await Client.open(s.port)
      t.teardown(() => c.close())
      t.equal(await ask(c, 'GET k9'), 'v9', 'served from a')
      await f2.waitEvent('reseeded', (e) => e.replica === 'b', 30000)
      await f2.waitEvent('protected')
    })
}

// Redis copies the front does not supervise, protocol resp: a server is known by its run_id.
// k = v is written through a front; once b ran it, the front and a die together, and a
// comes back empty (a new run_id), started with `args`.
async function frontAndPrimaryDie (t: Test, args: string[] = []): Promise<DirectRedis> {
  const r = await directRedis(t)
  const a = await r.start('a')
  await r.start('b')
  const f1 = await r.serve()
  await r.backupRan()
  f1.proc.kill('SIGKILL')
  a.kill('SIGKILL')
  await f1.waitExit()
  await until(() => a.exitCode !== null || a.signalCode !== null, 'a gone')
  await r.start('a', args)
  return r
}

/** The new front serves from b, which still holds k = v. */
async function servedFromB (t: Test, f: Cli, r: DirectRedis): Promise<void> {
  await f.waitEvent('listening')
  t.equal(f.find('listening')?.primary, 'b', 'b serves')
  const d = await RespConn.open(r.port)
  t.teardown(() => d.close())
  t.equal(await d.command('GET', 'k'), 'v', 'no data served from the emptied copy')
}

t.test('redis: the front and the primary die together; the primary comes back empty first',
  { skip: haveRedis() ? false : 'redis-server not installed' }, async (t) => {
    const r = await frontAndPrimaryDie(t)
    const f2 = new Cli(t, ['run', '--config', r.file])
    const restarted = await f2.waitEvent('replica_restarted', undefined, 20000)
    t.equal(restarted.replica, 'a', 'a\'s run_id changed: its state is gone')
    t.match(String(restarted.recorded), /^redis:/)
    await servedFromB(t, f2, r)
  })

// A restarted primary that is busy when the front starts (here DEBUG SLEEP, longer than
// timeouts.connect) does not answer INFO server: it is not taken for the process on record.
t.test('redis: a restarted primary too busy to say its run_id is not served from',
  { skip: haveRedis() ? false : 'redis-server not installed' }, async (t) => {
    const r = await frontAndPrimaryDie(t, ['--enable-debug-command', 'yes'])
    const busy = await RespConn.open(r.ports.a)
    t.teardown(() => busy.close())
    busy.send([['DEBUG', 'SLEEP', '4']])
    const f2 = new Cli(t, ['run', '--config', r.file])
    const restarted = await f2.waitEvent('replica_restarted', undefined, 20000)
    t.match(restarted, { replica: 'a', now: 'unreadable' }, 'a could not say: stale')
    await servedFromB(t, f2, r)
  })

// ...but one that refuses to say (a client set requirepass through the front: every copy
// runs it) cannot be told, as before its run_id was recorded: the next front starts.
t.test('redis: copies that came to refuse INFO do not stop the next start',
  { skip: haveRedis() ? false : 'redis-server not installed' }, async (t) => {
    const r = await directRedis(t, ['timeouts: { connect: 1s, stall: 1s, linger: 1s }'])
    await r.start('a')
    await r.start('b')
    const f = await r.serve() // a's and b's run_ids recorded
    const c = await RespConn.open(r.port)
    t.equal(await c.command('CONFIG', 'SET', 'requirepass', 'pw'), 'OK', 'requirepass set')
    c.close()
    f.proc.kill('SIGTERM')
    await f.waitExit()
    const g = new Cli(t, ['run', '--config', r.file])
    const outcome = await Promise.race([
      g.waitEvent('protected', undefined, 20000).then(() => 'protected'),
      g.exited.then(() => 'exited'),
    ])
    t.equal(outcome, 'protected', 'the front starts again before the same two servers')
    t.notOk(g.find('replica_restarted'), 'neither is taken for a restarted one')
  })
