// The command line as users and service managers see it: real `node bin/ftproxy` processes,
// real signals, supervised demo servers, JSON-line events read from stdout. Ports come from
// the kernel; nothing sleeps for a fixed time (every wait is for an event, with a deadline).

import t from 'tap'
import assert from 'node:assert'
import type { Test } from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { parse as parseYaml } from 'yaml'
import { Client, ROOT, demoServer } from './helpers/cluster.js'
import { Cli, runCli, waitGone } from './helpers/proc.js'
import { freePorts } from './helpers/ports.js'
import { until } from './helpers/until.js'

const PACKAGE = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as
  { version: string }
const VERSION = PACKAGE.version

/** A config for a front in front of two supervised demo servers, in a fresh test dir. */
async function runConfig (t: Test): Promise<{ file: string, port: number, stateDir: string }> {
  const dir = t.testdir({ state: {} })
  const [port, pa, pb] = await freePorts(3)
  assert.ok(port && pa && pb, 'three free ports')
  const stateDir = path.join(dir, 'state')
  const file = path.join(dir, 'ftproxy.yaml')
  writeFileSync(file, [
    `listen: 127.0.0.1:${port}`,
    `state_dir: ${JSON.stringify(stateDir)}`,
    'replicas:',
    '  - name: a',
    `    address: 127.0.0.1:${pa}`,
    `    command: [ftproxy, demo-server, --port, "${pa}"]`,
    '  - name: b',
    `    address: 127.0.0.1:${pb}`,
    `    command: [ftproxy, demo-server, --port, "${pb}"]`,
    'health_check: { interval: 200ms, timeout: 200ms, fall: 2, rise: 1 }',
    'timeouts: { connect: 1s, stall: 1s, linger: 1s }',
    'log: { level: info, format: json }',
    'admin: { listen: 127.0.0.1:0 }',
    ''
  ].join('\n'))
  return { file, port, stateDir }
}

/** Starts `ftproxy run` and waits for its `listening` event. */
async function startFront (
  t: Test, file: string
): Promise<{ front: Cli, listening: Record<string, unknown> }> {
  const front = new Cli(t, ['run', '--config', file])
  const listening = await front.waitEvent('listening')
  return { front, listening }
}

/** Waits until the client has n reply lines (or the front ended it); the lines so far. */
async function replies (c: Client, n: number, front?: Cli, ms = 15000): Promise<string[]> {
  const got = (): string =>
    `${c.lines.length}: ${JSON.stringify(c.lines.slice(-5))}\n${front?.transcript() ?? ''}`
  try {
    await until(() => c.lines.length >= n || c.ended || c.closed, `${n} reply lines`, ms)
  } catch (err) {
    throw new Error(`${(err as Error).message}; got ${got()}`)
  }
  if (c.lines.length < n) {
    throw new Error(`the connection ended before ${n} reply lines; got ${got()}`)
  }
  return c.lines
}

/** Sends one command line and returns its reply line. */
async function ask (c: Client, line: string, front?: Cli): Promise<string> {
  const n = c.lines.length
  c.send(line + '\n')
  const reply = (await replies(c, n + 1, front))[n]
  assert.ok(reply !== undefined, 'replies() returns at least n + 1 lines')
  return reply
}

/** stderr has a line that points at file:line and names the key path (the message is free). */
function namesKeyAt (t: Test, stderr: string, file: string, line: number, key: string): void {
  const at = stderr.split('\n').find((l) => l.includes(`${file}:${line}:`))
  t.ok(at, `stderr names ${file}:${line}`, { stderr })
  t.ok(at?.split(/[\s:]+/).includes(key), `${file}:${line} names ${key}`, { found: at })
}

const seq = (from: number, to: number): string[] =>
  Array.from({ length: to - from + 1 }, (_, i) => String(from + i))

// ---------------------------------------------------------------------------------------------

t.test('--version, --help, unknown command', async (t) => {
  const v = await runCli(t, ['--version'])
  t.equal(v.code, 0)
  t.equal(v.stdout.trim(), VERSION, "package.json's version")

  const h = await runCli(t, ['--help'])
  t.equal(h.code, 0)
  for (const cmd of ['run', 'check-config', 'demo-server']) {
    t.match(h.stdout, new RegExp(`^\\s*ftproxy ${cmd}\\b`, 'm'), `--help lists ${cmd}`)
  }

  const u = await runCli(t, ['no-such-command'])
  t.not(u.code, 0, 'an unknown command exits non-zero')
  t.match(u.stderr, 'no-such-command', 'and names it')

  const none = await runCli(t, [])
  t.not(none.code, 0, 'no command exits non-zero')

  const noConfig = await runCli(t, ['run'])
  t.not(noConfig.code, 0, 'run without --config exits non-zero')
  t.match(noConfig.stderr, 'config')
})

