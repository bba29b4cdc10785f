import t from 'tap'
import type { Test } from 'tap'
import { spawn } from 'node:child_process'
import { PassThrough } from 'node:stream'
import { runDemoReseed } from '../lib/demo-reseed.js'
import { startDemoServer, type DemoServer } from '../lib/demo-server.js'
import { BIN, Client, demoServer } from './helpers/cluster.js'
import { freePort } from './helpers/ports.js'
import { until } from './helpers/until.js'

// Sends `lines` on a fresh connection to a demo server; resolves with one reply per line.
async function ask (port: number, lines: string[]): Promise<string[]> {
  const c = await Client.open(port)
  try {
    c.send(Buffer.from(lines.map((l) => l + '\n').join(''), 'latin1'))
    const replies = await c.waitLines(lines.length)
    if (replies.length < lines.length) throw new Error(`${replies.length} of ${lines.length}`)
    return replies
  } finally {
    c.close()
  }
}

const value = (i: number): string => `value ${i} with  spaces \xe9\xff\x01`

// Fills a server with n keys (key:0 … key:n-1); `extra` SETs first.
async function fill (port: number, n: number, extra: string[] = []): Promise<void> {
  const sets = [...extra, ...Array.from({ length: n }, (_, i) => `SET key:${i} ${value(i)}`)]
  const replies = await ask(port, sets)
  if (!replies.every((r) => r === 'OK')) throw new Error('a SET failed')
}

const entries = async (port: number): Promise<number> => Number((await ask(port, ['DUMP']))[0])

function env (source: number, target: number): NodeJS.ProcessEnv {
  return {
    FTPROXY_RESEED_SOURCE: 'a',
    FTPROXY_RESEED_SOURCE_ADDRESS: `127.0.0.1:${source}`,
    FTPROXY_RESEED_TARGET: 'b',
    FTPROXY_RESEED_TARGET_ADDRESS: `127.0.0.1:${target}`,
  }
}

/** `ftproxy demo-reseed` as the front runs it: stdin and stdout are pipes. */
function reseedProcess (t: Test, vars: NodeJS.ProcessEnv) {
  const proc = spawn(process.execPath, [BIN, 'demo-reseed'], {
    env: { ...process.env, ...vars }, stdio: ['pipe', 'pipe', 'pipe'],
  })
  const run = { proc, stdout: '', stderr: '', code: undefined as number | null | undefined }
  t.teardown(() => { if (run.code === undefined) proc.kill('SIGKILL') })
  proc.stdout.setEncoding('utf8')
  proc.stderr.setEncoding('utf8')
  proc.stdout.on('data', (s: string) => { run.stdout += s })
  proc.stderr.on('data', (s: string) => { run.stderr += s })
  proc.once('close', (code) => { run.code = code })
  const exited = async (): Promise<number | null> => {
    await until(() => run.code !== undefined, `demo-reseed to exit\n${run.stderr}`, 30_000)
    return run.code ?? null
  }
  return { run, exited }
}

t.test('demo-reseed end to end: ready, cut, the target equals the source', async (t) => {
  const source = await demoServer(t)
  const target = await demoServer(t)
  const n = 30_000 // about 1.5 MB: more batches than the pipeline window
  await fill(source.port, n)
  await fill(target.port, 0, ['SET stale 1', 'SET key:7 stale'])
  const { run, exited } = reseedProcess(t, env(source.port, target.port))
  await until(() => run.stdout.includes('ready\n') || run.code !== undefined, 'ready')
  t.equal(run.stdout, 'ready\n')
  t.same(await ask(target.port, ['GET stale', 'GET key:7']), ['1', 'stale'],
    'the prepare phase leaves the target alone')
  run.proc.stdin.write('cut\n')
  t.equal(await exited(), 0, run.stderr)
  t.match(run.stdout, new RegExp(`^ready\\ncopied ${n} entries .*\\n$`))
  t.equal(run.stderr, '')
  const sample = [0, 1, 7, 999, 12_345, 29_998, n - 1]
  t.same(await ask(target.port, sample.map((i) => `GET key:${i}`)), sample.map(value),
    'sampled keys are equal')
  t.same(await ask(target.port, ['GET stale']), ['(nil)'], 'the target\'s own keys are gone')
  t.equal(await entries(target.port), n)
  t.equal(await entries(source.port), n, 'the source is unchanged')
})

