// The command line: yargs commands mapped onto lib/. Signals become close(); main() returns
// the exit code and never calls process.exit (bin/ftproxy sets process.exitCode).

import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import yargs from 'yargs'
import { agentConfigFromFlags, formatHostPort, loadAgentConfig, loadConfig, renderConfig } from './config.js'
import { ConfigError, FtproxyError } from './errors.js'
import { createLogger, type Logger } from './logger.js'
import { Front } from './front/front.js'
import { runDemoServerCli } from './demo-server.js'
import { Agent } from './agent/agent.js'

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }

export async function main (argv: string[]): Promise<number> {
  let code = 0
  const cli = yargs(argv)
    .scriptName('ftproxy')
    .usage('$0 <command> [options]\n\nFault-tolerant front proxy for an unmodified TCP server (primary/backup).')
    .command('run', 'run the front proxy', (y) => y
      .option('config', { alias: 'c', type: 'string', demandOption: true, describe: 'YAML config file' }),
    async (args) => { code = await run(args.config) })
    .command('check-config <file>', 'validate a config file and print it with defaults filled', (y) => y
      .positional('file', { type: 'string', demandOption: true, describe: 'YAML config file' }),
    async (args) => { code = await checkConfig(args.file) })
    .command('agent', 'run an agent beside a server: the far end of a log channel from the front', (y) => y
      .option('config', { alias: 'c', type: 'string', describe: 'agent YAML config file' })
      .option('listen', { type: 'string', describe: 'host:port for the front\'s log channel (default 127.0.0.1:7201)' })
      .option('server', { type: 'string', describe: 'host:port of the local server' })
      .option('state-dir', { type: 'string', describe: 'where the newest epoch seen is kept (default ./agent-state)' })
      .check((a) => a.config !== undefined || a.server !== undefined ? true : 'give --config FILE, or --server host:port'),
    async (args) => { code = await runAgent({ config: args.config, listen: args.listen, server: args.server, stateDir: args['state-dir'] }) })
    .command('demo-server', 'run the demo line-protocol KV server (the embedded default backend)', (y) => y
      .option('port', { alias: 'p', type: 'number', demandOption: true, describe: 'TCP port (0: any free port)' })
      .option('host', { type: 'string', default: '127.0.0.1', describe: 'address to bind' })
      .option('diverge-after', { type: 'number', describe: 'answer differently after N commands (divergence testing)' }),
    async (args) => {
      // Under a front's supervision stdin is a pipe from the front: when the front dies
      // (even by SIGKILL) the pipe closes, and the demo server goes with it, not orphaned.
      if (process.env.FTPROXY_SUPERVISED === '1') {
        process.stdin.once('end', () => process.kill(process.pid, 'SIGTERM'))
        process.stdin.resume()
      }
      try {
        await runDemoServerCli({ host: args.host, port: args.port, divergeAfter: args['diverge-after'] })
      } catch (err) {
        process.stderr.write(`ftproxy demo-server: ${(err as Error).message}\n`)
        code = 1
      } finally {
        process.stdin.destroy() // the watched pipe must not keep the process alive
      }
    })
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
      code = 2
    })
  await cli.parseAsync()
  return code
}

async function checkConfig (file: string): Promise<number> {
  try {
    const cfg = await loadConfig(file)
    process.stdout.write(renderConfig(cfg))
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

async function run (file: string): Promise<number> {
  const cfg = await configOrExit(() => loadConfig(file))
  if (!cfg) return 1
  const log = createLogger({ level: cfg.log.level, format: cfg.log.format })
  const front = new Front(cfg, { log })
  return await daemon(log, {
    start: () => front.start(),
    ready: () => `primary ${front.status().primary}, epoch ${front.status().epoch}, listening on ${formatHostPort(front.address)}`,
    close: () => front.close(),
    wire: (status, stop) => {
      front.on('failover', (f) => status(`primary ${f.to}, epoch ${f.epoch} (failover from ${f.from})`))
      front.on('stopped', (reason) => stop(1, { reason }))
    },
  })
}

async function runAgent (args: { config?: string, listen?: string, server?: string, stateDir?: string }): Promise<number> {
  const cfg = await configOrExit(async () => args.config !== undefined
    ? await loadAgentConfig(args.config)
    : agentConfigFromFlags({ listen: args.listen, server: args.server, stateDir: args.stateDir }))
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
  wire?: (status: (line: string) => void, stop: (code: number, why: Record<string, unknown>) => void) => void
}

// Start, tell systemd, run until SIGTERM/SIGINT (exit 0) or until the service gives up.
async function daemon (log: Logger, d: Daemon): Promise<number> {
  // Signals are ours from the start: one that arrives while still starting stops the
  // service as soon as start() settles, instead of killing the process mid-way.
  let pending: { code: number, why: Record<string, unknown> } | null = null
  let stop = (code: number, why: Record<string, unknown>): void => { pending = { code, why } }
  const onSignal = (signal: NodeJS.Signals): void => stop(0, { signal })
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  try {
    await d.start()
  } catch (err) {
    process.off('SIGTERM', onSignal)
    process.off('SIGINT', onSignal)
    const e = err as FtproxyError
    log.error('startup_failed', { code: e.code, error: e.message })
    return 1
  }
  notifySystemd(log, 'READY=1', d.ready())
  return await new Promise<number>((resolve) => {
    let stopping = false
    stop = (code, why) => {
      if (stopping) return
      stopping = true
      process.off('SIGTERM', onSignal)
      process.off('SIGINT', onSignal)
      log.info('stopping', why)
      d.close().then(() => resolve(code), (err: Error) => {
        log.error('shutdown_error', { error: err.message })
        resolve(1)
      })
    }
    d.wire?.((line) => notifySystemd(log, null, line), stop)
    if (pending) stop(pending.code, pending.why)
  })
}

// Node has no unix datagram sockets, so readiness goes through systemd-notify
// (the unit sets NotifyAccess=all for that reason).
function notifySystemd (log: Logger, ready: string | null, status: string): void {
  if (!process.env.NOTIFY_SOCKET) return
  const args = ready ? ['--ready', `--status=${status}`] : [`--status=${status}`]
  const child = spawn('systemd-notify', args, { stdio: 'ignore' })
  child.on('error', (err) => log.warn('systemd_notify_failed', { error: err.message }))
}
