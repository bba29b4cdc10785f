// The real redis-cli through a front with protocol: resp. redis-cli sends COMMAND DOCS as it
// starts (the command table, in each process's own dict order: before issue 10 this alone
// made the backup stale), then the user's commands. Commands from stdin, from arguments,
// over RESP3 (-3: HELLO 3 first), with --scan, and ten at once: the backup stays in sync.

import { spawn } from 'node:child_process'
import t from 'tap'
import { haveRedis, redisPair } from '../helpers/cluster.js'
import { converge } from '../helpers/redis-load.js'
import { until } from '../helpers/until.js'

const skip = haveRedis() ? false : 'redis-server not installed'

interface Run { code: number | null, stdout: string, stderr: string }

/** redis-cli with `args`, `input` on its stdin; resolves once it exited (at most 15 s). */
async function redisCli (args: string[], input = ''): Promise<Run> {
  const proc = spawn('redis-cli', args, { stdio: ['pipe', 'pipe', 'pipe'] })
  const run: Run & { done: boolean } = { code: null, stdout: '', stderr: '', done: false }
  proc.stdout.setEncoding('utf8').on('data', (s: string) => { run.stdout += s })
  proc.stderr.setEncoding('utf8').on('data', (s: string) => { run.stderr += s })
  proc.once('close', (code) => { run.code = code; run.done = true })
  proc.stdin.end(input)
  await until(() => run.done, `redis-cli ${args.join(' ')} to exit`, 15000)
    .finally(() => { if (!run.done) proc.kill('SIGKILL') })
  return run
}

t.test('redis-cli through the front: the backup stays in sync', { skip }, async (tt) => {
  const { a, b, f } = await redisPair(tt, 'protocol: resp\noutput_commit: ack')
  const port = ['-p', String(f.port)]
  const script = 'SET cli:k hello\nINCR cli:n\nINCR cli:n\nGET cli:k\nHSET cli:h a 1 b 2\n' +
    'HGETALL cli:h\nCOMMAND DOCS GET\nDBSIZE\n'
  const first = await redisCli(port, script)
  tt.equal(first.code, 0, `redis-cli exited 0 ${first.stderr}`)
  tt.ok(first.stdout.startsWith('OK\n1\n2\nhello\n2\na\n1\nb\n2\n'), 'the answers, in order')
  tt.ok(first.stdout.trimEnd().endsWith('\n3'), 'DBSIZE 3')
  const resp3 = await redisCli(['-3', ...port], 'HGETALL cli:h\nINCR cli:n\n')
  tt.equal(resp3.code, 0, `redis-cli -3 exited 0 ${resp3.stderr}`)
  tt.equal(resp3.stdout, 'a 1\nb 2\n3\n', 'RESP3: a map, then the count')
  const parallel = await Promise.all(Array.from({ length: 10 }, () =>
    redisCli([...port, 'INCR', 'cli:n'])))
  const counts = parallel.map((r) => Number(r.stdout.trim())).sort((x, y) => x - y)
  tt.same(counts, Array.from({ length: 10 }, (_, i) => i + 4), 'ten at once: 4..13, once each')
  const scan = await redisCli([...port, '--scan'])
  tt.same(scan.stdout.trim().split('\n').sort(), ['cli:h', 'cli:k', 'cli:n'], '--scan')
  const last = await redisCli([...port, 'GET', 'cli:n'])
  tt.equal(last.stdout, '13\n', 'the count is the one both copies hold')
  tt.same(f.all('divergence'), [], 'no divergence')
  tt.notOk(f.find('protocol_error'), 'every request framed')
  tt.notOk(f.find('unprotected'), 'never unprotected')
  tt.same(await converge(a.port, b.port), [], 'both copies identical')
  tt.equal(f.role('b'), 'backup', 'the backup is in service')
  tt.equal(f.front.status().protected, true, 'the front is protected')
})