t.test('demo-reseed: stdin closed before cut exits 1, the target untouched', async (t) => {
  const source = await demoServer(t)
  const target = await demoServer(t)
  await fill(source.port, 100)
  await fill(target.port, 3)
  const { run, exited } = reseedProcess(t, env(source.port, target.port))
  await until(() => run.stdout.includes('ready\n') || run.code !== undefined, 'ready')
  run.proc.stdin.end()
  t.equal(await exited(), 1)
  t.equal(run.stderr.split('\n').length, 2, `one line on stderr: ${run.stderr}`)
  t.equal(await entries(target.port), 3, 'the target is as it was')
})

t.test('demo-reseed: an unreachable source exits 1 before ready', async (t) => {
  const target = await demoServer(t)
  await fill(target.port, 3)
  const { run, exited } = reseedProcess(t, env(await freePort(), target.port))
  t.equal(await exited(), 1)
  t.notMatch(run.stdout, /ready/)
  t.match(run.stderr, /^ftproxy demo-reseed: .*\n$/)
  t.equal(await entries(target.port), 3)
})

// In this process: the recipe with PassThrough stdio, against servers in this process.
async function servers (t: Test): Promise<[DemoServer, DemoServer]> {
  const a = await startDemoServer()
  const b = await startDemoServer()
  t.teardown(() => Promise.all([a.close(), b.close()]))
  return [a, b]
}

function inProcess (vars: NodeJS.ProcessEnv) {
  const io = {
    env: vars, stdin: new PassThrough(), stdout: new PassThrough(), stderr: new PassThrough(),
  }
  const out = { stdout: '', stderr: '' }
  io.stdout.on('data', (b: Buffer) => { out.stdout += b.toString() })
  io.stderr.on('data', (b: Buffer) => { out.stderr += b.toString() })
  const code = runDemoReseed(io)
  const ready = (): Promise<void> => until(() => out.stdout === 'ready\n', 'ready')
  return { io, out, code, ready }
}

t.test('runDemoReseed: a cut followed by the end of stdin copies', async (t) => {
  const [a, b] = await servers(t)
  await fill(a.address.port, 50)
  const r = inProcess(env(a.address.port, b.address.port))
  await r.ready()
  r.io.stdin.end('\ncut\n') // a front may close stdin once it wrote cut
  t.equal(await r.code, 0, r.out.stderr)
  t.equal(b.stats().entries, 50)
})

t.test('runDemoReseed: failures exit 1 and leave the target alone', async (t) => {
  const [a, b] = await servers(t)
  await fill(a.address.port, 10)
  await fill(b.address.port, 2)
  const port = { a: a.address.port, b: b.address.port }
  const fails = async (what: string, vars: NodeJS.ProcessEnv,
    act?: (r: ReturnType<typeof inProcess>) => Promise<void>): Promise<void> => {
    const r = inProcess(vars)
    if (act !== undefined) await act(r)
    t.equal(await r.code, 1, what)
    t.match(r.out.stderr, /^ftproxy demo-reseed: [^\n]+\n$/, `${what}: one line on stderr`)
  }
  await fails('no source address', { FTPROXY_RESEED_TARGET_ADDRESS: `127.0.0.1:${port.b}` })
  await fails('a bad target address',
    { ...env(port.a, port.b), FTPROXY_RESEED_TARGET_ADDRESS: 'b' })
  await fails('the same server twice', env(port.a, port.a))
  await fails('a line other than cut', env(port.a, port.b), async (r) => {
    await r.ready()
    r.io.stdin.write('go\n')
  })
  t.equal(b.stats().entries, 2, 'the target is as it was')

  // The target goes away while the command waits for cut: it fails at once.
  await fails('the target closed before the cut', env(port.a, port.b), async (r) => {
    await r.ready()
    await b.close()
  })
})
