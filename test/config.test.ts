import t from 'tap'
import assert from 'node:assert'
import type { Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { formatHostPort, isLoopback, parseHostPort, reaches } from '../lib/address.js'
import {
  AGENT_DEFAULTS,
  agentConfigFromFlags,
  DEFAULTS,
  FLAGS_FILE,
  formatDuration,
  formatSize,
  loadAgentConfig,
  loadConfig,
  parseAgentConfig,
  parseConfig,
  parseDuration,
  parseSize,
  configWarnings,
  renderAgentConfig,
  renderConfig
} from '../lib/config/index.js'
import type { AgentConfig, Config, ReplicaConfig } from '../lib/config/index.js'
import { ConfigError } from '../lib/errors.js'
import type { ConfigIssue } from '../lib/errors.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const CWD = '/srv/ftproxy'

// YAML from numbered lines: the line numbers asserted below are the array positions + 1.
function yaml (...lines: string[]): string {
  return lines.join('\n') + '\n'
}

const TWO_REPLICAS = [
  'replicas:',
  '  - name: a',
  '    address: 127.0.0.1:7101',
  '  - name: b',
  '    address: 127.0.0.1:7102'
]

function issuesOf (t: Test, text: string): ConfigIssue[] {
  return thrownIssues(t, () => parseConfig(text, 'test.yaml', CWD))
}

function agentIssuesOf (t: Test, text: string): ConfigIssue[] {
  return thrownIssues(t, () => parseAgentConfig(text, 'agent.yaml', CWD))
}

function thrownIssues (t: Test, parse: () => unknown): ConfigIssue[] {
  try {
    parse()
  } catch (err) {
    t.ok(err instanceof ConfigError, 'throws a ConfigError')
    t.equal((err as ConfigError).code, 'ERR_FTPROXY_CONFIG')
    return (err as ConfigError).issues
  }
  t.fail('expected a ConfigError')
  return []
}

/** c.replicas[i]; fails the test when there is none. */
function replicaAt (c: Config, i: number): ReplicaConfig {
  const r = c.replicas[i]
  assert.ok(r, `replica ${i}`)
  return r
}

function addressOf (r: ReplicaConfig): string | undefined {
  return r.address !== undefined ? formatHostPort(r.address) : undefined
}

// One issue at exactly this path and line (several may share a path, e.g. none here).
function hasIssue (t: Test, issues: ConfigIssue[], path: string, line: number): void {
  const found = issues.filter((i) => i.path === path)
  t.equal(found.length, 1, `one issue at ${path}`, { issues })
  t.equal(found[0]?.line, line, `${path} at line ${line}`, { issues })
  t.ok((found[0]?.message.length ?? 0) > 0, 'has a message')
}

t.test('parseDuration', async (t) => {
  const good: Array<[string | number, number]> = [
    ['250ms', 250], ['2s', 2000], ['1m', 60_000], ['1h', 3_600_000], ['1.5s', 1500],
    ['1.1s', 1100], ['0.25s', 250], ['0', 0], [0, 0], ['0ms', 0], ['90s', 90_000], ['1.5m', 90_000]
  ]
  for (const [s, ms] of good) t.equal(parseDuration(s), ms, `${String(s)} → ${ms}`)
  const bad: unknown[] = [5, '5', 1.5, '2 s', '2S', '-1s', '1.5ms', '', 'abc', '1e3ms', '2sec',
    's', '.5s', '1.s', null, undefined, NaN, '99999999999999999h']
  for (const s of bad) t.throws(() => parseDuration(s as string), `${String(s)} is refused`)
})

t.test('formatDuration', async (t) => {
  t.equal(formatDuration(500), '500ms')
  t.equal(formatDuration(2000), '2s')
  t.equal(formatDuration(60_000), '1m')
  t.equal(formatDuration(3_600_000), '1h')
  t.equal(formatDuration(1500), '1500ms')
  t.equal(formatDuration(90_000), '90s')
  t.equal(formatDuration(0), '0ms')
  for (const ms of [1, 999, 1000, 1001, 59_999, 61_000, 7_200_000, 123_456_789]) {
    t.equal(parseDuration(formatDuration(ms)), ms, `${ms} round-trips`)
  }
})

t.test('parseSize and formatSize', async (t) => {
  const good: Array<[string | number, number]> = [
    ['512B', 512], ['64KiB', 65_536], ['8MiB', 8 * 1024 * 1024], ['1GiB', 1024 ** 3],
    ['100', 100], [100, 100], [0, 0], ['1.5KiB', 1536], ['0.5MiB', 512 * 1024]
  ]
  for (const [s, n] of good) t.equal(parseSize(s), n, `${String(s)} → ${n}`)
  const bad: unknown[] = ['64KB', '8MB', '1GB', '8mib', '64K', '1TiB', '-1', -1, 1.5, '1.3B',
    '0.1KiB', '', 'KiB', '8 MiB', null, '99999999999GiB']
  for (const s of bad) t.throws(() => parseSize(s as string), `${String(s)} is refused`)

  t.equal(formatSize(8 * 1024 * 1024), '8MiB')
  t.equal(formatSize(65_536), '64KiB')
  t.equal(formatSize(100), '100B')
  t.equal(formatSize(1024 ** 3), '1GiB')
  t.equal(formatSize(1536), '1536B')
  t.equal(formatSize(0), '0B')
  for (const n of [1, 1023, 1024, 1025, 3 * 1024 * 1024, 5 * 1024 ** 3]) {
    t.equal(parseSize(formatSize(n)), n, `${n} round-trips`)
  }
})

t.test('parseHostPort and formatHostPort', async (t) => {
  t.same(parseHostPort('127.0.0.1:7000'), { host: '127.0.0.1', port: 7000 })
  t.same(parseHostPort('localhost:7000'), { host: 'localhost', port: 7000 })
  t.same(parseHostPort('[::1]:7000'), { host: '::1', port: 7000 })
  t.same(parseHostPort('db-1.example.com:65535'), { host: 'db-1.example.com', port: 65535 })
  t.same(parseHostPort('127.0.0.1:0'), { host: '127.0.0.1', port: 0 })
  t.same(parseHostPort('[::]:80'), { host: '::', port: 80 })
  const bad: unknown[] = ['127.0.0.1', '::1:7000', '[::1]7000', '[::1]', 'host:65536', 'host:-1',
    ':7000', 'host:', '[not-v6]:1', 'host:1.5', 'a b:1', 'host:123456', '', 7000, null,
    // Digits and dots that are not a dotted quad: getaddrinfo would guess what they mean.
    '256.1.1.1:7000', '1.2.3.256:1', '127.1:7000', '010.0.0.1:1', '1.2.3.4.5:1', '2130706433:1']
  for (const s of bad) t.throws(() => parseHostPort(s as string), `${String(s)} is refused`)

  t.equal(formatHostPort({ host: '::1', port: 7000 }), '[::1]:7000')
  t.equal(formatHostPort({ host: '127.0.0.1', port: 7000 }), '127.0.0.1:7000')
  for (const s of ['[::1]:7000', 'localhost:1', '10.0.0.2:7200']) {
    t.equal(formatHostPort(parseHostPort(s)), s)
  }
})

t.test('defaults fill a minimal config', async (t) => {
  const c = parseConfig(yaml(...TWO_REPLICAS), 'min.yaml', CWD)
  t.same(c, {
    file: 'min.yaml',
    listen: { host: '127.0.0.1', port: 7000 },
    state_dir: join(CWD, 'state'),
    output_commit: 'ack',
    protocol: 'raw',
    on_backup_loss: 'continue',
    replicas: [
      { name: 'a', address: { host: '127.0.0.1', port: 7101 } },
      { name: 'b', address: { host: '127.0.0.1', port: 7102 } }
    ],
    health_check: { interval: 1000, timeout: 500, fall: 3, rise: 2 },
    timeouts: { connect: 2000, stall: 3000, linger: 5000, heartbeat: 1000 },
    limits: { max_connections: 10000, max_lag: 8 * 1024 * 1024, max_memory: 256 * 1024 * 1024 },
    arbiter: { kind: 'file' },
    log: { level: 'info', format: 'json' },
    admin: { listen: { host: '127.0.0.1', port: 7900 } }
  })
  t.notOk('command' in replicaAt(c, 0), 'no command key when none given')
  t.notOk('token' in c.admin, 'no token key when none given')

  // The result is the caller's to change: DEFAULTS must stay untouched.
  c.health_check.fall = 99
  c.listen.port = 1
  const again = parseConfig(yaml(...TWO_REPLICAS), 'min.yaml', CWD)
  t.equal(again.health_check.fall, 3)
  t.equal(again.listen.port, 7000)
  t.equal(DEFAULTS.health_check.fall, 3)
  t.ok(Object.isFrozen(DEFAULTS.health_check), 'DEFAULTS is frozen')
})

t.test('partial sections keep the other defaults; absolute state_dir stays', async (t) => {
  const c = parseConfig(yaml(
    'state_dir: /var/lib/ftproxy',
    'health_check: { fall: 5, interval: 2s }',
    'limits: { max_lag: 64KiB }',
    'admin: { token: s3cret }',
    ...TWO_REPLICAS
  ), 'p.yaml', CWD)
  t.equal(c.state_dir, '/var/lib/ftproxy')
  t.same(c.health_check, { interval: 2000, timeout: 500, fall: 5, rise: 2 })
  t.same(c.limits, { max_connections: 10000, max_lag: 65_536, max_memory: 256 * 1024 * 1024 })
  t.same(c.admin, { listen: { host: '127.0.0.1', port: 7900 }, token: 's3cret' })
})

t.test('protocol: each name is taken as given', async (t) => {
  for (const name of ['raw', 'line', 'resp'] as const) {
    const c = parseConfig(yaml(`protocol: ${name}`, ...TWO_REPLICAS), 'p.yaml', CWD)
    t.equal(c.protocol, name)
  }
  t.equal(DEFAULTS.protocol, 'raw', 'raw by default: today\'s behaviour')
})

t.test('reseed: defaults, values, errors with their lines, rendered back', async (t) => {
  const c = parseConfig(yaml(...TWO_REPLICAS, 'reseed:', '  command: [./r.sh, x]'), 'r.yaml', CWD)
  t.same(c.reseed, {
    command: ['./r.sh', 'x'],
    timeout: 60000,
    cut_timeout: 5000,
    open_connections: 'reattach',
    auto: true
  })
  t.same(parseConfig(renderConfig(c), 'again.yaml', CWD).reseed, c.reseed, 'round trip')
  t.equal(parseConfig(yaml(...TWO_REPLICAS), 'n.yaml', CWD).reseed, undefined, 'off by default')
  const issues = issuesOf(t, yaml(...TWO_REPLICAS, 'reseed:', '  timeout: 0s',
    '  open_connections: keep', '  auto: yes please', '  comand: [x]', '  cut_timeout: soon'))
  hasIssue(t, issues, 'reseed.command', 6)
  hasIssue(t, issues, 'reseed.timeout', 7)
  hasIssue(t, issues, 'reseed.open_connections', 8)
  hasIssue(t, issues, 'reseed.auto', 9)
  hasIssue(t, issues, 'reseed.comand', 10)
  hasIssue(t, issues, 'reseed.cut_timeout', 11)
})

t.test('a replica whose restarts cannot be told is warned about', async (t) => {
  const raw = parseConfig(yaml(...TWO_REPLICAS), 'w.yaml', CWD)
  t.equal(configWarnings(raw).length, 2, 'both direct, unsupervised, raw')
  t.match(configWarnings(raw)[0], /^replicas\.a: /)
  const resp = parseConfig(yaml('protocol: resp', ...TWO_REPLICAS), 'w.yaml', CWD)
  t.same(configWarnings(resp), [], 'resp: its run_id tells')
  const sup = parseConfig(yaml('replicas:', '  - name: a', '    address: 127.0.0.1:7101',
    '    command: [x]', '  - name: b', '    agent: 127.0.0.1:7201'), 'w.yaml', CWD)
  t.same(configWarnings(sup), [], 'supervised, or behind an agent')
})

t.test('numbers in a command become strings', async (t) => {
  const c = parseConfig(yaml(
    ...TWO_REPLICAS,
    '    command: [redis-server, --port, 6380, --hz, 10.5]'
  ), 'c.yaml', CWD)
  t.same(c.replicas[1]?.command, ['redis-server', '--port', '6380', '--hz', '10.5'])
})

t.test('each kind of bad value names its path and line', async (t) => {
  // name, path and line of the issue, then the YAML lines
  const bad = (name: string, path: string, line: number, ...lines: string[]) =>
    ({ name, path, line, text: yaml(...lines) })
  const cases = [
    bad('bad listen', 'listen', 1, 'listen: 127.0.0.1', ...TWO_REPLICAS),
    bad('listen as a number', 'listen', 6, ...TWO_REPLICAS, 'listen: 7000'),
    bad('bad enum', 'output_commit', 6, ...TWO_REPLICAS, 'output_commit: always'),
    bad('unknown protocol', 'protocol', 2, 'listen: 127.0.0.1:7000', 'protocol: http',
      ...TWO_REPLICAS),
    bad('protocol in capitals', 'protocol', 6, ...TWO_REPLICAS, 'protocol: RESP'),
    bad('protocol not a string', 'protocol', 6, ...TWO_REPLICAS, 'protocol: 1'),
    bad('empty protocol', 'protocol', 6, ...TWO_REPLICAS, 'protocol: ""'),
    bad('protocol as a list', 'protocol', 6, ...TWO_REPLICAS, 'protocol: [resp]'),
    bad('bad on_backup_loss', 'on_backup_loss', 1, 'on_backup_loss: stop', ...TWO_REPLICAS),
    bad('empty state_dir', 'state_dir', 1, 'state_dir: ""', ...TWO_REPLICAS),
    bad('fall 0', 'health_check.fall', 7, ...TWO_REPLICAS, 'health_check:', '  fall: 0'),
    bad('rise not an integer', 'health_check.rise', 6,
      ...TWO_REPLICAS, 'health_check: { rise: 1.5 }'),
    bad('rise as a string', 'health_check.rise', 6, ...TWO_REPLICAS, 'health_check: { rise: "2" }'),
    bad('zero interval', 'health_check.interval', 7,
      ...TWO_REPLICAS, 'health_check:', '  interval: 0s', '  timeout: 0s'),
    bad('duration without unit', 'timeouts.stall', 7, ...TWO_REPLICAS, 'timeouts:', '  stall: 3'),
    bad('duration too long', 'timeouts.linger', 7, ...TWO_REPLICAS, 'timeouts:', '  linger: 30d'),
    bad('duration over the timer limit', 'timeouts.linger', 7,
      ...TWO_REPLICAS, 'timeouts:', '  linger: 1000h'),
    bad('zero timeout', 'timeouts.connect', 6, ...TWO_REPLICAS, 'timeouts: { connect: 0ms }'),
    bad('timeout > interval', 'health_check.timeout', 8,
      ...TWO_REPLICAS, 'health_check:', '  interval: 1s', '  timeout: 2s'),
    // timeout left at its default (500ms): the parent key is the place to look.
    bad('default timeout > interval', 'health_check.timeout', 6,
      ...TWO_REPLICAS, 'health_check:', '  interval: 200ms'),
    bad('max_connections 0', 'limits.max_connections', 7,
      ...TWO_REPLICAS, 'limits:', '  max_connections: 0'),
    bad('max_lag too small', 'limits.max_lag', 7, ...TWO_REPLICAS, 'limits:', '  max_lag: 32KiB'),
    bad('max_lag in MB', 'limits.max_lag', 7, ...TWO_REPLICAS, 'limits:', '  max_lag: 8MB'),
    bad('max_memory too small', 'limits.max_memory', 7,
      ...TWO_REPLICAS, 'limits:', '  max_memory: 128KiB'),
    bad('log level', 'log.level', 2, 'log:', '  level: verbose', ...TWO_REPLICAS),
    bad('log format', 'log.format', 1, 'log: { format: xml }', ...TWO_REPLICAS),
    bad('section not a map', 'timeouts', 1, 'timeouts: 2s', ...TWO_REPLICAS),
    bad('empty section', 'log', 1, 'log:', ...TWO_REPLICAS),
    bad('admin on the front port', 'admin.listen', 3,
      'listen: 127.0.0.1:7000', 'admin:', '  listen: 127.0.0.1:7000', ...TWO_REPLICAS),
    bad('admin on the front port, spelt differently', 'admin.listen', 2,
      'listen: 0.0.0.0:7000', 'admin: { listen: "localhost:7000" }', ...TWO_REPLICAS),
    bad('empty admin token', 'admin.token', 1, 'admin: { token: "" }', ...TWO_REPLICAS),
    bad('unknown nested key', 'health_check.falls', 8,
      ...TWO_REPLICAS, 'health_check:', '  interval: 1s', '  falls: 3'),
    bad('unknown top-level key', 'listen_on', 6, ...TWO_REPLICAS, 'listen_on: 127.0.0.1:1'),
    bad('file is not a key', 'file', 1, 'file: x.yaml', ...TWO_REPLICAS),
    bad('arbiter tas', 'arbiter.kind', 7,
      ...TWO_REPLICAS, 'arbiter:', '  kind: tas', '  address: 10.0.0.9:7300'),
    bad('arbiter etcd', 'arbiter.kind', 6,
      ...TWO_REPLICAS, 'arbiter: { kind: etcd, endpoints: [a:1] }'),
    bad('arbiter unknown kind', 'arbiter.kind', 6, ...TWO_REPLICAS, 'arbiter: { kind: zookeeper }'),
    bad('arbiter file with extra key', 'arbiter.path', 8,
      ...TWO_REPLICAS, 'arbiter:', '  kind: file', '  path: /x'),
  ]
  for (const c of cases) {
    t.test(c.name, async (t) => hasIssue(t, issuesOf(t, c.text), c.path, c.line))
  }
})

t.test('replica problems', async (t) => {
  t.test('missing replicas', async (t) => {
    hasIssue(t, issuesOf(t, yaml('# a comment', 'listen: 127.0.0.1:7000')), 'replicas', 2)
  })
  t.test('one replica only', async (t) => {
    hasIssue(t, issuesOf(t, yaml(
      'replicas:', '  - name: a', '    address: 127.0.0.1:7101'
    )), 'replicas', 1)
  })
  t.test('replicas not a list', async (t) => {
    hasIssue(t, issuesOf(t, yaml('replicas: { a: 127.0.0.1:1 }')), 'replicas', 1)
  })
  t.test('duplicate names', async (t) => {
    hasIssue(t, issuesOf(t, yaml(
      ...TWO_REPLICAS, '  - name: a', '    address: 127.0.0.1:7103'
    )), 'replicas[2].name', 6)
  })
  t.test('duplicate addresses', async (t) => {
    hasIssue(t, issuesOf(t, yaml(
      ...TWO_REPLICAS, '  - name: c', '    address: 127.0.0.1:7102'
    )), 'replicas[2].address', 7)
  })
  t.test('replica on the front port', async (t) => {
    hasIssue(t, issuesOf(t, yaml(
      'listen: 127.0.0.1:7101', ...TWO_REPLICAS
    )), 'replicas[0].address', 4)
  })
  // [listen, the replica's key and address]: each is the front itself.
  const itself: Array<[string, string]> = [
    ['127.0.0.1:7740', 'address: localhost:7740'],
    ['localhost:7740', 'address: "[::1]:7740"'],
    ['"[::1]:7740"', 'agent: LOCALHOST:7740'],
    ['0.0.0.0:7740', 'address: 127.0.0.9:7740'],
    ['"[::]:7740"', 'agent: "[0:0:0:0:0:0:0:1]:7740"'],
    ['"[::]:7740"', 'address: 0.0.0.0:7740'],
    ['127.0.0.1:7740', 'address: "[::ffff:127.0.0.1]:7740"'],
  ]
  for (const [listen, replica] of itself) {
    t.test(`the front itself: ${replica} while listening on ${listen}`, async (t) => {
      const issues = issuesOf(t, yaml(
        `listen: ${listen}`, ...TWO_REPLICAS, '  - name: c', `    ${replica}`
      ))
      hasIssue(t, issues, `replicas[2].${replica.split(':')[0] ?? ''}`, 8)
      t.match(issues[0]?.message, /must differ from listen/)
    })
  }
  t.test('replica on the admin port', async (t) => {
    const issues = issuesOf(t, yaml(
      'admin: { listen: 127.0.0.1:7901 }', ...TWO_REPLICAS,
      '  - name: c', '    agent: localhost:7901'
    ))
    hasIssue(t, issues, 'replicas[2].agent', 8)
    t.match(issues[0]?.message, /admin\.listen/)
    // The default admin.listen counts too.
    hasIssue(t, issuesOf(t, yaml(...TWO_REPLICAS, '  - name: c', '    address: 127.0.0.1:7900')),
      'replicas[2].address', 7)
  })
  t.test('loopback addresses that are not the front are allowed', async (t) => {
    const c = parseConfig(yaml('listen: 127.0.0.1:7740', 'admin: { listen: "[::1]:7900" }',
      'replicas:', '  - { name: a, address: 127.0.0.2:7740 }',
      '  - { name: b, address: "[::1]:7740" }', '  - { name: c, address: 127.0.0.1:7900 }'),
    'ok.yaml', CWD)
    t.equal(c.replicas.length, 3)
  })
  t.test('an IPv4 address out of range', async (t) => {
    hasIssue(t, issuesOf(t, yaml(
      'replicas:', '  - name: a', '    address: 256.1.1.1:7101', '  - name: b', '    agent: h:1'
    )), 'replicas[0].address', 3)
  })
  t.test('replica port 0', async (t) => {
    const issues = issuesOf(t, yaml(
      'listen: 127.0.0.1:0', 'admin: { listen: 127.0.0.1:0 }',
      'replicas:', '  - name: a', '    address: 127.0.0.1:0', '  - name: b', '    agent: h:0'
    ))
    t.same(issues.map((i) => [i.path, i.line]),
      [['replicas[0].address', 5], ['replicas[1].agent', 7]], 'listen and admin may be port 0')
  })
  t.test('bad name', async (t) => {
    hasIssue(t, issuesOf(t, yaml(
      'replicas:', '  - name: a', '    address: h:1', '  - name: "b c"', '    address: h:2'
    )), 'replicas[1].name', 4)
  })
  t.test('missing name', async (t) => {
    hasIssue(t, issuesOf(t, yaml(
      'replicas:', '  - name: a', '    address: h:1', '  - address: h:2'
    )), 'replicas[1].name', 4)
  })
  t.test('neither address nor agent', async (t) => {
    hasIssue(t, issuesOf(t, yaml(
      'replicas:', '  - name: a', '    address: h:1', '  - name: b', '    command: [x]'
    )), 'replicas[1]', 4)
  })
  t.test('bad address', async (t) => {
    hasIssue(t, issuesOf(t, yaml(
      'replicas:', '  - name: a', '    address: h:1', '  - name: b', '    address: ::1:7000'
    )), 'replicas[1].address', 5)
  })
  t.test('unknown key in a replica', async (t) => {
    const issues = issuesOf(t, yaml(
      'replicas:', '  - name: a', '    adress: 127.0.0.1:7101', '  - name: b', '    address: h:2'
    ))
    hasIssue(t, issues, 'replicas[0].adress', 3)
    t.match(issues.find((i) => i.path === 'replicas[0].adress')?.message, /did you mean 'address'/)
    hasIssue(t, issues, 'replicas[0]', 2)
  })
  t.test('command as a string', async (t) => {
    hasIssue(t, issuesOf(t, yaml(
      ...TWO_REPLICAS, '    command: redis-server --port 6380'
    )), 'replicas[1].command', 6)
  })
  t.test('empty command', async (t) => {
    hasIssue(t, issuesOf(t, yaml(...TWO_REPLICAS, '    command: []')), 'replicas[1].command', 6)
  })
  t.test('command with a non-string argument', async (t) => {
    hasIssue(t, issuesOf(t, yaml(
      ...TWO_REPLICAS, '    command:', '      - redis-server', '      - { port: 1 }'
    )), 'replicas[1].command[1]', 8)
  })
  t.test('command with an empty program', async (t) => {
    hasIssue(t, issuesOf(t, yaml(
      ...TWO_REPLICAS, '    command: ["", x]'
    )), 'replicas[1].command[0]', 6)
  })
})

t.test('all problems are reported together, in file order', async (t) => {
  const issues = issuesOf(t, yaml(
    'listen: 127.0.0.1:99999', //  1
    'health_check:', //            2
    '  fall: 0', //                3
    'replicas:', //                4
    '  - name: a', //              5
    '    adress: 127.0.0.1:7101', // 6
    '  - name: a', //              7
    '    address: 127.0.0.1:7102', // 8
    'log: { level: loud }', //     9
    'arbiter: { kind: tas }' //   10
  ))
  t.same(issues.map((i) => [i.path, i.line]), [
    ['listen', 1],
    ['health_check.fall', 3],
    ['replicas[0]', 5],
    ['replicas[0].adress', 6],
    ['replicas[1].name', 7],
    ['log.level', 9],
    ['arbiter.kind', 10]
  ])
})

t.test('YAML-level problems', async (t) => {
  t.test('syntax error', async (t) => {
    const issues = issuesOf(t, yaml('listen: 127.0.0.1:7000', 'replicas: [', '  {name: a'))
    t.ok(issues.length >= 1)
    t.equal(issues[0]?.path, '')
    const line = issues[0]?.line
    t.ok(typeof line === 'number' && line >= 2, 'line of the error')
  })
  t.test('bad indentation', async (t) => {
    const issues = issuesOf(t, yaml(
      'listen: 127.0.0.1:7000', 'replicas:', '  - name: a', '   address: h:1'
    ))
    t.equal(issues[0]?.path, '')
    t.equal(issues[0]?.line, 4)
  })
  t.test('duplicate key', async (t) => {
    const issues = issuesOf(t, yaml(
      'listen: 127.0.0.1:7000', ...TWO_REPLICAS, 'listen: 127.0.0.1:7001'
    ))
    t.same(issues.map((i) => [i.path, i.line]), [['', 7]])
  })
  t.test('two documents', async (t) => {
    const issues = issuesOf(t, yaml(...TWO_REPLICAS, '---', ...TWO_REPLICAS))
    t.equal(issues.length, 1)
    t.equal(issues[0]?.line, 6)
  })
  t.test('empty file', async (t) => {
    t.same(issuesOf(t, '').map((i) => [i.path, i.line]), [['', 1]])
  })
  t.test('comments only', async (t) => {
    t.same(issuesOf(t, yaml('# nothing', '# here')).map((i) => i.path), [''])
  })
  t.test('root is a list', async (t) => {
    t.same(issuesOf(t, yaml('# x', '- a', '- b')).map((i) => [i.path, i.line]), [['', 2]])
  })
  t.test('root is a scalar', async (t) => {
    t.same(issuesOf(t, yaml('hello')).map((i) => [i.path, i.line]), [['', 1]])
  })
  t.test('alias bomb', async (t) => {
    const issues = issuesOf(t, yaml(
      'a: &a [x, x, x, x, x, x, x, x, x, x]',
      'b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]',
      'c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]',
      'd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]'
    ))
    t.same(issues.map((i) => i.path), [''])
  })
  t.test('aliases are followed', async (t) => {
    const c = parseConfig(yaml(
      'replicas:',
      '  - name: a',
      '    address: 127.0.0.1:7101',
      '    command: &cmd [redis-server]',
      '  - name: b',
      '    address: 127.0.0.1:7102',
      '    command: *cmd'
    ), 'a.yaml', CWD)
    t.same(c.replicas[1]?.command, ['redis-server'])
  })
})

t.test('renderConfig', async (t) => {
  const text = yaml(
    'listen: "[::1]:7000"',
    'state_dir: rel/state',
    'output_commit: match',
    'protocol: resp',
    'on_backup_loss: block',
    'replicas:',
    '  - name: a',
    '    address: 127.0.0.1:7101',
    '    command: [ftproxy, demo-server, --port, "7101"]',
    '  - name: b.2',
    '    address: "[::1]:7102"',
    '  - name: c_3',
    '    address: localhost:7103',
    '    command: [redis-server, --save, ""]',
    'health_check: { interval: 1500ms, timeout: 1s, fall: 1, rise: 4 }',
    'timeouts: { connect: 1m, stall: 90s, linger: 2h, heartbeat: 250ms }',
    'limits: { max_connections: 1, max_lag: 100000 }',
    'log: { level: debug, format: text }',
    'admin: { listen: 0.0.0.0:0, token: "s3cret: yes" }'
  )
  const c = parseConfig(text, 'r.yaml', CWD)
  const out = renderConfig(c)
  t.notMatch(out, /^file:/m, 'no file key')
  t.match(out, /^state_dir: \/srv\/ftproxy\/rel\/state$/m, 'absolute state_dir')
  t.match(out, /linger: 2h/, 'durations in human units')
  t.match(out, /max_lag: 100000B/, 'sizes in human units')
  t.match(out, /^protocol: resp$/m, 'the protocol')
  const again = parseConfig(out, 'r.yaml', '/somewhere/else')
  t.same(again, c, 're-parses to an equal Config')

  const keys = out.split('\n').filter((l) => /^[a-z_]+:/.test(l)).map((l) => l.split(':')[0])
  const order = ['listen', 'state_dir', 'output_commit', 'protocol', 'on_backup_loss',
    'replicas', 'health_check', 'timeouts', 'limits', 'arbiter', 'log', 'admin']
  t.same(keys, order, 'keys in docs/design.md order')

  const redacted = renderConfig(c, { redact: true })
  t.notMatch(redacted, /s3cret/, 'token redacted on request')
  t.same(parseConfig(renderConfig(parseConfig(yaml(...TWO_REPLICAS), 'x', CWD)), 'x', CWD),
    parseConfig(yaml(...TWO_REPLICAS), 'x', CWD), 'defaults round-trip')
})

t.test('shipped config files parse and round-trip', async (t) => {
  for (const name of ['demo.yaml', 'ftproxy.yaml', 'redis.yaml']) {
    const file = join(root, 'config', name)
    const c: Config = await loadConfig(file)
    t.equal(c.file, file)
    t.ok(c.replicas.length >= 2, `${name} has replicas`)
    t.same(parseConfig(renderConfig(c), file), c, `${name} round-trips`)
  }
  const demo = await loadConfig(join(root, 'config', 'demo.yaml'))
  t.same(demo.replicas.map((r) => [r.name, addressOf(r), r.command]), [
    ['a', '127.0.0.1:7101', ['ftproxy', 'demo-server', '--port', '7101']],
    ['b', '127.0.0.1:7102', ['ftproxy', 'demo-server', '--port', '7102']]
  ])
  t.equal(demo.log.format, 'text')
  t.equal(demo.protocol, 'line', 'the demo server speaks lines')
  const prod = await loadConfig(join(root, 'config', 'ftproxy.yaml'))
  t.equal(prod.state_dir, '/var/lib/ftproxy')
  t.equal(prod.log.format, 'json')
  t.same(prod.replicas.map(addressOf), ['127.0.0.1:6379', '127.0.0.1:6380'])
  t.equal(prod.protocol, 'resp', 'the production example is Redis')
  const redis = await loadConfig(join(root, 'config', 'redis.yaml'))
  t.equal(redis.protocol, 'resp')
  t.equal(redis.output_commit, 'ack')
  t.same(redis.replicas.map((r) => [r.name, addressOf(r), r.command?.[0]]), [
    ['a', '127.0.0.1:7111', 'redis-server'],
    ['b', '127.0.0.1:7112', 'redis-server']
  ])
  for (const r of redis.replicas) {
    const argv = r.command ?? []
    t.equal(argv[argv.indexOf('--port') + 1], String(r.address?.port), `${r.name}: its own port`)
    t.equal(argv[argv.indexOf('--save') + 1], '', `${r.name}: no snapshots`)
    t.equal(argv[argv.indexOf('--appendonly') + 1], 'no', `${r.name}: no append-only file`)
  }
  t.not(redis.state_dir, demo.state_dir, 'a state_dir of its own')
  t.not(formatHostPort(redis.admin.listen), formatHostPort(demo.admin.listen),
    'an admin port of its own')
  t.not(formatHostPort(redis.listen), formatHostPort(demo.listen), 'a client port of its own')
})

t.test('loadConfig', async (t) => {
  const rel = await loadConfig('config/demo.yaml').catch(() => undefined)
  if (process.cwd() === root) {
    t.equal(rel?.file, join(root, 'config', 'demo.yaml'), 'relative path made absolute')
  }

  const missing = join(root, 'test', 'fixtures', 'config', 'does-not-exist.yaml')
  await t.rejects(loadConfig(missing), { code: 'ERR_FTPROXY_CONFIG' })
  const err = await loadConfig(missing).catch((e: unknown) => e) as ConfigError
  t.equal(err.issues.length, 1)
  t.equal(err.issues[0]?.path, '')
  t.equal(err.details.file, missing)

  await t.rejects(loadConfig(join(root, 'config')), { code: 'ERR_FTPROXY_CONFIG' }, 'a directory')
})

// ---------------------------------------------------------------------------------------------
// Agent replicas in the front's config

t.test('agent replicas', async (t) => {
  t.test('parse, with tls paths resolved against cwd', async (t) => {
    const c = parseConfig(yaml(
      'replicas:',
      '  - name: a',
      '    address: 127.0.0.1:7101',
      '    command: [redis-server]',
      '  - name: b',
      '    agent: 10.0.0.2:7200',
      '    tls: { cert: certs/front.crt, key: /etc/ftproxy/front.key, ca: ../ca.crt }',
      '  - name: c',
      '    agent: "[::1]:7200"'
    ), 'ag.yaml', CWD)
    t.same(c.replicas, [
      { name: 'a', address: { host: '127.0.0.1', port: 7101 }, command: ['redis-server'] },
      {
        name: 'b',
        agent: { host: '10.0.0.2', port: 7200 },
        tls: {
          cert: '/srv/ftproxy/certs/front.crt',
          key: '/etc/ftproxy/front.key',
          ca: '/srv/ca.crt',
        },
      },
      { name: 'c', agent: { host: '::1', port: 7200 } }
    ])
    t.notOk('address' in replicaAt(c, 1), 'no address key on an agent replica')
    t.notOk('agent' in replicaAt(c, 0), 'no agent key on a direct replica')
    t.notOk('tls' in replicaAt(c, 2), 'no tls key when none given')
  })

  // name, path and line of the issue, the YAML lines, and what the message says
  const bad = (
    name: string, path: string, line: number, lines: string[], message?: RegExp
  ) => ({ name, path, line, lines, message })
  const cases = [
    bad('both address and agent', 'replicas[1]', 4,
      [...TWO_REPLICAS, '    agent: 10.0.0.2:7200'],
      /not both/),
    bad('neither', 'replicas[2]', 6,
      [...TWO_REPLICAS, '  - name: c', '    command: [x]'],
      /either address .* or agent/),
    bad('command with agent', 'replicas[2].command', 8,
      [...TWO_REPLICAS, '  - name: c', '    agent: 10.0.0.2:7200', '    command: [redis-server]'],
      /supervised by its agent/),
    bad('tls without agent', 'replicas[1].tls', 6,
      [...TWO_REPLICAS, '    tls:', '      cert: a.crt', '      key: a.key', '      ca: ca.crt']),
    bad('bad agent address', 'replicas[2].agent', 7,
      [...TWO_REPLICAS, '  - name: c', '    agent: 10.0.0.2']),
    bad('agent duplicates an address', 'replicas[2].agent', 7,
      [...TWO_REPLICAS, '  - name: c', '    agent: 127.0.0.1:7102'],
      /duplicate address 127.0.0.1:7102 \(also replicas\[1\]\)/),
    bad('address duplicates an agent', 'replicas[1].address', 5,
      ['replicas:', '  - name: a', '    agent: h:1', '  - name: b', '    address: h:1'],
      /duplicate/),
    bad('agent on the front port', 'replicas[2].agent', 8,
      ['listen: 127.0.0.1:7200', ...TWO_REPLICAS, '  - name: c', '    agent: 127.0.0.1:7200'],
      /must differ from listen/),
    bad('tls missing ca', 'replicas[2].tls.ca', 8,
      [...TWO_REPLICAS, '  - name: c', '    agent: h:3', '    tls: { cert: a.crt, key: a.key }']),
    bad('tls empty cert', 'replicas[2].tls.cert', 9,
      [...TWO_REPLICAS, '  - name: c', '    agent: h:3', '    tls:', '      cert: ""',
        '      key: a.key', '      ca: ca.crt']),
    bad('tls unknown key', 'replicas[2].tls.crt', 12,
      [...TWO_REPLICAS, '  - name: c', '    agent: h:3', '    tls:', '      cert: a.crt',
        '      key: a.key', '      ca: ca.crt', '      crt: x'],
      /unknown key/),
    bad('tls not a map', 'replicas[2].tls', 8,
      [...TWO_REPLICAS, '  - name: c', '    agent: h:3', '    tls: yes']),
  ]
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const issues = issuesOf(t, yaml(...c.lines))
      hasIssue(t, issues, c.path, c.line)
      const message = issues.find((i) => i.path === c.path)?.message
      if (c.message !== undefined) t.match(message, c.message)
    })
  }

  t.test('one pass reports both a bad address and both keys given', async (t) => {
    const issues = issuesOf(t, yaml(
      ...TWO_REPLICAS, //                 1-5
      '  - name: c', //                   6
      '    address: nope', //             7
      '    agent: 10.0.0.2:7200', //      8
      '    command: [x]', //              9
      '  - name: d', //                  10
      '    tls: { cert: a, key: b, ca: c }' // 11
    ))
    t.same(issues.map((i) => [i.path, i.line]), [
      ['replicas[2]', 6],
      ['replicas[2].address', 7],
      ['replicas[2].command', 9],
      ['replicas[3]', 10],
      ['replicas[3].tls', 11]
    ])
  })

  t.test('renderConfig prints agent and tls, and round-trips', async (t) => {
    const c = parseConfig(yaml(
      'replicas:',
      '  - name: a',
      '    address: 127.0.0.1:7101',
      '  - name: b',
      '    agent: "[fd00::2]:7200"',
      '    tls: { cert: front.crt, key: front.key, ca: ca.crt }',
      '  - name: c',
      '    agent: 10.0.0.3:7200'
    ), 'r.yaml', CWD)
    const out = renderConfig(c)
    t.match(out, /agent: "?\[fd00::2\]:7200"?/)
    t.match(out, /cert: \/srv\/ftproxy\/front\.crt/)
    t.match(out, /ca: \/srv\/ftproxy\/ca\.crt/)
    t.notMatch(out, /address: undefined|agent: undefined/)
    t.same(parseConfig(out, 'r.yaml', '/elsewhere'), c, 're-parses to an equal Config')
  })
})

