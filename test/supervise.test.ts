import t from 'tap'
import assert from 'node:assert'
import type { Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { PassThrough } from 'node:stream'
import { createLogger } from '../lib/logger.js'
import type { Logger } from '../lib/logger.js'
import { FTPROXY_BIN, MAX_OUTPUT_LINE, Supervisor, resolveCommand } from '../lib/supervise.js'
import type { SupervisorOptions } from '../lib/supervise.js'
import { until, untilValue } from './helpers/until.js'
import { ROOT } from './helpers/cluster.js'
import { distUrl } from './helpers/child.js'
import { EventLog } from './helpers/events.js'
import { isAlive, startTime } from '../lib/util/proc.js'

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
  const adopts: number[] = []
  s.on('exit', (code, signal) => { exits.push({ code, signal }) })
  s.on('spawn', (pid) => { spawns.push(pid) })
  s.on('adopt', (pid) => { adopts.push(pid) })
  t.teardown(() => s.stop())
  const events = (event: string) => records.filter((r) => r.event === event)
  const output = () => events('replica_process_output').map((r) => r.fields)
  return { s, records, exits, spawns, adopts, events, output }
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

// --- the record file and adoption ---

interface Recorded { pid: number, start_time: string, command: string[], boot_id?: string }

function readRecord (file: string): Recorded | null {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Recorded
  } catch {
    return null
  }
}

// A server that writes to stdout every 50 ms and survives a broken pipe: it notes its first
// EPIPE in `<dir>/epipe`, a SIGTERM in `<dir>/term` (and then exits, unless ignoreTerm).
function server (dir: string, opts: { ignoreTerm?: boolean, tag?: string } = {}): string[] {
  const epipe = JSON.stringify(path.join(dir, 'epipe'))
  const term = JSON.stringify(path.join(dir, 'term'))
  return node(`const fs = require('fs') // ${opts.tag ?? ''}
    process.stdout.on('error', (e) => { if (e.code === 'EPIPE') fs.writeFileSync(${epipe}, '') })
    process.on('SIGTERM', () => {
      fs.writeFileSync(${term}, '')
      if (!${opts.ignoreTerm === true}) process.exit(0)
    })
    setInterval(() => process.stdout.write('tick\\n'), 50)`)
}

// The child front must run the code under test, not an older build of it.
function distFresh (t: Test): boolean {
  for (const m of ['supervise', 'util/proc', 'util/atomic-write']) {
    const built = fs.statSync(path.join(ROOT, 'dist', `${m}.js`), { throwIfNoEntry: false })
    if (!built || built.mtimeMs < fs.statSync(path.join(ROOT, 'lib', `${m}.ts`)).mtimeMs) {
      t.fail(`dist/${m}.js is missing or older than lib/${m}.ts: run npm run build`)
      return false
    }
  }
  return true
}

/**
 * A front that crashed: a node process supervising `command` with `record` is SIGKILLed once
 * its server printed and the record names it. Resolves with that server (left running,
 * killed at teardown).
 */
async function crashedFront (
  t: Test, command: string[], record: string
): Promise<{ pid: number, start: string }> {
  const script = `
    import { Supervisor } from '${distUrl('supervise.js')}'
    import { createLogger } from '${distUrl('logger.js')}'
    const s = new Supervisor({
      name: 'a', log: createLogger(), record: process.env.RECORD,
      command: JSON.parse(process.env.COMMAND),
    })
    s.start()
    setInterval(() => {}, 1000)`
  const front = spawn(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, RECORD: record, COMMAND: JSON.stringify(command) },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const closed = new Promise((resolve) => front.once('close', resolve))
  t.teardown(() => {
    if (front.exitCode === null && front.signalCode === null) front.kill('SIGKILL')
  })
  const log = new EventLog()
  front.stdout.on('data', (d: Buffer) => { log.feed(d) })
  const pid = (await log.next('replica_process_started')).pid as number
  // Up (its signal handlers installed) once it printed.
  await log.next('replica_process_output')
  const rec = await untilValue(() => readRecord(record)?.pid === pid && readRecord(record),
    'the record of the first server')
  t.teardown(() => { if (isAlive(pid, rec.start_time)) process.kill(pid, 'SIGKILL') })
  front.kill('SIGKILL')
  await closed
  return { pid, start: rec.start_time }
}

t.test('startTime and isAlive read /proc', async (t) => {
  const start = startTime(process.pid)
  assert.ok(start !== null, 'this process has a start time')
  t.match(start, /^\d+$/)
  t.ok(isAlive(process.pid, start))
  t.notOk(isAlive(process.pid, start + '1'), 'another start time: another process')
  // A comm with spaces and parentheses: the fields are counted after the last ')'.
  const odd = spawn(process.execPath, ['-e', `process.title = 'a) b (c'
    setInterval(() => {}, 1000)`], { stdio: 'ignore' })
  t.teardown(() => odd.kill('SIGKILL'))
  const pid = odd.pid as number
  await until(() => fs.readFileSync(`/proc/${pid}/stat`, 'utf8').includes('a) b (c'), 'title')
  const oddStart = startTime(pid)
  assert.ok(oddStart !== null)
  t.ok(isAlive(pid, oddStart))
  t.ok(BigInt(oddStart) >= BigInt(start), 'started after this process')
  const dead = spawnSync(process.execPath, ['-e', '']).pid
  t.equal(startTime(dead), null, 'an exited process')
  t.equal(startTime(-1), null)
  t.notOk(isAlive(dead, '1'))
})

