// Parsing and loading: YAML text of one dialect → validated data → Config / AgentConfig, and
// the files a config names (tls) checked to parse (files.ts). Also the agent's config from
// flags.
//
//   text ──yaml.parseDocument──▶ Document (+LineCounter) ──toJS──▶ plain data ──zod──▶ Config
//                                     ▲                                           │
//                                     └──── issue paths mapped back to lines ◀────┘

import { resolve } from 'node:path'
import { isMap, isScalar, LineCounter, parseDocument } from 'yaml'
import type { z } from 'zod'
import { ConfigError } from '../errors.js'
import { describe } from '../util/describe.js'
import { checkTlsFiles, readConfigText } from './files.js'
import {
  formatPath, issuesOf, lineOfNode, lineOfPath, type KnownKeys, type Path,
} from './issues.js'
import { AGENT_KNOWN_KEYS, KNOWN_KEYS, agentRoot, root } from './schema.js'
import type { AgentConfig, Config, TlsConfig } from './types.js'

interface Dialect<S extends z.ZodType> {
  schema: S
  /** Allowed keys per normalised object path, for "did you mean" hints. */
  knownKeys: KnownKeys
  /** What an empty file is told. */
  empty: string
}

const FRONT: Dialect<typeof root> = {
  schema: root,
  knownKeys: KNOWN_KEYS,
  empty: 'the file is empty: it needs at least `replicas` (two or more)',
}

const AGENT: Dialect<typeof agentRoot> = {
  schema: agentRoot,
  knownKeys: AGENT_KNOWN_KEYS,
  empty: "the file is empty: it needs at least `server` (the local server's host:port)",
}

/** Validated data, and the line of a key path in the text it came from (for later checks). */
interface Parsed<T> {
  data: T
  lineOf: (path: Path) => number | undefined
}

/**
 * YAML text → validated data of one dialect. Throws one ConfigError listing every problem,
 * each with its key path (`replicas[1].address`) and 1-based line.
 */
function parseYaml<S extends z.ZodType> (
  dialect: Dialect<S>,
  text: string,
  file: string
): Parsed<z.output<S>> {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, prettyErrors: false })
  const lineAt = (offset: number) => lineCounter.linePos(offset).line

  if (doc.errors.length > 0) {
    throw new ConfigError(file, doc.errors.map((e) => ({
      path: '',
      line: lineAt(e.pos[0]),
      message: e.code === 'MULTIPLE_DOCS'
        ? 'YAML: only one document is allowed (remove the extra ---)'
        : `YAML: ${e.message}`,
    })))
  }
  if (doc.contents == null || (isScalar(doc.contents) && doc.contents.value == null)) {
    throw new ConfigError(file, [{ path: '', line: 1, message: dialect.empty }])
  }
  if (!isMap(doc.contents)) {
    throw new ConfigError(file, [{
      path: '',
      line: lineOfNode(doc.contents, lineAt),
      message: 'expected a map of settings (key: value) at the top level, ' +
        `got ${describe(doc.contents.toJSON())}`,
    }])
  }

  let data: unknown
  try {
    data = doc.toJS({ maxAliasCount: 100 })
  } catch (err) {
    throw new ConfigError(file, [{ path: '', message: `YAML: ${(err as Error).message}` }])
  }

  const lineOf = (path: Path) => lineOfPath(doc, path, lineAt)
  const result = dialect.schema.safeParse(data, { reportInput: true })
  if (!result.success) {
    throw new ConfigError(file, issuesOf(result.error, dialect.knownKeys,
      (path) => ({ path: formatPath(path), line: lineOf(path) })))
  }
  return { data: result.data, lineOf }
}

function resolveTls (cwd: string, t: TlsConfig): TlsConfig {
  return { cert: resolve(cwd, t.cert), key: resolve(cwd, t.key), ca: resolve(cwd, t.ca) }
}

/**
 * YAML text → Config. Throws one ConfigError listing every problem, each with its key path
 * (`replicas[1].address`) and 1-based line. `state_dir` and tls paths are resolved against
 * `cwd`. Pure: files named by tls are checked by loadConfig, not here.
 */