// PEM files in dir: two self-signed EC certificates and keys (front, other: EC is quick to
// make), and broken ones: not PEM, a certificate whose DER is damaged, an encrypted key.
function makePems (dir: string): void {
  const p = (name: string): string => join(dir, name)
  for (const name of ['front', 'other']) {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec',
      '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', `/CN=${name}`,
      '-keyout', p(`${name}.key`), '-out', p(`${name}.crt`)], { stdio: 'ignore' })
  }
  execFileSync('openssl', ['pkey', '-in', p('front.key'), '-aes256', '-passout', 'pass:secret',
    '-out', p('encrypted.key')], { stdio: 'ignore' })
  writeFileSync(p('text.crt'), 'not a certificate\n')
  const lines = readFileSync(p('front.crt'), 'utf8').split('\n')
  lines[2] = 'A'.repeat(lines[2]?.length ?? 64)
  writeFileSync(p('damaged.crt'), lines.join('\n'))
}

const tlsLines = (dir: string, cert: string, key: string, ca: string): string[] =>
  ['    tls:', `      cert: ${join(dir, cert)}`, `      key: ${join(dir, key)}`,
    `      ca: ${join(dir, ca)}`]

// A front config whose replica b has tls at lines 6-9 (cert 7, key 8, ca 9).
const agentReplica = (tls: string[]): string => yaml(
  'replicas:', '  - name: a', '    address: 127.0.0.1:7101', '  - name: b',
  '    agent: 10.0.0.2:7200', ...tls)