t.test('check-config', async (t) => {
  t.test('the demo config: valid, printed with the defaults filled', async (t) => {
    const r = await runCli(t, ['check-config', 'config/demo.yaml'])
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, /\bfall: 3\b/)
    const cfg = parseYaml(r.stdout) as Record<string, any>
    t.match(cfg, {
      listen: '127.0.0.1:7000',
      output_commit: 'ack',
      protocol: 'line',
      on_backup_loss: 'continue',
      replicas: [
        {
          name: 'a',
          address: '127.0.0.1:7101',
          command: ['ftproxy', 'demo-server', '--port', '7101'],
        },
        {
          name: 'b',
          address: '127.0.0.1:7102',
          command: ['ftproxy', 'demo-server', '--port', '7102'],
        },
      ],
      health_check: { interval: '1s', timeout: '500ms', fall: 3, rise: 2 },
      timeouts: { connect: '2s', stall: '3s', linger: '5s', heartbeat: '1s' },
      limits: { max_connections: 10000, max_lag: '8MiB' },
      arbiter: { kind: 'file' },
      log: { level: 'info', format: 'text' },
      admin: { listen: '127.0.0.1:7900' }
    })
    t.equal(cfg.state_dir, path.join(ROOT, 'state'),
      'state_dir resolved against the working directory')

    // What it prints is itself a valid config that prints the same.
    const dir = t.testdir({ 'effective.yaml': r.stdout })
    const again = await runCli(t, ['check-config', path.join(dir, 'effective.yaml')])
    t.equal(again.code, 0, again.stderr)
    t.equal(again.stdout, r.stdout, 'round trip')
  })

  t.test('the Redis example: valid, protocol resp, two supervised redis-server', async (t) => {
    const r = await runCli(t, ['check-config', 'config/redis.yaml'])
    t.equal(r.code, 0, r.stderr)
    const cfg = parseYaml(r.stdout) as Record<string, any>
    t.match(cfg, {
      protocol: 'resp',
      output_commit: 'ack',
      replicas: [
        { name: 'a', command: ['redis-server', '--port', String] },
        { name: 'b', command: ['redis-server', '--port', String] },
      ],
    })
    t.equal(cfg.state_dir, path.join(ROOT, 'state', 'redis'), 'a state_dir of its own')
    const dir = t.testdir({ 'effective.yaml': r.stdout })
    const again = await runCli(t, ['check-config', path.join(dir, 'effective.yaml')])
    t.equal(again.stdout, r.stdout, 'round trip')
  })

  const replicas = 'replicas:\n  - name: a\n    address: 127.0.0.1:7101\n' +
    '  - name: b\n    address: 127.0.0.1:7102\n'
  // Each case: the file, and the [key path, line] pairs stderr must name.
  const bad: Record<string, { yaml: string, want: Array<[string, number]> }> = {
    'an unknown key': {
      yaml: `listen: 127.0.0.1:7000\nlisten_backlog: 511\n${replicas}`,
      want: [['listen_backlog', 2]]
    },
    'an unknown nested key': {
      yaml: `${replicas}health_check:\n  interval: 1s\n  fal: 3\n`,
      want: [['health_check.fal', 8]]
    },
    'a bad duration': {
      yaml: `${replicas}timeouts:\n  connect: 2s\n  stall: 3 seconds\n`,
      want: [['timeouts.stall', 8]]
    },
    'an unknown protocol': {
      yaml: `${replicas}protocol: memcached\n`,
      want: [['protocol', 6]]
    },
    'a duration without a unit': {
      yaml: `${replicas}health_check: { interval: 1000 }\n`,
      want: [['health_check.interval', 6]]
    },
    'one replica only': {
      yaml: 'listen: 127.0.0.1:7000\nreplicas:\n  - name: a\n    address: 127.0.0.1:7101\n',
      want: [['replicas', 2]]
    },
    'a bad replica address': {
      yaml: 'replicas:\n  - name: a\n    address: 127.0.0.1:7101\n' +
        '  - name: b\n    address: 127.0.0.1\n',
      want: [['replicas[1].address', 5]]
    },
    'a replica that is the front itself, spelt differently': {
      yaml: 'listen: 127.0.0.1:7740\nreplicas:\n  - name: a\n    address: localhost:7740\n' +
        '  - name: b\n    address: 127.0.0.1:7102\n',
      want: [['replicas[0].address', 4]]
    },
    'a replica on the admin port': {
      yaml: `admin: { listen: "[::1]:7901" }\n${replicas}  - name: c\n    agent: localhost:7901\n`,
      want: [['replicas[2].agent', 8]]
    },
    'an IPv4 address out of range': {
      yaml: 'replicas:\n  - name: a\n    address: 256.1.1.1:7101\n' +
        '  - name: b\n    address: 127.0.0.1:7102\n',
      want: [['replicas[0].address', 3]]
    },
    'a replica on port 0': {
      yaml: 'replicas:\n  - name: a\n    address: 127.0.0.1:7101\n' +
        '  - name: b\n    address: 127.0.0.1:0\n',
      want: [['replicas[1].address', 5]]
    },
    'several errors at once': {
      yaml: `colour: blue\n${replicas}limits: { max_lag: 8MB }\nlog: { format: xml }\n`,
      want: [['colour', 1], ['limits.max_lag', 7], ['log.format', 8]]
    }
  }
  for (const [what, { yaml, want }] of Object.entries(bad)) {
    t.test(`exits 1 on ${what}, naming key and file:line`, async (t) => {
      const file = path.join(t.testdir({ 'bad.yaml': yaml }), 'bad.yaml')
      const r = await runCli(t, ['check-config', file])
      t.equal(r.code, 1)
      t.equal(r.stdout, '', 'prints no config')
      for (const [key, line] of want) namesKeyAt(t, r.stderr, file, line, key)
    })
  }

  t.test('exits 1 on tls files that are not PEM, naming each key', async (t) => {
    const dir = t.testdir({ 'x.pem': 'not a certificate\n' })
    const file = path.join(dir, 'bad.yaml')
    const pem = path.join(dir, 'x.pem')
    writeFileSync(file, `${replicas}  - name: c\n    agent: 127.0.0.1:7200\n` +
      `    tls:\n      cert: ${pem}\n      key: ${pem}\n      ca: ${pem}\n`)
    const r = await runCli(t, ['check-config', file])
    t.equal(r.code, 1)
    t.equal(r.stdout, '', 'prints no config')
    for (const [key, line] of [['cert', 9], ['key', 10], ['ca', 11]] as const) {
      namesKeyAt(t, r.stderr, file, line, `replicas[2].tls.${key}`)
    }
  })

  t.test('exits 1 on a config over 1 MiB, without parsing it', async (t) => {
    const file = path.join(t.testdir({}), 'huge.yaml')
    writeFileSync(file, replicas + '# padding\n'.repeat(5 * 1024 * 1024 / 10))
    const r = await runCli(t, ['check-config', file])
    t.equal(r.code, 1)
    t.equal(r.stdout, '')
    t.match(r.stderr, file)
  })

  t.test('exits 1 on a missing file, naming it', async (t) => {
    const file = path.join(t.testdir({}), 'missing.yaml')
    const r = await runCli(t, ['check-config', file])
    t.equal(r.code, 1)
    t.equal(r.stdout, '')
    t.match(r.stderr, file)
    t.match(r.stderr, 'ENOENT')
  })
})