t.test('the record names the running process, is rewritten on restart, removed by stop',
  async (t) => {
    const dir = t.testdir({})
    const record = path.join(dir, 'state', 'servers', 'a.json') // directories created
    const counter = path.join(dir, 'count')
    // Exits at once 20 times (records written back to back), then stays up.
    const script = 'n=$(cat "$0" 2>/dev/null || echo 0); echo $((n+1)) > "$0"; ' +
      '[ "$n" -ge 20 ] && exec sleep 1000; exit 1'
    const command = ['sh', '-c', script, counter]
    const { s, spawns, adopts } = supervisor(t, {
      command, record, address: '127.0.0.1:7001', restart: { initialDelayMs: 0, maxDelayMs: 0 },
    })
    s.start()
    await until(() => spawns.length === 21 && s.pid !== undefined, 'the twenty-first spawn')
    const pid = spawns[20] as number
    t.equal(fs.readlinkSync(`/proc/${pid}/fd/0`), '/dev/null', 'no stdin pipe')
    const start = startTime(pid)
    const rec = await untilValue(() => readRecord(record)?.pid === pid && readRecord(record),
      'the record of the last spawn')
    t.same(rec, {
      pid,
      start_time: start,
      boot_id: fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
      command,
      address: '127.0.0.1:7001',
    })
    t.equal(s.incarnation, `${pid}@${start}`)
    t.equal(s.adopted, false)
    t.same(adopts, [])
    t.same(fs.readdirSync(path.dirname(record)), ['a.json'], 'no temp file left')
    await s.stop()
    t.notOk(fs.existsSync(record), 'a deliberate stop leaves nothing to adopt')
    t.equal(s.incarnation, null)
    t.equal(s.pid, undefined)
  })

t.test('a crashed front\'s server survives it and is adopted; its death is a restart',
  async (t) => {
    if (!distFresh(t)) return
    const dir = t.testdir({})
    const record = path.join(dir, 'a.json')
    const command = server(dir)
    const first = await crashedFront(t, command, record)
    await until(() => fs.existsSync(path.join(dir, 'epipe')), 'a write to the broken stdout')
    t.ok(isAlive(first.pid, first.start), 'the server outlived its front and its stdout')

    const { s, spawns, adopts, exits, events } = supervisor(t, {
      command, record, restart: { initialDelayMs: 10 },
    })
    s.start()
    t.equal(s.pid, first.pid)
    t.equal(s.incarnation, `${first.pid}@${first.start}`)
    t.equal(s.adopted, true)
    await until(() => adopts.length === 1, 'adopt')
    t.same(adopts, [first.pid])
    t.same(spawns, [], 'nothing spawned')
    t.match(events('replica_process_adopted'),
      [{ level: 'info', fields: { replica: 'a', pid: first.pid, start_time: first.start } }])
    t.same(events('replica_process_record_stale'), [])

    process.kill(first.pid, 'SIGKILL')
    await until(() => exits.length === 1, 'exit seen by polling')
    t.same(exits, [{ code: null, signal: null }])
    await until(() => spawns.length === 1 && s.pid !== undefined, 'a fresh server')
    const pid = spawns[0] as number
    t.not(pid, first.pid)
    t.equal(s.adopted, false)
    t.equal(s.incarnation, `${pid}@${startTime(pid)}`)
    await until(() => readRecord(record)?.pid === pid, 'the record names the fresh server')
    await until(() => events('replica_process_output').length > 0, 'its output is logged')
    await s.stop()
    t.notOk(fs.existsSync(record))
  })

t.test('stop() on an adopted process: SIGTERM, SIGKILL, record removed', async (t) => {
  if (!distFresh(t)) return
  const dir = t.testdir({})
  const record = path.join(dir, 'a.json')
  const command = server(dir, { ignoreTerm: true })
  const first = await crashedFront(t, command, record)
  const { s, adopts, spawns, exits, events } = supervisor(t, {
    command, record, stopTimeoutMs: 300,
  })
  s.start()
  t.equal(s.adopted, true)
  await until(() => adopts.length === 1, 'adopt')
  const started = Date.now()
  await s.stop()
  t.ok(Date.now() - started >= 290, 'SIGKILL only after stopTimeoutMs')
  t.ok(fs.existsSync(path.join(dir, 'term')), 'SIGTERM first')
  t.notOk(isAlive(first.pid, first.start), 'gone')
  t.match(events('replica_process_killing'), [{ fields: { pid: first.pid, timeout_ms: 300 } }])
  t.same(exits, [{ code: null, signal: null }])
  t.same(spawns, [])
  t.equal(s.incarnation, null)
  t.notOk(fs.existsSync(record), 'record removed')
})