t.test('loadConfig checks the files tls names', async (t) => {
  const dir = t.testdir({ certs: {} })
  makePems(dir)
  const good = join(dir, 'good.yaml')
  const bad = join(dir, 'bad.yaml')
  writeFileSync(good, agentReplica(tlsLines(dir, 'front.crt', 'front.key', 'other.crt')))
  writeFileSync(bad, agentReplica(tlsLines(dir, 'missing.crt', 'front.key', 'certs')))

  const c = await loadConfig(good)
  t.same(c.replicas[1]?.tls,
    { cert: join(dir, 'front.crt'), key: join(dir, 'front.key'), ca: join(dir, 'other.crt') })

  const err = await loadConfig(bad).catch((e: unknown) => e) as ConfigError
  t.ok(err instanceof ConfigError)
  t.same(err.issues.map((i) => [i.path, i.line]),
    [['replicas[1].tls.cert', 7], ['replicas[1].tls.ca', 9]])
  t.match(err.issues[0]?.message, /ENOENT/)
  t.match(err.issues[1]?.message, /not a file/)
  t.match(err.message, /bad\.yaml:7: replicas\[1\]\.tls\.cert/)

  // parseConfig stays pure: the same text parses without touching the files.
  t.ok(parseConfig(readFileSync(bad, 'utf8'), bad, CWD).replicas[1]?.tls,
    'parseConfig does not check files')
})

