// Edges of a re-seed found in review (issue 11): a replica back from down, a turn still
// running on the source at the cut, a command that exits before it was told `cut`, a client
// in the middle of a line at the cut, a client that never reads what it is owed when its
// connection is closed at the cut, and an agent replica whose server restarted.

import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { spawn, type ChildProcess } from 'node:child_process'
import t from 'tap'
import type { Test } from 'tap'
import type { FtproxyError } from '../../lib/errors.js'
import {
  agentInProcess, BIN, Client, frontYaml, haveRedis, ROOT, TestFront,
} from '../helpers/cluster.js'
import { freePorts, listenLocal } from '../helpers/ports.js'
import { RespConn } from '../helpers/resp.js'
import { until } from '../helpers/until.js'

interface Fake {
  port: number
  /** What it got and ran, in order: `got X`, `ran X`. */
  log: string[]
  /** Its open connections. */
  sockets: Set<net.Socket>
  /** Stop listening and drop every connection (a server that died). */
  stop: () => Promise<void>
}

// A line server with no state: DIV answers with its name (a backup diverges), SLOW answers
// 400 ms later, BIG answers 40 MiB; anything else is echoed.
async function fake (t: Test, name: string, port = 0): Promise<Fake> {
  const log: string[] = []
  const sockets = new Set<net.Socket>()
  const server = net.createServer((s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
    s.on('error', () => {})
    let buf = ''
    s.on('data', (d) => {
      buf += String(d)
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        log.push(`got ${line}`)
        if (line === 'SLOW') {
          setTimeout(() => { log.push('ran SLOW'); s.write('slow\n') }, 400)
        } else if (line === 'BIG') s.write('x'.repeat(40 << 20) + '\n')
        else if (line === 'DIV') s.write(`${name}\n`)
        else s.write(`echo ${line}\n`)
      }
    })
  })
  const stop = async (): Promise<void> => {
    const closed = new Promise((resolve) => server.close(resolve))
    for (const s of sockets) s.destroy()
    await closed
  }
  t.teardown(stop)
  if (port === 0) port = await listenLocal(server)
  else await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  return { port, log, sockets, stop }
}

// For servers with no state: there is nothing to copy.
const NOTHING = JSON.stringify(['sh', '-c', 'echo ready; read x; exit 0'])

/** A front before two fakes, with reseed settings `reseed` (YAML flow map, inside braces). */
async function fakePair (t: Test, reseed: string, extra = ''):
Promise<{ a: Fake, b: Fake, f: TestFront }> {
  const a = await fake(t, 'a')
  const b = await fake(t, 'b')
  const f = await new TestFront().start(t, frontYaml(t, [
    { name: 'a', port: a.port }, { name: 'b', port: b.port },
  ], `protocol: line\nreseed: { command: ${NOTHING}, ${reseed} }\n${extra}`))
  return { a, b, f }
}

// Guards: a replica down while input was logged stayed 'down' for good when it answered
// again: neither reseed.auto nor POST /reseed (not stale) brought it back.
t.test('a replica back from down after input was logged is re-seeded', async (t) => {
  const { b, f } = await fakePair(t, 'timeout: 20s')
  await f.waitEvent('protected')
  await b.stop()
  await until(() => f.role('b') === 'down', 'b down, before any input')
  const c = await Client.open(f.port)
  t.teardown(() => c.close())
  c.send('x\n')
  t.same(await c.waitLines(1), ['echo x'])
  await fake(t, 'b', b.port)
  const back = await f.waitEvent('replica_role', (e) => e.replica === 'b' && e.to === 'stale')
  t.equal(back.from, 'down', 'answering again, it is stale: it missed input')
  await f.waitEvent('reseeded', (e) => e.replica === 'b')
  await until(() => f.front.status().protected, 'protected again')
  t.equal(f.role('b'), 'backup', 'b is a backup again')
})

// Guards: a turn written to the source but not answered yet passed for in sync: the cut was
// made before the source ran it.
t.test('the cut waits for a turn still running on the source', async (t) => {
  const { a, f } = await fakePair(t, 'timeout: 20s, auto: false', 'output_commit: match\n')
  const c = await Client.open(f.port)
  t.teardown(() => c.close())
  c.send('DIV\n')
  t.same(await c.waitLines(1), ['a'])
  await until(() => f.role('b') === 'stale', 'b diverged')
  c.send('SLOW\n')
  await until(() => a.log.includes('got SLOW'), 'a runs SLOW')
  await f.front.reseed('b')
  t.ok(a.log.includes('ran SLOW'), 'the cut came after the source ran SLOW')
  c.send('PING\n')
  // output_commit: match: PING's reply is released once b answered it alike.
  t.same(await c.waitLines(3), ['a', 'slow', 'echo PING'])
  t.equal(f.all('divergence').length, 1, 'no divergence after the re-seed')
  t.equal(f.role('b'), 'backup', 'b is a backup')
})

