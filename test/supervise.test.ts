import t from 'tap'
import assert from 'node:assert'
import type { Test } from 'tap'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { PassThrough } from 'node:stream'
import { createLogger } from '../lib/logger.js'
import type { Logger } from '../lib/logger.js'
import { FTPROXY_BIN, MAX_OUTPUT_LINE, Supervisor, resolveCommand } from '../lib/supervise.js'
import type { SupervisorOptions } from '../lib/supervise.js'
import { until } from './helpers/until.js'

interface Rec { level: string, event: string, fields: Record<string, unknown> }

// A Logger that keeps records, child fields merged in.
function fakeLogger (records: Rec[], base: Record<string, unknown> = {}): Logger {
  const at = (level: string) => (event: string, fields: Record<string, unknown> = {}) => {
    records.push({ level, event, fields: { ...base, ...fields } })
  }
  return {
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    child: (fields) => fakeLogger(records, { ...base, ...fields }),
    setLevel () {},
  }
}

function node (script: string): string[] {
  return [process.execPath, '-e', script]
}

function supervisor (t: Test, opts: Omit<SupervisorOptions, 'log' | 'name'> & { name?: string }) {
  const records: Rec[] = []
  const s = new Supervisor({ name: 'a', log: fakeLogger(records), ...opts })
  const exits: Array<{ code: number | null, signal: string | null }> = []
  const spawns: number[] = []
  s.on('exit', (code, signal) => { exits.push({ code, signal }) })
  s.on('spawn', (pid) => { spawns.push(pid) })
  t.teardown(() => s.stop())
  const events = (event: string) => records.filter((r) => r.event === event)
  const output = () => events('replica_process_output').map((r) => r.fields)
  return { s, records, exits, spawns, events, output }
}

t.test('output lines are logged, exit is reported', async (t) => {
  const long = 'y'.repeat(MAX_OUTPUT_LINE + 100)
  const { s, exits, spawns, events, output } = supervisor(t, {
    restart: false,
    command: node(`process.stdout.write('hello\\nwor'); setTimeout(() => {
      process.stdout.write('ld\\r\\n\\nïü ${long} tail\\n')
      process.stderr.write('oops')
      process.exitCode = 3
    }, 20)`),
  })
  s.start()
  await until(() => exits.length === 1, 'exit')
  t.same(exits, [{ code: 3, signal: null }])
  t.equal(spawns.length, 1)
  t.equal(s.pid, undefined, 'no pid once exited')
  await until(() => output().length === 5, 'five output lines')
  const lines = output()
  t.same(lines.filter((l) => l.stream === 'stdout').map((l) => l.line),
    ['hello', 'world', '', ('ïü ' + long).slice(0, MAX_OUTPUT_LINE - 2)],
    'split across chunks, \\r stripped, capped')
  const capped = lines[3]
  assert.ok(capped, 'a fourth output line')
  t.equal(Buffer.byteLength(capped.line as string), MAX_OUTPUT_LINE)
  t.equal(capped.truncated, true)
  t.match(lines.find((l) => l.stream === 'stderr'),
    { replica: 'a', stream: 'stderr', line: 'oops' },
    'a last line without newline is logged at EOF')
  t.ok(events('replica_process_output')
    .every((r) => r.level === (r.fields.stream === 'stderr' ? 'warn' : 'info')))
  t.match(events('replica_process_started'),
    [{ level: 'info', fields: { replica: 'a', pid: spawns[0] } }])
  t.match(events('replica_process_started')[0]?.fields.command, [process.execPath, '-e', /hello/])
  t.match(events('replica_process_exited'),
    [{ fields: { replica: 'a', pid: spawns[0], code: 3, signal: null } }])
  t.same(events('replica_process_restarting'), [], 'restart: false')
})

t.test('pid, env and cwd', async (t) => {
  const cwd = fs.realpathSync(os.tmpdir())
  const { s, spawns, output } = supervisor(t, {
    restart: false,
    cwd,
    env: { ...process.env, FTPROXY_TEST_VALUE: 'v42' },
    command: node('console.log(process.cwd()); console.log(process.env.FTPROXY_TEST_VALUE); ' +
      'setInterval(() => {}, 1000)'),
  })
  t.equal(s.pid, undefined)
  s.start()
  s.start() // a second start while running is a no-op
  await until(() => output().length === 2, 'output')
  t.same(output().map((o) => o.line), [cwd, 'v42'])
  t.equal(s.pid, spawns[0])
  t.equal(spawns.length, 1)
  await s.stop()
  t.equal(s.pid, undefined)
})

t.test('restart with doubling backoff up to the maximum', async (t) => {
  const { s, spawns, exits, events } = supervisor(t, {
    restart: { initialDelayMs: 10, maxDelayMs: 40 },
    command: node('process.exit(1)'),
  })
  s.start()
  await until(() => spawns.length >= 5, 'five spawns')
  t.same(events('replica_process_restarting').slice(0, 4).map((r) => r.fields.delay_ms),
    [10, 20, 40, 40])
  t.ok(events('replica_process_restarting').every((r) => r.fields.replica === 'a'))
  t.ok(exits.every((e) => e.code === 1))
  await s.stop()
  const n = spawns.length
  // The one negative check here: nothing is respawned after stop (several restart delays).
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.equal(spawns.length, n, 'no restart after stop()')
})