t.test('loadConfig refuses PEM files that TLS could not use', async (t) => {
  const dir = t.testdir({})
  makePems(dir)
  const issuesFor = async (cert: string, key: string, ca: string): Promise<ConfigIssue[]> => {
    const file = join(dir, `${cert}-${key}-${ca}.yaml`)
    writeFileSync(file, agentReplica(tlsLines(dir, cert, key, ca)))
    const err = await loadConfig(file).catch((e: unknown) => e)
    t.ok(err instanceof ConfigError, `${cert}, ${key}, ${ca}: refused`)
    t.equal((err as ConfigError).code, 'ERR_FTPROXY_CONFIG')
    return (err as ConfigError).issues ?? []
  }
  const where = (issues: ConfigIssue[]) => issues.map((i) => [i.path, i.line])

  const unparsable = await issuesFor('text.crt', 'encrypted.key', 'damaged.crt')
  t.same(where(unparsable),
    [['replicas[1].tls.cert', 7], ['replicas[1].tls.key', 8], ['replicas[1].tls.ca', 9]],
    'not PEM, an encrypted key, a damaged certificate')

  const mismatch = await issuesFor('front.crt', 'other.key', 'other.crt')
  t.same(where(mismatch), [['replicas[1].tls.key', 8]], 'a key that is not the certificate\'s')
  t.match(mismatch[0]?.message, /does not match/)

  t.same(where(await issuesFor('front.key', 'front.crt', 'front.crt')),
    [['replicas[1].tls.cert', 7], ['replicas[1].tls.key', 8]], 'key and certificate swapped')
})