// A directory of its own: t.testdir() is frontYaml's state_dir (wiped when called again).
function scratch (t: Test): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ftproxy-edges-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Two supervised demo servers and a front re-seeding with `command` (a JSON argv). */
async function demoPairSupervised (t: Test, command: string, extra = ''): Promise<TestFront> {
  const [pa, pb] = await freePorts(2) as [number, number]
  const replicas = [pa, pb].map((port, i) => ({
    name: i === 0 ? 'a' : 'b', port, command: ['ftproxy', 'demo-server', '--port', String(port)],
  }))
  return await new TestFront().start(t, frontYaml(t, replicas,
    `protocol: line\nreseed: { command: ${command}, timeout: 20s${extra} }\n`))
}

const pidOf = (f: TestFront, name: string): number =>
  f.front.status().replicas.find((r) => r.name === name)?.pid as number

const nodeBin = `${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)}`

// Guards: a command that said `ready` and exited 0 without reading `cut` succeeded: writes
// acknowledged after its early copy were missing on the new backup, lost at a failover.
t.test('a command that exits before reading cut fails (early_exit)', async (t) => {
  const dir = scratch(t)
  const [once, copied, go] = ['once', 'copied', 'go'].map((n) => path.join(dir, n)) as
    [string, string, string]
  const script = path.join(dir, 'reseed.sh')
  // The first run copies at once, says `ready` when told to, with its stdin closed (`cut`
  // finds no reader), and exits 0. Later runs are the demo recipe.
  writeFileSync(script, [
    '#!/bin/sh',
    `if [ -e ${once} ]; then exec ${nodeBin} demo-reseed; fi`,
    `touch ${once}`,
    `printf 'cut\\n' | ${nodeBin} demo-reseed > /dev/null || exit 1`,
    `touch ${copied}`,
    `while [ ! -e ${go} ]; do sleep 0.02; done`,
    'exec 0<&-',
    'echo ready',
    '',
  ].join('\n'), { mode: 0o755 })
  const f = await demoPairSupervised(t, JSON.stringify([script]), ', auto: false')
  await f.waitEvent('protected')
  const c = await Client.open(f.port)
  t.teardown(() => c.close())
  c.send('SET k1 v1\n')
  await c.waitLines(1)
  process.kill(pidOf(f, 'b'), 'SIGKILL')
  await until(() => f.role('b') === 'stale' &&
    f.front.status().replicas.find((r) => r.name === 'b')?.health === 'up', 'b back, stale')
  const first = f.front.reseed('b').then(() => null, (err: FtproxyError) => err)
  await until(() => existsSync(copied), 'the early copy made')
  c.send('SET k2 v2\n')
  t.same(await c.waitLines(2), ['OK', 'OK'], 'a write acknowledged after the copy')
  writeFileSync(go, '')
  const err = await first
  t.equal(err?.code, 'ERR_FTPROXY_RESEED_FAILED', 'the re-seed fails')
  t.equal(err?.details.reason, 'early_exit', 'the command did not wait for the cut')
  t.equal(f.role('b'), 'stale', 'b stays stale')

  await f.front.reseed('b')
  process.kill(pidOf(f, 'a'), 'SIGKILL')
  await f.waitEvent('failover', (e) => e.from === 'a')
  c.send('GET k2\n')
  t.equal((await c.waitLines(3))[2], 'v2', 'the acknowledged write survives the failover')
})

// Guards: the line protocol carried a connection cut in the middle of a line over with an
// empty replay: the new backup got the line's tail only, and ran another request.
t.test('a connection in the middle of a line at the cut is closed cleanly', async (t) => {
  const f = await demoPairSupervised(t, '[ftproxy, demo-reseed]')
  await f.waitEvent('protected')
  const c = await Client.open(f.port)
  t.teardown(() => c.close())
  c.send('SET k v1\n')
  await c.waitLines(1)
  c.send('SET k v')
  await until(() => f.front.counters.bytes_in >= 'SET k v1\nSET k v'.length, 'half a line read')
  process.kill(pidOf(f, 'b'), 'SIGKILL')
  const ev = await f.waitEvent('reseeded', (e) => e.replica === 'b', 30000)
  t.equal(ev.closed, 1, 'closed at the cut')
  await until(() => c.ended, 'the client got its FIN')
  t.equal(c.error, null, 'an end, not a reset')
  t.same(c.lines, ['OK'], 'after every reply it was owed')

  const d = await Client.open(f.port)
  t.teardown(() => d.close())
  d.send('SET k v2\nGET k\n')
  t.same(await d.waitLines(2), ['OK', 'v2'])
  t.same(f.all('divergence'), [], 'no divergence')
  t.equal(f.role('b'), 'backup', 'b is a backup')
})

