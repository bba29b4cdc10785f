// The command line: yargs commands mapped onto lib/. Signals become close(); main() returns
// the exit code and never calls process.exit (bin/ftproxy sets process.exitCode).

import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import yargs, { type Argv } from 'yargs'
import { formatHostPort } from './address.js'
import {
  agentConfigFromFlags, configWarnings, loadAgentConfig, loadConfig, renderConfig,
} from './config/index.js'
import { ConfigError, FtproxyError } from './errors.js'
import { createLogger, type Logger } from './logger.js'
import { Front, type FailoverInfo, type FrontStatus } from './front/front.js'
import type { LastReseed } from './front/reseed.js'
import { runDemoServerCli } from './demo-server.js'
import { runDemoReseed } from './demo-reseed.js'
import { Agent } from './agent/agent.js'
import { Admin } from './admin.js'

const pkg = JSON.parse(
  readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }

const USAGE = '$0 <command> [options]\n\n' +
  'Fault-tolerant front proxy for an unmodified TCP server (primary/backup).'

/** The exit code of the command run; set by its handler. */
interface Outcome { code: number }

export async function main (argv: string[]): Promise<number> {
  const outcome: Outcome = { code: 0 }
  const cli = yargs(argv)
    .scriptName('ftproxy')
    .usage(USAGE)
  // In the order --help lists them.
  addFrontCommands(cli, outcome)
  addAgentCommand(cli, outcome)
  addAdminCommands(cli, outcome)
  addDemoServerCommand(cli, outcome)
  cli
    .demandCommand(1, 'name a command (see --help)')
    .strict()
    .version(pkg.version)
    .help()
    .alias('h', 'help')
    .wrap(Math.min(100, process.stdout.columns ?? 100))
    .exitProcess(false)
    .fail((msg, err, y) => {
      if (err) throw err
      process.stderr.write(`${y.help()}\n\n${msg}\n`)
      outcome.code = 2
    })
  await cli.parseAsync()
  return outcome.code
}

function addFrontCommands (cli: Argv, outcome: Outcome): void {
  cli
    .command('run', 'run the front proxy', (y) => y
      .option('config', {
        alias: 'c', type: 'string', demandOption: true, describe: 'YAML config file',
      })
      .option('accept-state-from', {
        type: 'string',
        describe: 'vouch for this replica\'s data as it is now (after ERR_FTPROXY_STATE_LOST): ' +
          'it serves, every other replica is re-seeded from it',
      }),
    async (args) => { outcome.code = await run(args.config, args['accept-state-from']) })
    .command('check-config [file]', 'validate a config file and print it with defaults filled',
      (y) => y
        .positional('file', { type: 'string', describe: 'YAML config file' })
        .option('config', { alias: 'c', type: 'string', describe: 'YAML config file (as for run)' })
        .check((a) => {
          if ((a.file === undefined) === (a.config === undefined)) {
            throw new Error('give the config file once: check-config FILE or --config FILE')
          }
          return true
        }),
      async (args) => { outcome.code = await checkConfig((args.file ?? args.config) as string) })
}

function addAdminCommands (cli: Argv, outcome: Outcome): void {
  cli
    .command('status', 'show the running front\'s status (from its admin endpoint)',
      (y) => adminOptions(y)
        .option('json', { type: 'boolean', default: false, describe: 'print the raw JSON' }),
      async (args) => { outcome.code = await status(args) })
    .command('failover', 'planned switchover to a backup that is in sync (zero loss)',
      (y) => adminOptions(y)
        .option('to', {
          type: 'string', describe: 'the backup to switch to (default: the first in sync)',
        }),
      async (args) => { outcome.code = await failover(args) })
    .command('reseed <replica>', 're-seed a stale replica now: it joins as a backup when done',
      (y) => adminOptions(y)
        .positional('replica', { type: 'string', demandOption: true, describe: 'its name' }),
      async (args) => { outcome.code = await reseed(args) })
}

function addAgentCommand (cli: Argv, outcome: Outcome): void {
  cli.command('agent',
    'run an agent beside a server: the far end of a log channel from the front',
    (y) => y
      .option('config', { alias: 'c', type: 'string', describe: 'agent YAML config file' })
      .option('listen', {
        type: 'string',
        describe: 'host:port for the front\'s log channel (default 127.0.0.1:7201)',
      })
      .option('server', { type: 'string', describe: 'host:port of the local server' })
      .option('state-dir', {
        type: 'string',
        describe: 'where the newest epoch seen is kept (default ./agent-state)',
      })
      .check((a) => a.config !== undefined || a.server !== undefined
        ? true
        : 'give --config FILE, or --server host:port'),
    async (args) => {
      outcome.code = await runAgent({
        config: args.config, listen: args.listen, server: args.server, stateDir: args['state-dir'],
      })
    })
}