t.test('a child that stayed up resets the backoff', async (t) => {
  const { s, spawns, events } = supervisor(t, {
    restart: { initialDelayMs: 10, maxDelayMs: 1000, resetAfterMs: 30 },
    command: node('setTimeout(() => process.exit(2), 60)'),
  })
  s.start()
  await until(() => spawns.length >= 3, 'three spawns')
  t.same(events('replica_process_restarting').slice(0, 2).map((r) => r.fields.delay_ms), [10, 10])
})

t.test('stop(): SIGTERM, and SIGKILL when it is ignored', async (t) => {
  const { s, exits, events, output } = supervisor(t, {
    restart: { initialDelayMs: 10 },
    stopTimeoutMs: 100,
    command: node(`process.on('SIGTERM', () => console.log('ignoring SIGTERM'))
      console.log('ready'); setInterval(() => {}, 1000)`),
  })
  s.start()
  await until(() => output().length === 1, 'ready')
  const started = Date.now()
  await s.stop()
  t.ok(Date.now() - started >= 90, 'waited stopTimeoutMs before SIGKILL')
  t.same(exits, [{ code: null, signal: 'SIGKILL' }])
  await until(() => output().length === 2, 'the SIGTERM handler output')
  t.equal(output()[1]?.line, 'ignoring SIGTERM', 'SIGTERM came first')
  t.match(events('replica_process_killing'),
    [{ level: 'warn', fields: { replica: 'a', timeout_ms: 100 } }])
  t.same(events('replica_process_restarting'), [], 'no restart after stop()')
  await s.stop() // no child: resolves at once
})

t.test('stop(): a child that obeys SIGTERM', async (t) => {
  const { s, exits, spawns, events } = supervisor(t, {
    stopTimeoutMs: 10_000,
    command: node('setInterval(() => {}, 1000)'),
  })
  s.start()
  await until(() => spawns.length === 1, 'spawn')
  const a = s.stop()
  t.equal(s.stop(), a, 'concurrent stops share one promise')
  await a
  t.same(exits, [{ code: null, signal: 'SIGTERM' }])
  t.same(events('replica_process_killing'), [])
  // A stopped supervisor can be started again.
  s.start()
  await until(() => spawns.length === 2, 'second spawn')
  await s.stop()
  t.equal(exits.length, 2)
})

t.test('stop() during a restart delay cancels the restart', async (t) => {
  const { s, spawns, exits } = supervisor(t, {
    restart: { initialDelayMs: 50 },
    command: node('process.exit(0)'),
  })
  s.start()
  await until(() => exits.length === 1, 'exit')
  await s.stop()
  await new Promise((resolve) => setTimeout(resolve, 150)) // several restart delays
  t.equal(spawns.length, 1)
})

t.test('a command that does not exist', async (t) => {
  const { s, exits, spawns, events } = supervisor(t, {
    restart: false,
    command: ['/nonexistent/ftproxy-no-such-binary', '--flag'],
  })
  s.start()
  await until(() => exits.length === 1, 'exit')
  t.same(exits, [{ code: null, signal: null }])
  t.same(spawns, [])
  t.match(events('replica_process_error'), [{ level: 'error', fields: { replica: 'a', code: 'ENOENT', error: /ENOENT/ } }])
  t.equal(s.pid, undefined)
  await s.stop()
})

t.test('a command that does not exist is retried with backoff, and stop() ends it', async (t) => {
  const { s, exits, events } = supervisor(t, {
    restart: { initialDelayMs: 5, maxDelayMs: 10 },
    command: ['/nonexistent/ftproxy-no-such-binary'],
  })
  s.start()
  await until(() => exits.length >= 3, 'three failed spawns')
  t.ok(events('replica_process_restarting').length >= 2)
  // stop() right after start(), before the spawn failure is reported, still resolves.
  await s.stop()
  s.start()
  await s.stop()
  t.pass('stopped')
})

t.test('resolveCommand: ftproxy runs this package with the current node', async (t) => {
  t.same(resolveCommand(['redis-server', '--port', '1']), ['redis-server', '--port', '1'])
  const [exe, bin, ...rest] = resolveCommand(['ftproxy', 'demo-server', '--port', '7101'])
  t.equal(exe, process.execPath)
  t.equal(bin, FTPROXY_BIN)
  assert.ok(bin !== undefined, 'a script after node')
  t.ok(path.isAbsolute(bin))
  t.equal(bin, path.resolve(import.meta.dirname, '../bin/ftproxy'))
  t.ok(fs.existsSync(bin), 'bin/ftproxy exists')
  t.same(rest, ['demo-server', '--port', '7101'])
  t.throws(() => new Supervisor({ name: 'x', command: [], log: fakeLogger([]) }), TypeError)
})

t.test('events through the real JSON logger', async (t) => {
  const stream = new PassThrough()
  let text = ''
  stream.on('data', (b: Buffer) => { text += b.toString() })
  const s = new Supervisor({
    name: 'b',
    command: node('console.log("hi there")'),
    log: createLogger({ stream }),
    restart: false,
  })
  t.teardown(() => s.stop())
  const exited = new Promise((resolve) => { s.once('exit', resolve) })
  s.start()
  await exited
  await until(() => text.includes('replica_process_output') &&
    text.includes('replica_process_exited'), 'log lines')
  const recs = text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
  const output = { replica: 'b', stream: 'stdout', line: 'hi there', level: 'info' }
  t.match(recs.find((r) => r.event === 'replica_process_output'),
    { event: 'replica_process_output', ...output })
  t.match(recs.find((r) => r.event === 'replica_process_exited'),
    { replica: 'b', code: 0, signal: null })
})