// Guards: with open_connections: close, a client that never read its replies kept its
// connection (and its server connections) forever: the end waited for a flush that never came.
t.test('a connection closed at the cut is gone within linger, read or not', async (t) => {
  const { a, f } = await fakePair(t, 'timeout: 20s, auto: false, open_connections: close')
  const lazy = await Client.open(f.port)
  t.teardown(() => lazy.close())
  lazy.socket.pause()
  lazy.send('BIG\n')
  const c = await Client.open(f.port)
  t.teardown(() => c.close())
  c.send('DIV\n')
  await until(() => f.role('b') === 'stale', 'b diverged')
  await until(() => a.log.includes('got BIG'), 'BIG sent to a')
  const cut = await f.front.reseed('b')
  t.equal(cut.closed, 2, 'both closed at the cut')
  await until(() => f.front.status().connections === 0, 'ended on every server')
  await until(() => c.ended, 'the reading client got its FIN')
  // timeouts.linger is 1 s. The front's listener counts the client sockets it still holds.
  const listener = (f.front as unknown as { server: net.Server }).server
  const held = (): Promise<number> => new Promise((resolve, reject) =>
    listener.getConnections((err, n) => { if (err) reject(err); else resolve(n) }))
  await t.resolves(until(async () => await held() === 0, 'no client socket held', 3000),
    'both client sockets released within linger, the one never read from too')
})

// ---- an agent replica ---------------------------------------------------------------------

/** redis-server on a given port (to start it again there), its files in `dir`. */
async function redisAt (t: Test, port: number, dir: string): Promise<ChildProcess> {
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1',
    '--save', '', '--appendonly', 'no', '--dir', dir, '--rdb-del-sync-files', 'yes'],
  { stdio: 'ignore' })
  t.teardown(() => { proc.kill('SIGKILL') })
  await until(async () => {
    const conn = await RespConn.open(port).catch(() => null)
    conn?.close()
    return conn !== null
  }, `redis-server on ${port}`)
  return proc
}

// Guards: a re-seeded agent replica kept its old server's incarnation on record: its next
// session's handshake named the new one, 'changed', and it was failed and re-seeded again.
t.test('an agent replica whose server restarted is re-seeded once',
  { skip: haveRedis() ? false : 'redis-server not installed' }, async (t) => {
    const dir = scratch(t)
    const [pa, pb] = await freePorts(2) as [number, number]
    await redisAt(t, pa, dir)
    const rb = await redisAt(t, pb, dir)
    const agents = await Promise.all([agentInProcess(t, pa), agentInProcess(t, pb)])
    // The recipe wants the servers; agent replicas name their agents: the test knows both.
    const wrapper = path.join(dir, 'reseed.sh')
    writeFileSync(wrapper, `#!/bin/sh
ADDR_a=127.0.0.1:${pa}
ADDR_b=127.0.0.1:${pb}
eval "export FTPROXY_RESEED_SOURCE_ADDRESS=\\$ADDR_$FTPROXY_RESEED_SOURCE"
eval "export FTPROXY_RESEED_TARGET_ADDRESS=\\$ADDR_$FTPROXY_RESEED_TARGET"
exec ${JSON.stringify(path.join(ROOT, 'config/reseed-redis.sh'))}
`, { mode: 0o755 })
    const f = await new TestFront().start(t, [
      'listen: 127.0.0.1:0',
      `state_dir: ${JSON.stringify(path.join(dir, 'state'))}`,
      'protocol: resp',
      'health_check: { interval: 100ms, timeout: 100ms, rise: 1 }',
      `reseed: { command: [${JSON.stringify(wrapper)}], timeout: 30s }`,
      'replicas:',
      ...agents.map((x, i) => `  - { name: ${'ab'[i]}, agent: "127.0.0.1:${x.port}" }`),
      '',
    ].join('\n'))
    await f.waitEvent('protected')
    const c = await RespConn.open(f.port)
    t.teardown(() => c.close())
    t.equal(await c.command('SET', 'k', 'v1'), 'OK')
    const exited = new Promise((resolve) => rb.once('exit', resolve))
    rb.kill('SIGKILL')
    await exited
    await redisAt(t, pb, dir)
    const done = await f.waitEvent('reseeded', (e) => e.replica === 'b', 30000)
    // Its next session's handshake names the new server: recorded, not taken for a restart.
    const after = f.events.indexOf(done)
    await until(() => f.role('b') !== 'backup' || f.events.slice(after).some((e) =>
      e.event === 'channel_up' && e.replica === 'b'), 'b\'s next session', 15000)
    t.equal(f.role('b'), 'backup', 'b is a backup')
    t.same(f.all('replica_restarted'), [], 'its new server is not taken for a restart')
    t.equal(f.all('reseeded').length, 1, 're-seeded once')
    t.equal(await c.command('GET', 'k'), 'v1')
  })