function addDemoServerCommand (cli: Argv, outcome: Outcome): void {
  cli.command('demo-server',
    'run the demo line-protocol KV server (the embedded default backend)',
    (y) => y
      .option('port', {
        alias: 'p', type: 'number', demandOption: true, describe: 'TCP port (0: any free port)',
      })
      .option('host', { type: 'string', default: '127.0.0.1', describe: 'address to bind' })
      .option('diverge-after', {
        type: 'number', describe: 'answer differently after N commands (divergence testing)',
      }),
    async (args) => {
      const code = await demoServer({
        host: args.host, port: args.port, divergeAfter: args['diverge-after'],
      })
      // Keep a usage error's code: yargs still runs the handler after fail().
      if (code !== 0) outcome.code = code
    })
  cli.command('demo-reseed',
    'copy one demo server\'s map into another: the demo\'s reseed.command, run by the front',
    (y) => y,
    async () => {
      const code = await runDemoReseed({
        env: process.env, stdin: process.stdin, stdout: process.stdout, stderr: process.stderr,
      })
      process.stdin.destroy() // an open pipe from the front would keep the process alive
      if (code !== 0) outcome.code = code
    })
}

async function demoServer (
  opts: { host: string, port: number, divergeAfter?: number }
): Promise<number> {
  // A supervised server outlives its front (the next front adopts it), so its stdout and
  // stderr may be pipes nobody reads any more: runDemoServerCli drops its output once stdout
  // fails, and a late write to stderr (a warning of node's) must not throw either.
  process.stderr.on('error', () => {})
  try {
    await runDemoServerCli(opts)
    return 0
  } catch (err) {
    process.stderr.write(`ftproxy demo-server: ${(err as Error).message}\n`)
    return 1
  }
}

interface AdminArgs { admin?: string, config?: string, token?: string }

function adminOptions<T> (y: Argv<T>): Argv<T & AdminArgs> {
  return y
    .option('admin', {
      type: 'string',
      describe: 'admin host:port (default: admin.listen of --config, else 127.0.0.1:7900)',
    })
    .option('config', {
      alias: 'c',
      type: 'string',
      describe: 'the front\'s config, to find its admin address and token',
    })
    .option('token', {
      type: 'string',
      describe: 'bearer token (default: $FTPROXY_ADMIN_TOKEN, else admin.token of --config)',
    })
}

type AdminReply = { status: number, json: Record<string, unknown> } | string

