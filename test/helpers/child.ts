// A node child running an ES module against the built dist/ under a low open-files limit: a
// process cannot lower its own limit, and the test runner's must stay whole.

import assert from 'node:assert'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import type { Test } from 'tap'
import { ROOT } from './cluster.js'

const DIST = path.join(ROOT, 'dist')

/** The file: URL of a built module, e.g. distUrl('front/log.js'), for a child's imports. */
export const distUrl = (rel: string): string => pathToFileURL(path.join(DIST, rel)).href

/**
 * For the child's script: fill() takes every free descriptor (until EMFILE), free() gives them
 * back, until(fn, what, ms) polls with a deadline. Imports node:fs as fs.
 */
export const FD_PRELUDE = `
import fs from 'node:fs'
const held = []
const fill = () => {
  try { for (;;) held.push(fs.openSync('/dev/null', 'r')) } catch (err) {
    if (err.code !== 'EMFILE') throw err
  }
}
const free = () => { while (held.length) fs.closeSync(held.pop()) }
const until = async (fn, what, ms = 10000) => {
  const end = Date.now() + ms
  while (!fn()) {
    if (Date.now() > end) throw new Error('timed out: ' + what)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}
`

// The child must run the code under test, not an older build of it.
function distFresh (t: Test, modules: string[]): boolean {
  for (const m of modules) {
    const built = fs.statSync(path.join(DIST, `${m}.js`), { throwIfNoEntry: false })
    if (!built || built.mtimeMs < fs.statSync(path.join(ROOT, 'lib', `${m}.ts`)).mtimeMs) {
      t.fail(`dist/${m}.js is missing or older than lib/${m}.ts: run npm run build`)
      return false
    }
  }
  return true
}

export interface UnderLimitOptions {
  /** lib modules the script runs, as paths under lib/ without extension ('util/fds') */
  built: string[]
  env?: Record<string, string>
}

/**
 * Runs `script` (an ES module) in node under `ulimit -n <nofile>`; resolves with the last JSON
 * line it printed, or null (the test failed) when a module in `built` is stale in dist/.
 * Fails when the child exits non-zero; it is SIGKILLed at teardown if still running.
 */
export async function runUnderLimit (
  t: Test, nofile: number, script: string, opts: UnderLimitOptions
): Promise<Record<string, unknown> | null> {
  if (!distFresh(t, opts.built)) return null
  const sh = `ulimit -n ${nofile} && exec "$0" --input-type=module -e "$FTPROXY_TEST_SCRIPT"`
  const child = spawn('sh', ['-c', sh, process.execPath], {
    env: { ...process.env, ...opts.env, FTPROXY_TEST_SCRIPT: script },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let out = ''
  let err = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { err += d.toString() })
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve))
  assert.equal(code, 0, `child exited ${code}: ${err}`)
  return JSON.parse(out.trim().split('\n').at(-1) ?? '') as Record<string, unknown>
}