t.test('a config file over 1 MiB is refused before it is parsed', async (t) => {
  const dir = t.testdir({})
  const MiB = 1024 * 1024
  const front = yaml(...TWO_REPLICAS)
  const agent = yaml('server: 127.0.0.1:6379')
  // Padded with comments up to the cap: still a config.
  const padTo = (text: string, size: number): string =>
    text + '#'.repeat(size - Buffer.byteLength(text) - 1) + '\n'
  const write = (name: string, text: string): string => {
    writeFileSync(join(dir, name), text)
    return join(dir, name)
  }
  t.equal((await loadConfig(write('max.yaml', padTo(front, MiB)))).replicas.length, 2)
  t.equal((await loadAgentConfig(write('agent-max.yaml', padTo(agent, MiB)))).server.port, 6379)

  const over = [
    () => loadConfig(write('over.yaml', padTo(front, MiB + 1))),
    () => loadAgentConfig(write('agent-over.yaml', padTo(agent, MiB + 1))),
    // 50 MiB took 2 GiB of memory to parse: now it is not read past the cap.
    () => loadConfig(write('huge.yaml', front + '# x\n'.repeat(50 * MiB / 4))),
  ]
  for (const load of over) {
    const err = await (load() as Promise<unknown>).catch((e: unknown) => e)
    t.ok(err instanceof ConfigError)
    t.equal((err as ConfigError).code, 'ERR_FTPROXY_CONFIG')
    t.same((err as ConfigError).issues.map((i) => i.path), [''], 'about the file as a whole')
  }
})