// One request to the admin endpoint: the parsed JSON and the status, or a message for the user.
async function adminRequest (
  args: AdminArgs,
  method: string,
  path: string,
  body?: unknown
): Promise<AdminReply> {
  let address = args.admin ?? '127.0.0.1:7900'
  let token = args.token ?? process.env.FTPROXY_ADMIN_TOKEN
  if (args.config !== undefined) {
    const file = args.config
    const cfg = await configOrExit(() => loadConfig(file))
    if (!cfg) return 'bad config'
    address = args.admin ?? formatHostPort(cfg.admin.listen)
    token ??= cfg.admin.token
  }
  try {
    const res = await fetch(`http://${address}${path}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body ? { 'content-type': 'application/json' } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(30_000),
    })
    return { status: res.status, json: await res.json() as Record<string, unknown> }
  } catch (err) {
    const reason = (err as Error & { cause?: Error }).cause?.message ?? (err as Error).message
    return `cannot reach the admin endpoint at ${address}: ${reason}`
  }
}

async function status (args: AdminArgs & { json: boolean }): Promise<number> {
  const r = await adminRequest(args, 'GET', '/status')
  if (typeof r === 'string' || r.status !== 200) {
    const why = typeof r === 'string' ? r : String(r.json.error ?? r.status)
    process.stderr.write(`ftproxy status: ${why}\n`)
    return 1
  }
  if (args.json) {
    process.stdout.write(JSON.stringify(r.json, null, 2) + '\n')
    return 0
  }
  process.stdout.write(formatStatus(r.json as unknown as FrontStatus))
  return 0
}

/** `ftproxy status` for a person: a summary, a table of replicas, the last failover. */
function formatStatus (s: FrontStatus): string {
  const f = s.last_failover
  const protection = s.protected ? 'protected' : 'UNPROTECTED'
  const last = f
    ? `\nlast ${f.reason === 'switchover' ? 'switchover' : 'failover'}: ${f.from} -> ${f.to}, ` +
      `epoch ${f.epoch}, ${f.duration_ms} ms (${f.reason})\n`
    : ''
  return `epoch ${s.epoch}  primary ${s.primary}  ${protection} since ${s.protected_since}\n` +
    `connections ${s.connections}  log ${s.log_entries} entries / ${s.log_bytes} bytes  ` +
    `output held ${s.output_held_bytes} bytes\n\n` +
    `${formatTable(s)}\n` +
    last
}

function formatTable (s: FrontStatus): string {
  const header = ['REPLICA', 'ROLE', 'HEALTH', 'LAG_ENTRIES', 'LAG_BYTES', 'PID']
  const rows = [header, ...s.replicas.map((x) => [
    x.name, x.role, x.health, String(x.lag_entries), String(x.lag_bytes),
    x.pid === undefined ? '-' : String(x.pid),
  ])]
  const widths = header.map((_, i) => Math.max(...rows.map((row) => (row[i] ?? '').length)))
  return rows
    .map((row) => row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd())
    .join('\n')
}

async function failover (args: AdminArgs & { to?: string }): Promise<number> {
  const r = await adminRequest(args, 'POST', '/failover', args.to ? { to: args.to } : undefined)
  if (typeof r === 'string' || r.status !== 200) {
    const why = typeof r === 'string' ? r : `refused (${r.status}): ${String(r.json.error)}`
    process.stderr.write(`ftproxy failover: ${why}\n`)
    return 1
  }
  const info = r.json.switchover as FailoverInfo
  process.stdout.write(
    `switched over: ${info.from} -> ${info.to}, epoch ${info.epoch}, ${info.duration_ms} ms\n`)
  return 0
}

async function reseed (args: AdminArgs & { replica: string }): Promise<number> {
  const r = await adminRequest(args, 'POST', '/reseed', { replica: args.replica })
  if (typeof r === 'string' || r.status !== 200) {
    const why = typeof r === 'string'
      ? r
      : `refused (${r.status}, ${String(r.json.code)}): ${String(r.json.error)}`
    process.stderr.write(`ftproxy reseed: ${why}\n`)
    return 1
  }
  const last = (r.json.reseed as { last: LastReseed }).last
  process.stdout.write(`re-seeded ${last.replica} from ${last.source}: ${last.duration_ms} ms, ` +
    `input held ${last.pause_ms} ms, ${last.reattached} connections reattached, ` +
    `${last.closed} closed\n`)
  return 0
}

async function checkConfig (file: string): Promise<number> {
  try {
    const cfg = await loadConfig(file)
    process.stdout.write(renderConfig(cfg))
    for (const w of configWarnings(cfg)) process.stderr.write(`warning: ${w}\n`)
    process.stderr.write(`${file}: configuration is valid\n`)
    return 0
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`)
      return 1
    }
    throw err
  }
}

async function run (file: string, acceptStateFrom?: string): Promise<number> {
  const cfg = await configOrExit(() => loadConfig(file))
  if (!cfg) return 1
  const log = createLogger({ level: cfg.log.level, format: cfg.log.format })
  for (const warning of configWarnings(cfg)) log.warn('config_warning', { warning })
  const front = new Front(cfg, { log, acceptStateFrom })
  const admin = new Admin(front, { listen: cfg.admin.listen, token: cfg.admin.token, log })
  const summary = (): string => {
    const s = front.status()
    const roles = s.replicas.map((r) => `${r.name}=${r.role}`).join(' ')
    const protection = s.protected ? 'protected' : 'UNPROTECTED'
    return `epoch ${s.epoch}, ${protection}, ${roles}, ${s.connections} connections`
  }
  const onHup = (): void => {
    loadConfig(file).then((next) => front.reload(next),
      (err: Error) => log.error('reload_failed', { error: err.message }))
  }
  return await daemon(log, {
    start: async () => {
      await front.start()
      try {
        await admin.start()
      } catch (err) {
        await front.abandon()
        throw err
      }
    },
    ready: summary,
    close: async () => {
      await admin.close()
      await front.close()
    },
    reload: onHup,
    wire: (status, stop) => {
      front.on('roles', () => status(summary()))
      front.on('stopped', (reason) => stop(1, { reason }))
    },
  })
}

