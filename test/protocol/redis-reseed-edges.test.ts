// Redis sessions at a re-seed's cut, edges found in review (issue 11): a connection blocked
// in BLPOP that the cut closes, and a reattached connection whose replayed session the new
// backup leaves without answering. Supervised redis-server copies, the shipped recipe wrapped
// by each test to hold it where the test needs.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import type { FtproxyError } from '../../lib/errors.js'
import { frontYaml, haveRedis, ROOT, TestFront } from '../helpers/cluster.js'
import { freePorts } from '../helpers/ports.js'
import { pidOf } from '../helpers/redis-supervised.js'
import { RespConn, type RespValue } from '../helpers/resp.js'
import { until } from '../helpers/until.js'

const skip = haveRedis() ? false : 'redis-server not installed'

const RECIPE = JSON.stringify(path.join(ROOT, 'config/reseed-redis.sh'))

interface Pair { f: TestFront, ports: [number, number], dir: string }

/**
 * Two supervised redis-server copies (each writes in a directory of its own under `dir`) and
 * a front that re-seeds them with `script` (the body of a bash script run in dir).
 */
async function pair (t: Test, script: string, reseed = ''): Promise<Pair> {
  // Not t.testdir(): frontYaml() takes that one (and empties it).
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ftproxy-redis-edges-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'reseed.sh')
  writeFileSync(file, `#!/usr/bin/env bash\ncd ${JSON.stringify(dir)}\n${script}`, { mode: 0o755 })
  const ports = await freePorts(2) as [number, number]
  const replicas = ports.map((port, i) => {
    const own = path.join(dir, String(i))
    mkdirSync(own)
    return {
      name: 'ab'[i] as string,
      port,
      command: ['redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '',
        '--appendonly', 'no', '--dir', own, '--rdb-del-sync-files', 'yes'],
    }
  })
  const f = await new TestFront().start(t, frontYaml(t, replicas,
    `protocol: resp\nreseed: { command: [${JSON.stringify(file)}], timeout: 30s${reseed} }\n`))
  await f.waitEvent('protected')
  return { f, ports, dir }
}

/** One command straight to the server on `port`, not through the front. */
async function direct (port: number, ...args: string[]): Promise<RespValue> {
  const conn = await RespConn.open(port)
  try {
    return await conn.command(...args)
  } finally {
    conn.close()
  }
}

const blocked = async (port: number): Promise<number> =>
  Number(/blocked_clients:(\d+)/.exec(String(await direct(port, 'INFO', 'clients')))?.[1])

// Guards: a BLPOP closed at the cut still waited on the primary: an LPUSH let in after the
// cut was popped there for nobody, and kept by the new backup.
t.test('a BLPOP closed at the cut takes nothing pushed after it', { skip }, async (t) => {
  // The recipe, with `cut` passed on only once the test says so (`go`): meanwhile the test
  // sends an LPUSH, which the front holds until the cut is over.
  const { f, ports, dir } = await pair(t, `
coproc R { exec ${RECIPE}; }
exec 3<&\${R[0]} 4>&\${R[1]}
cat <&3 &
read -r line || exit 1
touch cutting
while [ ! -e go ]; do sleep 0.01; done
echo "$line" >&4
wait $R_PID
`)
  const x = await RespConn.open(f.port)
  const y = await RespConn.open(f.port)
  t.teardown(() => { x.close(); y.close() })
  x.send([['BLPOP', 'q', '0']])
  await until(async () => await blocked(ports[0]) === 1, 'x blocked on the primary')
  process.kill(pidOf(f, 'b'), 'SIGKILL')
  await until(() => existsSync(path.join(dir, 'cutting')), 'the cut under way', 30000)
  const pushed = y.command('LPUSH', 'q', 'v')
  writeFileSync(path.join(dir, 'go'), '')
  const done = await f.waitEvent('reseeded', (e) => e.replica === 'b', 30000)
  t.equal(done.closed, 1, 'the blocked connection closed at the cut')
  t.equal(await pushed, 1, 'LPUSH acknowledged')
  await until(() => x.ended, 'x got its FIN')
  t.same(x.replies, [], 'x got nothing')
  t.equal(await y.command('LLEN', 'q'), 1, 'the element is still there on the primary')
  await until(async () => await direct(ports[1], 'LLEN', 'q') === 1, 'and on the new backup')
  t.same(f.all('divergence'), [], 'no divergence')
})

// Guards: a reattached connection's replay (SELECT 3) that the new backup never answered,
// because it left first, stayed awaited for good: every later cut failed not_in_sync.
t.test('a replay left unanswered by a backup that left does not block the next cut',
  { skip }, async (t) => {
    // Once (`stop` names a pid): the target stops answering as soon as its copy is made,
    // before the front replays the connection's session on it.
    const { f, dir } = await pair(t, `
${RECIPE} || exit
if [ -e stop ]; then kill -STOP "$(cat stop)"; rm stop; fi
`, ', auto: false')
    const c = await RespConn.open(f.port)
    t.teardown(() => c.close())
    t.equal(await c.command('SELECT', '3'), 'OK')
    t.equal(await c.command('SET', 'x', '1'), 'OK')
    process.kill(pidOf(f, 'b'), 'SIGKILL')
    const backUp = (): boolean => f.role('b') === 'stale' &&
      f.front.status().replicas.find((r) => r.name === 'b')?.health === 'up'
    await until(backUp, 'b back, stale')
    const b = pidOf(f, 'b')
    t.teardown(() => { try { process.kill(b, 'SIGKILL') } catch {} }) // stopped, maybe
    writeFileSync(path.join(dir, 'stop'), String(b))
    t.equal((await f.front.reseed('b')).reattached, 1, 'its session replayed on b')
    t.equal(await c.command('SET', 'y', '1'), 'OK', 'served while b does not answer')
    await until(() => f.role('b') !== 'backup', 'b, stopped, leaves')
    process.kill(b, 'SIGCONT')
    await until(backUp, 'b answers again, stale')
    const again = await f.front.reseed('b').then(() => null, (err: FtproxyError) => err)
    t.equal(again === null ? 'reseeded' : again.details.reason, 'reseeded', 're-seeded again')
    t.equal(f.role('b'), 'backup', 'b is a backup')
    t.equal(await c.command('GET', 'x'), '1', 'the connection goes on in db 3')
  })
