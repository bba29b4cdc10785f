// @ts-check
// The functions a V8 CPU profile (node --cpu-prof, bench.mjs --cpu-prof) spent most self time
// in, with where they are defined: what to look at first when the front is slow.
//
//   node bench/cpuprofile.mjs FILE.cpuprofile [--top N]            (default 25)
//   node bench/cpuprofile.mjs FILE.cpuprofile --callers writeBuffer
//     that function's self time by the first two callers outside Node's own code (node:…):
//     which of ours made the calls, e.g. which writes cost the syscall time
//
// Self time of a function is the sum of the sample intervals whose innermost frame it is,
// over every node of the call tree with that function (same name, script and line).

import { readFileSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'

/**
 * @typedef {{ functionName: string, url: string, lineNumber: number }} CallFrame
 *
 * @typedef {object} ProfileNode
 * @property {number} id
 * @property {CallFrame} callFrame
 * @property {number[]} [children]
 *
 * @typedef {object} Profile
 * @property {ProfileNode[]} nodes
 * @property {number[]} samples       node id of each sample
 * @property {number[]} timeDeltas    µs since the previous sample, one per sample
 *
 * @typedef {{ name: string, where: string, ms: number }} Row
 */

/** "name (file:line)" of a frame, the file relative to the working dir. @param {CallFrame} f */
function frameOf (f) {
  const file = path.relative(process.cwd(), f.url.replace(/^file:\/\//, ''))
  const where = f.url ? `${file}:${f.lineNumber + 1}` : ''
  return { name: f.functionName || '(anonymous)', where }
}

/**
 * Self ms of every node of the tree, by id.
 * @param {Profile} profile
 */
function selfByNode (profile) {
  /** @type {Map<number, number>} */
  const ms = new Map()
  profile.samples.forEach((id, i) => {
    // A sample's interval is the delta that follows it (the last has none: counted as 0).
    ms.set(id, (ms.get(id) ?? 0) + (profile.timeDeltas[i + 1] ?? 0) / 1000)
  })
  return ms
}

/**
 * Self time summed over the nodes whose key is the same, most first.
 * @param {Profile} profile
 * @param {(n: ProfileNode) => Row | null} rowOf   a node's row (its key: name and where)
 * @returns {Row[]}
 */
function tally (profile, rowOf) {
  const self = selfByNode(profile)
  /** @type {Map<string, Row>} */
  const byKey = new Map()
  for (const n of profile.nodes) {
    const row = rowOf(n)
    if (!row) continue
    const key = `${row.name}\u0000${row.where}`
    const sum = byKey.get(key) ?? { ...row, ms: 0 }
    sum.ms += self.get(n.id) ?? 0
    byKey.set(key, sum)
  }
  return [...byKey.values()].sort((a, b) => b.ms - a.ms)
}

/**
 * Rows of `name`'s self time, keyed by its first two callers outside node:… code.
 * @param {Profile} profile
 * @param {string} name
 * @returns {(n: ProfileNode) => Row | null}
 */
function callersOf (profile, name) {
  /** @type {Map<number, ProfileNode>} */
  const parent = new Map()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n)
  return (n) => {
    if (n.callFrame.functionName !== name) return null
    /** @type {string[]} */
    const chain = []
    let p = parent.get(n.id)
    for (let i = 0; i < 200 && p && chain.length < 2; i++, p = parent.get(p.id)) {
      if (p.callFrame.url.startsWith('node:') || p.callFrame.url === '') continue
      const f = frameOf(p.callFrame)
      chain.push(`${f.name} (${f.where})`)
    }
    return { name, where: chain.join(' < ') || '(no caller of ours)', ms: 0 }
  }
}

const { values, positionals } = parseArgs({
  options: { top: { type: 'string', default: '25' }, callers: { type: 'string' } },
  allowPositionals: true,
})
const [file] = positionals
if (file === undefined) {
  throw new Error('usage: node bench/cpuprofile.mjs FILE.cpuprofile [--top N] [--callers NAME]')
}
/** @type {Profile} */
const profile = JSON.parse(readFileSync(file, 'utf8'))
const total = [...selfByNode(profile).values()].reduce((a, b) => a + b, 0)
const rows = values.callers === undefined
  ? tally(profile, (n) => ({ ...frameOf(n.callFrame), ms: 0 }))
  : tally(profile, callersOf(profile, values.callers))
process.stdout.write(`${file}: ${(total / 1000).toFixed(2)} s sampled\n`)
process.stdout.write(`   self ms       %  function  (${values.callers ? 'callers' : 'where'})\n`)
for (const r of rows.slice(0, Number(values.top))) {
  const pct = ((r.ms / total) * 100).toFixed(1).padStart(6)
  process.stdout.write(`${r.ms.toFixed(1).padStart(9)} ${pct}%  ${r.name}  ${r.where}\n`)
}