t.test('run exits 1 on a bad config, naming the key, starting nothing', async (t) => {
  const yaml = 'replicas:\n  - name: a\n    address: 127.0.0.1:7101\n' +
    '    command: [ftproxy, demo-server, --port, "7101"]\ntimeouts: { linger: forever }\n'
  const file = path.join(t.testdir({ 'bad.yaml': yaml }), 'bad.yaml')
  const r = await runCli(t, ['run', '--config', file])
  t.equal(r.code, 1)
  namesKeyAt(t, r.stderr, file, 1, 'replicas')
  namesKeyAt(t, r.stderr, file, 5, 'timeouts.linger')
  t.same(r.events, [], 'no event: nothing was started')

  const missing = await runCli(t, ['run', '--config', path.join(path.dirname(file), 'nope.yaml')])
  t.equal(missing.code, 1)
  t.match(missing.stderr, 'nope.yaml')
})

t.test('run: failover under a live connection, SIGTERM, restart after failover', async (t) => {
  const { file, port, stateDir } = await runConfig(t)

  t.test('SIGKILL of the primary: the same connection goes on, no gap', async (t) => {
    const { front, listening } = await startFront(t, file)
    t.match(listening, { address: `127.0.0.1:${port}`, epoch: 1, primary: 'a' })
    t.match(front.find('state_loaded'), { epoch: 0, primary: 'a', stale: [] })
    await front.waitEvent('protected')
    const [pidA] = front.pidsOf('a')
    const [pidB] = front.pidsOf('b')
    t.ok(pidA && pidB && pidA !== pidB, 'a pid for each demo server')
    assert.ok(pidA, 'the pid of a')

    const c = await Client.open(port)
    t.teardown(() => c.close())
    t.equal(await ask(c, 'SET greeting hello world'), 'OK')
    t.equal(await ask(c, 'GET greeting'), 'hello world')
    for (let i = 1; i <= 20; i++) t.equal(await ask(c, 'INCR n'), String(i))

    // Kill the primary with a burst in flight, then keep going on the same connection.
    c.send('INCR n\n'.repeat(20))
    process.kill(pidA, 'SIGKILL')
    await replies(c, 2 + 40, front)
    c.send('INCR n\n'.repeat(20))
    await replies(c, 2 + 60, front)
    for (let i = 61; i <= 80; i++) t.equal(await ask(c, 'INCR n', front), String(i))
    t.equal(await ask(c, 'GET greeting', front), 'hello world',
      'data written before the failover is there')
    t.same(c.lines, ['OK', 'hello world', ...seq(1, 80), 'hello world'],
      'every reply, in order, no gap, no duplicate')
    t.equal(c.closed, false, 'the client kept its connection')
    t.equal(c.error, null)

    const fo = await front.waitEvent('failover')
    t.match(fo, { from: 'a', to: 'b', epoch: 2 })
    t.type(fo.duration_ms, 'number')
    t.ok(front.find('replica_down', (e) => e.replica === 'a'), 'replica_down for a')
    t.ok(front.find('replica_process_exited', (e) => e.pid === pidA && e.signal === 'SIGKILL'),
      'the supervisor saw a die')
    t.ok(front.find('unprotected'), 'says it runs unprotected')
    t.notOk(front.find('divergence'), 'no divergence')

    front.proc.kill('SIGTERM')
    const exit = await front.waitExit()
    t.same(exit, { code: 0, signal: null }, 'SIGTERM: exit 0')
    t.match(front.find('stopping'), { signal: 'SIGTERM' })
    t.ok(front.find('shutdown'), 'logs shutdown')
    await until(() => c.ended || c.closed, 'the client connection to end', 5000)
    t.pass('the client connection is ended at shutdown')
    // Every demo server it ever started (a was restarted after the SIGKILL) is gone.
    const pids = front.pids()
    t.ok(pids.length >= 2)
    await waitGone(pids, 'supervised demo servers')
    t.notOk(front.find('replica_process_killing'),
      'the demo servers exited on SIGTERM, without SIGKILL')
  })

  t.test('restart on the same state_dir: b is primary, a is stale', async (t) => {
    const before = JSON.parse(readFileSync(path.join(stateDir, 'state.json'), 'utf8')) as
      Record<string, unknown>
    t.match(before, { primary: 'b', stale: ['a'] }, 'state.json after the failover')

    const { front, listening } = await startFront(t, file)
    const loaded = front.find('state_loaded') as Record<string, any>
    t.equal(loaded.primary, 'b')
    t.ok(loaded.epoch >= 2, `state_loaded epoch ${loaded.epoch} >= 2`)
    t.same(loaded.stale, ['a'], 'a is reported stale')
    t.equal(listening.primary, 'b')
    t.ok((listening.epoch as number) >= 2, `listening epoch ${listening.epoch as number} >= 2`)
    await front.waitEvent('unprotected')

    const c = await Client.open(port)
    t.teardown(() => c.close())
    t.equal(await ask(c, 'PING'), 'PONG')
    t.equal(await ask(c, 'SET k v2'), 'OK')
    t.equal(await ask(c, 'GET k'), 'v2')
    c.close()

    front.proc.kill('SIGTERM')
    t.same(await front.waitExit(), { code: 0, signal: null })
    t.ok(front.find('shutdown'))
    await waitGone(front.pids(), 'supervised demo servers')
    t.notOk(front.find('replica_process_killing'),
      'the demo servers exited on SIGTERM, without SIGKILL')
  })
})