// ---------------------------------------------------------------------------------------------
// The agent's config

t.test('agent config: defaults', async (t) => {
  const c = parseAgentConfig(yaml('server: 127.0.0.1:6379'), 'agent.yaml', CWD)
  t.same(c, {
    file: 'agent.yaml',
    listen: { host: '127.0.0.1', port: 7201 },
    server: { host: '127.0.0.1', port: 6379 },
    state_dir: join(CWD, 'agent-state'),
    health_check: { interval: 1000, timeout: 500, fall: 3, rise: 2 },
    timeouts: { connect: 2000, linger: 5000 },
    log: { level: 'info', format: 'json' }
  })
  t.notOk('command' in c, 'no command key when none given')
  t.notOk('tls' in c, 'no tls key when none given')
  t.same(AGENT_DEFAULTS.health_check, DEFAULTS.health_check,
    "health_check defaults are the front's")
  t.ok(Object.isFrozen(AGENT_DEFAULTS.timeouts), 'AGENT_DEFAULTS is frozen')
  c.timeouts.connect = 1
  t.equal(parseAgentConfig(yaml('server: h:1'), 'a', CWD).timeouts.connect, 2000,
    'defaults are not shared')
})

t.test('agent config: every key', async (t) => {
  const c = parseAgentConfig(yaml(
    'listen: 0.0.0.0:7201',
    'server: 127.0.0.1:6379',
    'state_dir: /var/lib/ftproxy-agent',
    'command: [redis-server, --port, 6379]',
    'tls: { cert: agent.crt, key: /etc/ftproxy/agent.key, ca: ca.crt }',
    'health_check: { interval: 2s, fall: 5 }',
    'timeouts: { linger: 10s }',
    'log: { level: debug, format: text }'
  ), 'agent.yaml', CWD)
  t.same(c, {
    file: 'agent.yaml',
    listen: { host: '0.0.0.0', port: 7201 },
    server: { host: '127.0.0.1', port: 6379 },
    state_dir: '/var/lib/ftproxy-agent',
    command: ['redis-server', '--port', '6379'],
    tls: {
      cert: '/srv/ftproxy/agent.crt',
      key: '/etc/ftproxy/agent.key',
      ca: '/srv/ftproxy/ca.crt',
    },
    health_check: { interval: 2000, timeout: 500, fall: 5, rise: 2 },
    timeouts: { connect: 2000, linger: 10000 },
    log: { level: 'debug', format: 'text' }
  })
  // A non-loopback listen without tls is allowed (the agent warns at run time).
  t.equal(parseAgentConfig(yaml('listen: 10.0.0.2:7201', 'server: h:1'), 'a', CWD).tls, undefined)
})