t.test('a stale record: the process is spawned anew, never one that is not ours', async (t) => {
  const dir = t.testdir({})
  const command = node('setInterval(() => {}, 1000)')
  const resolved = resolveCommand(command)
  const notOurs = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'],
    { stdio: 'ignore' })
  t.teardown(() => notOurs.kill('SIGKILL'))
  const sameTick = startTime(notOurs.pid as number)
  const cases: Array<[string, string]> = [
    ['invalid', '{"pid": "x"'],
    ['gone', JSON.stringify({
      pid: spawnSync(process.execPath, ['-e', '']).pid, start_time: '1', command: resolved,
    })],
    ['start_time', JSON.stringify({
      pid: process.pid, start_time: startTime(process.pid) + '1', command: resolved,
    })],
    ['reboot', JSON.stringify({
      pid: process.pid, start_time: startTime(process.pid), command: resolved, boot_id: 'x',
    })],
    // The same pid and start time, but not the session leader our spawn makes: another
    // program that got the pid in the same clock tick.
    ['not_ours', JSON.stringify({ pid: notOurs.pid, start_time: sameTick, command: resolved })],
  ]
  for (const [reason, text] of cases) {
    const record = path.join(dir, `${reason}.json`)
    fs.writeFileSync(record, text)
    const { s, spawns, adopts, events } = supervisor(t, { command, record })
    s.start()
    await until(() => spawns.length === 1 && s.pid !== undefined, `${reason}: spawn`)
    t.same(adopts, [], `${reason}: not adopted`)
    t.equal(s.adopted, false)
    t.match(events('replica_process_record_stale'), [{ level: 'warn', fields: { reason } }])
    await until(() => readRecord(record)?.pid === spawns[0], `${reason}: record rewritten`)
    await s.stop()
  }
  t.equal(notOurs.exitCode, null, 'a process that is not ours is left alone')
  t.ok(isAlive(process.pid, startTime(process.pid) as string))
})

t.test('a recorded server of another command is adopted as it runs, never stopped',
  async (t) => {
    if (!distFresh(t)) return
    const dir = t.testdir({})
    const record = path.join(dir, 'a.json')
    const first = await crashedFront(t, server(dir, { tag: 'old' }), record)
    const command = server(dir, { tag: 'new' })
    const { s, spawns, adopts, events } = supervisor(t, { command, record })
    s.start()
    t.equal(s.pid, first.pid, 'the old server serves on: it may hold the only copy')
    await until(() => adopts.length === 1, 'adopted')
    t.same(spawns, [], 'nothing spawned')
    t.notOk(fs.existsSync(path.join(dir, 'term')), 'the old one got no SIGTERM')
    t.ok(isAlive(first.pid, first.start), 'the old one runs')
    t.match(events('replica_process_config_changed'), [{ fields: { pid: first.pid } }])
    await s.stop()
  })

t.test('a recorded server at another address is left running; a new one is spawned',
  async (t) => {
    if (!distFresh(t)) return
    const dir = t.testdir({})
    const record = path.join(dir, 'a.json')
    const first = await crashedFront(t, server(dir, { tag: 'old' }), record)
    t.teardown(() => { try { process.kill(first.pid, 'SIGKILL') } catch {} })
    const command = server(dir, { tag: 'old' })
    const { s, spawns, adopts, events } = supervisor(t, { command, record, address: 'x:1' })
    s.start()
    await until(() => spawns.length === 1 && s.pid !== undefined, 'the new server')
    t.same(adopts, [], 'not adopted')
    t.ok(isAlive(first.pid, first.start), 'the old one is left running')
    t.match(events('replica_process_config_changed'), [{ fields: { pid: first.pid } }])
    await until(() => readRecord(record)?.pid === spawns[0], 'record rewritten')
    await s.stop()
  })

t.test('a record that cannot be read or written is logged; the server runs anyway', async (t) => {
  const dir = t.testdir({ 'a.json': {} }) // a directory where the file should be
  const record = path.join(dir, 'a.json')
  const command = node('setInterval(() => {}, 1000)')
  const { s, spawns, events } = supervisor(t, { command, record })
  s.start()
  await until(() => spawns.length === 1, 'spawn')
  await until(() => events('replica_process_record_error').length === 2, 'read and write errors')
  t.match(events('replica_process_record_error'), [
    { level: 'error', fields: { replica: 'a', path: record, code: 'EISDIR' } },
    { level: 'error', fields: { replica: 'a', path: record, code: 'EISDIR' } },
  ])
  t.equal(s.pid, spawns[0])
  t.same(fs.readdirSync(dir), ['a.json'], 'no temp file left')
})