t.test('SIGINT exits 0; a second front on the same state_dir exits 1 (locked)', async (t) => {
  const { file, port } = await runConfig(t)
  const { front } = await startFront(t, file)

  const second = new Cli(t, ['run', '--config', file])
  const failed = await second.waitEvent('startup_failed')
  t.equal(failed.code, 'ERR_FTPROXY_LOCKED')
  t.same(await second.waitExit(), { code: 1, signal: null }, 'the second front exits 1')
  t.same(second.pids(), [], 'the second front started no replica')
  t.notOk(second.find('listening'))

  const c = await Client.open(port)
  t.teardown(() => c.close())
  t.equal(await ask(c, 'PING'), 'PONG', 'the first front still serves')
  c.close()

  const pids = front.pids()
  front.proc.kill('SIGINT')
  t.same(await front.waitExit(), { code: 0, signal: null }, 'SIGINT: exit 0')
  t.match(front.find('stopping'), { signal: 'SIGINT' })
  t.ok(front.find('shutdown'))
  await waitGone(pids, 'supervised demo servers')
  t.notOk(front.find('replica_process_killing'),
    'the demo servers exited on SIGTERM, without SIGKILL')
})

t.test('agent: flags, a bad flag named, SIGTERM exits 0', async (t) => {
  const bad = await runCli(t, ['agent', '--server', 'nope'])
  t.equal(bad.code, 1, 'a bad --server exits 1')
  t.match(bad.stderr, /--server/, 'and names the flag')
  const none = await runCli(t, ['agent'])
  t.not(none.code, 0, 'neither --config nor --server: usage error')

  const server = await demoServer(t)
  const dir = t.testdir({})
  const agent = new Cli(t, ['agent', '--listen', '127.0.0.1:0',
    '--server', `127.0.0.1:${server.port}`, '--state-dir', `${dir}/agent-state`])
  const ev = await agent.waitEvent('listening')
  t.match(ev, { tls: false, server: `127.0.0.1:${server.port}` })
  t.notOk(agent.find('insecure_listen'), 'loopback without TLS: no warning')
  agent.proc.kill('SIGTERM')
  t.same(await agent.waitExit(), { code: 0, signal: null })
  t.ok(agent.find('shutdown'))
})