t.test('agent config: problems name their key and line', async (t) => {
  // name, path and line of the issue, the YAML lines, and what the message says
  const bad = (
    name: string, path: string, line: number, lines: string[], message?: RegExp
  ) => ({ name, path, line, lines, message })
  const cases = [
    bad('server missing', 'server', 2,
      ['# agent', 'listen: 127.0.0.1:7201'],
      /required: the local server's host:port/),
    bad('bad server', 'server', 1, ['server: 6379']),
    bad('bad listen', 'listen', 2, ['server: h:1', 'listen: 127.0.0.1']),
    bad('server is listen', 'server', 2,
      ['listen: 127.0.0.1:7201', 'server: 127.0.0.1:7201'],
      /connect to itself/),
    bad('server is listen, spelt differently', 'server', 2,
      ['listen: 0.0.0.0:7201', 'server: localhost:7201'],
      /connect to itself/),
    bad('server port 0', 'server', 1, ['server: 127.0.0.1:0'], /port 0/),
    bad('server out of range', 'server', 1, ['server: 127.0.0.256:6379']),
    bad('unknown key', 'state-dir', 2,
      ['server: h:1', 'state-dir: /x'],
      /did you mean 'state_dir'/),
    bad('front key', 'replicas', 2, ['server: h:1', 'replicas: []'], /unknown key/),
    bad('protocol is the front\'s', 'protocol', 2, ['server: h:1', 'protocol: resp'], /front/),
    bad('front-only timeout', 'timeouts.stall', 3,
      ['server: h:1', 'timeouts:', '  stall: 3s'],
      /unknown key/),
    bad('bad duration', 'timeouts.connect', 2, ['server: h:1', 'timeouts: { connect: 2 }']),
    bad('health_check fall 0', 'health_check.fall', 3,
      ['server: h:1', 'health_check:', '  fall: 0']),
    bad('health_check timeout > interval', 'health_check.timeout', 2,
      ['server: h:1', 'health_check: { interval: 100ms }']),
    bad('log format', 'log.format', 2, ['server: h:1', 'log: { format: xml }']),
    bad('empty state_dir', 'state_dir', 2, ['server: h:1', 'state_dir: ""']),
    bad('empty command', 'command', 2, ['server: h:1', 'command: []']),
    bad('tls missing key', 'tls.key', 2, ['server: h:1', 'tls:', '  cert: a.crt', '  ca: ca.crt']),
    bad('tls unknown key', 'tls.cafile', 6,
      ['server: h:1', 'tls:', '  cert: a.crt', '  key: a.key', '  ca: ca.crt', '  cafile: x']),
  ]
  for (const c of cases) {
    t.test(c.name, async (t) => {
      const issues = agentIssuesOf(t, yaml(...c.lines))
      hasIssue(t, issues, c.path, c.line)
      const message = issues.find((i) => i.path === c.path)?.message
      if (c.message !== undefined) t.match(message, c.message)
    })
  }

  t.test('all together, in file order', async (t) => {
    const issues = agentIssuesOf(t, yaml('listen: nope', 'log: { level: loud }', 'extra: 1'))
    t.same(issues.map((i) => [i.path, i.line]),
      [['listen', 1], ['server', 1], ['log.level', 2], ['extra', 3]])
  })
  t.test('empty file', async (t) => {
    const issues = agentIssuesOf(t, '')
    t.same(issues.map((i) => [i.path, i.line]), [['', 1]])
    t.match(issues[0]?.message, /server/)
  })
  t.test('YAML error', async (t) => {
    t.same(agentIssuesOf(t, yaml('server: h:1', 'server: h:2')).map((i) => [i.path, i.line]),
      [['', 2]])
  })
})

t.test('agentConfigFromFlags', async (t) => {
  const c = agentConfigFromFlags(
    { listen: '0.0.0.0:7301', server: 'localhost:6380', stateDir: 'st' }, CWD)
  t.same(c, {
    file: FLAGS_FILE,
    listen: { host: '0.0.0.0', port: 7301 },
    server: { host: 'localhost', port: 6380 },
    state_dir: join(CWD, 'st'),
    health_check: { interval: 1000, timeout: 500, fall: 3, rise: 2 },
    timeouts: { connect: 2000, linger: 5000 },
    log: { level: 'info', format: 'json' }
  })
  const min = agentConfigFromFlags({ server: '127.0.0.1:6379' }, CWD)
  t.same(min.listen, { host: '127.0.0.1', port: 7201 })
  t.equal(min.state_dir, join(CWD, 'agent-state'))
  t.same(min, parseAgentConfig(yaml('server: 127.0.0.1:6379'), FLAGS_FILE, CWD), 'same as the file')

  const flagIssues = (flags: Parameters<typeof agentConfigFromFlags>[0]) =>
    thrownIssues(t, () => agentConfigFromFlags(flags, CWD))
  t.same(flagIssues({}).map((i) => [i.path, i.line]), [['--server', undefined]],
    'server is required')
  t.same(flagIssues({ server: '6379' }).map((i) => i.path), ['--server'])
  t.same(flagIssues({ server: 'h:1', listen: 'h' }).map((i) => i.path), ['--listen'])
  t.same(flagIssues({ server: 'h:1', stateDir: '' }).map((i) => i.path), ['--state-dir'])
  t.same(flagIssues({ listen: 'h:1', server: 'h:1' }).map((i) => i.path), ['--server'])
  const err = (() => {
    try {
      agentConfigFromFlags({ server: 'nope' })
    } catch (e) {
      return e as ConfigError
    }
    return undefined
  })()
  t.match(err?.message, /--server: invalid address 'nope'/, 'the message names the flag')
})

t.test('renderAgentConfig round-trips', async (t) => {
  const full = parseAgentConfig(yaml(
    'listen: "[::]:7201"',
    'server: 127.0.0.1:6379',
    'state_dir: rel/agent',
    'command: [redis-server, --port, "6379", --save, ""]',
    'tls: { cert: agent.crt, key: agent.key, ca: ca.crt }',
    'health_check: { interval: 1500ms, timeout: 1s, fall: 1, rise: 4 }',
    'timeouts: { connect: 1m, linger: 250ms }',
    'log: { level: warn, format: text }'
  ), 'agent.yaml', CWD)
  const out = renderAgentConfig(full)
  t.notMatch(out, /^file:/m, 'no file key')
  t.match(out, /^state_dir: \/srv\/ftproxy\/rel\/agent$/m)
  t.match(out, /^command: \[ redis-server, --port, "6379", --save, "" \]$/m, 'argv on one line')
  t.match(out, /linger: 250ms/)
  t.same(parseAgentConfig(out, 'agent.yaml', '/elsewhere'), full,
    're-parses to an equal AgentConfig')
  const keys = out.split('\n').filter((l) => /^[a-z_]+:/.test(l)).map((l) => l.split(':')[0])
  t.same(keys,
    ['listen', 'server', 'state_dir', 'command', 'tls', 'health_check', 'timeouts', 'log'],
    'keys in docs/design.md order')

  const min: AgentConfig = agentConfigFromFlags({ server: 'h:1' }, CWD)
  t.same(parseAgentConfig(renderAgentConfig(min), FLAGS_FILE, CWD), min, 'defaults round-trip')
})

t.test('config/agent.yaml parses and round-trips', async (t) => {
  const file = join(root, 'config', 'agent.yaml')
  const c = await loadAgentConfig(file)
  t.equal(c.file, file)
  t.same(c.listen, { host: '127.0.0.1', port: 7201 })
  t.same(c.server, { host: '127.0.0.1', port: 6379 })
  t.equal(c.state_dir, '/var/lib/ftproxy-agent')
  t.equal(c.command, undefined, 'command is commented out')
  t.equal(c.tls, undefined, 'tls is commented out')
  t.same(parseAgentConfig(renderAgentConfig(c), file), c)
})

t.test('loadAgentConfig', async (t) => {
  const dir = t.testdir({
    'good.yaml': 'server: h:1\ntls: { cert: front.crt, key: front.key, ca: other.crt }\n',
    'bad.yaml': 'server: h:1\ntls:\n  cert: front.crt\n  key: nope.key\n  ca: other.crt\n',
    'mismatch.yaml': 'server: h:1\ntls:\n  cert: front.crt\n  key: other.key\n  ca: text.crt\n',
    'invalid.yaml': 'server: h\n'
  })
  makePems(dir)
  // Relative tls paths are taken from the working directory, like state_dir.
  const cwd = process.cwd()
  process.chdir(dir)
  t.teardown(() => process.chdir(cwd))
  const c = await loadAgentConfig('good.yaml')
  t.equal(c.file, join(dir, 'good.yaml'))
  t.same(c.tls,
    { cert: join(dir, 'front.crt'), key: join(dir, 'front.key'), ca: join(dir, 'other.crt') })

  const err = await loadAgentConfig('bad.yaml').catch((e: unknown) => e) as ConfigError
  t.ok(err instanceof ConfigError)
  t.same(err.issues.map((i) => [i.path, i.line]), [['tls.key', 4]])

  await t.rejects(loadAgentConfig('mismatch.yaml'), {
    code: 'ERR_FTPROXY_CONFIG',
    issues: [{ path: 'tls.key', line: 4 }, { path: 'tls.ca', line: 5 }],
  }, 'a key that is not the certificate\'s, and a CA that is not PEM')
  await t.rejects(loadAgentConfig('invalid.yaml'),
    { code: 'ERR_FTPROXY_CONFIG', issues: [{ path: 'server', line: 1 }] })
  await t.rejects(loadAgentConfig('missing.yaml'),
    { code: 'ERR_FTPROXY_CONFIG', issues: [{ path: '' }] })
})

t.test('isLoopback', async (t) => {
  const loopback = ['127.0.0.1', '127.1.2.3', '127.255.255.255', '::1', '0:0:0:0:0:0:0:1',
    '::ffff:127.0.0.1', 'localhost', 'LOCALHOST']
  for (const h of loopback) {
    t.equal(isLoopback(h), true, `${h} is loopback`)
  }
  const others = ['0.0.0.0', '::', '128.0.0.1', '10.0.0.2', 'fd00::1', 'example.com',
    'localhost.example.com', '', '126.255.255.255']
  for (const h of others) {
    t.equal(isLoopback(h), false, `${h} is not loopback`)
  }
})

t.test('reaches: would a connect land on that listener', async (t) => {
  const hp = parseHostPort
  const yes: Array<[string, string]> = [
    ['localhost:1', '127.0.0.1:1'], ['127.0.0.1:1', 'localhost:1'], ['[::1]:1', 'localhost:1'],
    ['[0:0:0:0:0:0:0:1]:1', '[::1]:1'], ['[::ffff:127.0.0.1]:1', '127.0.0.1:1'],
    ['127.0.0.5:1', '0.0.0.0:1'], ['[::1]:1', '[::]:1'], ['127.0.0.1:1', '[::]:1'],
    ['0.0.0.0:1', '127.0.0.1:1'], ['[::]:1', '[::1]:1'], ['DB.example.com:1', 'db.example.com:1'],
    ['10.0.0.2:1', '10.0.0.2:1'],
  ]
  for (const [to, at] of yes) t.ok(reaches(hp(to), hp(at)), `${to} reaches ${at}`)
  const no: Array<[string, string]> = [
    ['localhost:1', 'localhost:2'], ['127.0.0.2:1', '127.0.0.1:1'], ['[::1]:1', '0.0.0.0:1'],
    ['10.0.0.2:1', '0.0.0.0:1'], ['10.0.0.2:1', '127.0.0.1:1'], ['db:1', '127.0.0.1:1'],
  ]
  for (const [to, at] of no) t.notOk(reaches(hp(to), hp(at)), `${to} does not reach ${at}`)
})