export function parseConfig (text: string, file: string, cwd = process.cwd()): Config {
  return frontConfig(parseYaml(FRONT, text, file).data, file, cwd)
}

function frontConfig (c: z.output<typeof root>, file: string, cwd: string): Config {
  return {
    file,
    ...c,
    state_dir: resolve(cwd, c.state_dir),
    replicas: c.replicas.map((r) =>
      r.tls !== undefined ? { ...r, tls: resolveTls(cwd, r.tls) } : r),
  }
}

/**
 * Reads (at most 1 MiB) and parses a config file; `file` in the result is its absolute path.
 * Also checks the PEM files named by each replica's tls: readable, parsable, the key matching
 * the certificate (issues at replicas[i].tls.cert …).
 */
export async function loadConfig (path: string): Promise<Config> {
  const { file, text } = await readConfigText(path)
  const { data, lineOf } = parseYaml(FRONT, text, file)
  const c = frontConfig(data, file, process.cwd())
  await checkTlsFiles(file, lineOf, c.replicas.flatMap((r, i) =>
    r.tls !== undefined ? [{ at: ['replicas', i, 'tls'], tls: r.tls }] : []))
  return c
}

/**
 * Agent YAML text → AgentConfig, with the same rules and errors as parseConfig. `state_dir` and
 * tls paths are resolved against `cwd`. No tls on a non-loopback listen is allowed here (the
 * agent warns at run time; see isLoopback).
 */
export function parseAgentConfig (text: string, file: string, cwd = process.cwd()): AgentConfig {
  return agentConfig(parseYaml(AGENT, text, file).data, file, cwd)
}

function agentConfig (c: z.output<typeof agentRoot>, file: string, cwd: string): AgentConfig {
  const out: AgentConfig = {
    file,
    listen: c.listen,
    server: c.server,
    state_dir: resolve(cwd, c.state_dir),
    health_check: c.health_check,
    timeouts: c.timeouts,
    log: c.log,
  }
  if (c.command !== undefined) out.command = c.command
  if (c.tls !== undefined) out.tls = resolveTls(cwd, c.tls)
  return out
}

/**
 * Reads (at most 1 MiB) and parses an agent config file, and checks the PEM files its tls
 * names, as loadConfig does.
 */
export async function loadAgentConfig (path: string): Promise<AgentConfig> {
  const { file, text } = await readConfigText(path)
  const { data, lineOf } = parseYaml(AGENT, text, file)
  const c = agentConfig(data, file, process.cwd())
  if (c.tls !== undefined) await checkTlsFiles(file, lineOf, [{ at: ['tls'], tls: c.tls }])
  return c
}

/** `file` of an AgentConfig built by agentConfigFromFlags. */
export const FLAGS_FILE = '<flags>'

// Flag names for agentConfigFromFlags, by config key.
const AGENT_FLAGS: Record<string, string> = {
  listen: '--listen',
  server: '--server',
  state_dir: '--state-dir',
}

/**
 * `ftproxy agent --listen … --server … --state-dir …` → AgentConfig, validated like the file
 * (defaults for what is not given). Problems throw one ConfigError whose issue paths are the
 * flag names ('--server').
 */
export function agentConfigFromFlags (
  flags: { listen?: string, server?: string, stateDir?: string },
  cwd = process.cwd()
): AgentConfig {
  const data: Record<string, unknown> = {}
  if (flags.listen !== undefined) data.listen = flags.listen
  if (flags.server !== undefined) data.server = flags.server
  if (flags.stateDir !== undefined) data.state_dir = flags.stateDir
  const result = agentRoot.safeParse(data, { reportInput: true })
  if (!result.success) {
    throw new ConfigError(FLAGS_FILE, issuesOf(result.error, AGENT_KNOWN_KEYS, (path) => ({
      path: AGENT_FLAGS[String(path[0])] ?? formatPath(path),
    })))
  }
  return agentConfig(result.data, FLAGS_FILE, cwd)
}