t.test('status, failover and SIGHUP against a running front', async (t) => {
  const { file, port } = await runConfig(t)
  const { front } = await startFront(t, file)
  const admin = String((await front.waitEvent('admin_listening')).address)

  const st = await runCli(t, ['status', '--admin', admin])
  t.equal(st.code, 0)
  t.match(st.stdout, /primary a\s+protected/)
  t.match(st.stdout, /^a\s+primary\s+up/m, 'a table row per replica')
  t.match(st.stdout, /^b\s+backup\s+up/m)
  const js = await runCli(t, ['status', '--admin', admin, '--json'])
  t.match(JSON.parse(js.stdout), { epoch: 1, primary: 'a', protected: true })

  const c = await Client.open(port)
  t.teardown(() => c.close())
  t.equal(await ask(c, 'INCR h'), '1')
  const fo = await runCli(t, ['failover', '--admin', admin])
  t.equal(fo.code, 0, fo.stderr)
  t.match(fo.stdout, /switched over: a -> b, epoch 2/)
  t.equal(await ask(c, 'INCR h'), '2', 'the same connection goes on, on b')
  const after = JSON.parse((await runCli(t, ['status', '--admin', admin, '--json'])).stdout) as
    { primary: string, protected: boolean }
  t.match(after, { primary: 'b', protected: true })
  const unreachable = await runCli(t, ['status', '--admin', '127.0.0.1:1'])
  t.equal(unreachable.code, 1)
  t.match(unreachable.stderr, /cannot reach the admin endpoint/)

  // SIGHUP: the log level changes at once; a change of listen or protocol needs a restart,
  // and says so.
  writeFileSync(file, readFileSync(file, 'utf8')
    .replace('level: info', 'level: debug')
    .replace(`listen: 127.0.0.1:${port}`, `listen: 127.0.0.1:${port + 1}`) + 'protocol: line\n')
  front.proc.kill('SIGHUP')
  const reload = await front.waitEvent('reload')
  t.same(reload.applied, ['log.level'])
  t.same(reload.restart_needed, ['listen', 'protocol'])
  const d = await Client.open(port)
  await front.waitEvent('connection_open')
  t.pass('debug events are logged after the reload')
  d.close()
  front.proc.kill('SIGTERM')
  t.same(await front.waitExit(), { code: 0, signal: null })
})