interface AgentArgs { config?: string, listen?: string, server?: string, stateDir?: string }

async function runAgent (args: AgentArgs): Promise<number> {
  const { config, ...flags } = args
  const cfg = await configOrExit(async () => config !== undefined
    ? await loadAgentConfig(config)
    : agentConfigFromFlags(flags))
  if (!cfg) return 1
  const log = createLogger({ level: cfg.log.level, format: cfg.log.format })
  const agent = new Agent(cfg, { log })
  return await daemon(log, {
    start: () => agent.start(),
    ready: () => `agent on ${formatHostPort(agent.address)} for ${formatHostPort(cfg.server)}`,
    close: () => agent.close(),
  })
}

async function configOrExit<T> (load: () => Promise<T>): Promise<T | null> {
  try {
    return await load()
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`)
      return null
    }
    throw err
  }
}

interface Daemon {
  start: () => Promise<void>
  /** One-line systemd STATUS once ready. */
  ready: () => string
  close: () => Promise<void>
  /** SIGHUP once running; without it, SIGHUP is logged and ignored (never the default kill). */
  reload?: () => void
  wire?: (status: (line: string) => void, stop: Stop) => void
}

type Stop = (code: number, why: Record<string, unknown>) => void

// Start, tell systemd, run until SIGTERM/SIGINT (exit 0) or until the service gives up.
async function daemon (log: Logger, d: Daemon): Promise<number> {
  // Signals are ours from the start: one that arrives while still starting stops the
  // service as soon as start() settles, instead of killing the process mid-way.
  let pending: { code: number, why: Record<string, unknown> } | null = null
  let stop: Stop = (code, why) => { pending = { code, why } }
  const onSignal = (signal: NodeJS.Signals): void => stop(0, { signal })
  let running = false
  const onHup = (): void => {
    if (running && d.reload) d.reload()
    else log.info('reload_ignored', { reason: running ? 'nothing to reload' : 'not running yet' })
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  process.on('SIGHUP', onHup)
  const release = (): void => {
    process.off('SIGTERM', onSignal)
    process.off('SIGINT', onSignal)
    running = false
  }
  try {
    await d.start()
  } catch (err) {
    release()
    process.off('SIGHUP', onHup)
    const e = err as FtproxyError
    log.error('startup_failed', { code: e.code, error: e.message })
    return 1
  }
  running = true
  notifySystemd(log, 'READY=1', d.ready())
  const watchdog = startWatchdog(log)
  return await new Promise<number>((resolve) => {
    let stopping = false
    stop = (code, why) => {
      if (stopping) return
      stopping = true
      clearInterval(watchdog)
      release()
      log.info('stopping', why)
      d.close().finally(() => process.off('SIGHUP', onHup)).then(() => resolve(code),
        (err: Error) => {
          log.error('shutdown_error', { error: err.message })
          resolve(1)
        })
    }
    d.wire?.((line) => notifySystemd(log, null, line), stop)
    if (pending) stop(pending.code, pending.why)
  })
}

// WatchdogSec= in the unit: systemd sets WATCHDOG_USEC and expects WATCHDOG=1 at least that
// often; pinging at half the period from the event loop means a hung loop gets restarted.
function startWatchdog (log: Logger): NodeJS.Timeout | undefined {
  const usec = Number(process.env.WATCHDOG_USEC)
  if (!process.env.NOTIFY_SOCKET || !Number.isFinite(usec) || usec <= 0) return undefined
  const t = setInterval(() => notifySystemd(log, null, null), Math.max(100, usec / 2000))
  t.unref()
  return t
}

// Node has no unix datagram sockets, so readiness goes through systemd-notify
// (the unit sets NotifyAccess=all for that reason).
function notifySystemd (log: Logger, ready: string | null, status: string | null): void {
  if (!process.env.NOTIFY_SOCKET) return
  // --pid: the message is this process's (the main PID), even though a helper sends it.
  const pid = `--pid=${process.pid}`
  const args = status === null
    ? [pid, 'WATCHDOG=1']
    : [pid, ...(ready ? ['--ready'] : []), `--status=${status}`]
  const child = spawn('systemd-notify', args, { stdio: 'ignore' })
  child.on('error', (err) => log.warn('systemd_notify_failed', { error: err.message }))
}
