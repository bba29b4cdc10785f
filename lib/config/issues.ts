// Issues: zod's issues → (key path, message) pairs → ConfigIssues with the 1-based YAML line
// of the key path, so every problem names where in the file it is.

import { isAlias, isMap, isScalar, isSeq } from 'yaml'
import type { Document, Node as YamlNode } from 'yaml'
import type { z } from 'zod'
import type { ConfigIssue } from '../errors.js'
import { describe } from '../util/describe.js'

/** A key path: ['replicas', 1, 'address']. */
export type Path = PropertyKey[]

/** Allowed keys per normalised object path ('', 'replicas[]', 'log' …). */
export type KnownKeys = Record<string, string[]>

/**
 * zod's issues → ConfigIssues placed by `place` (a key path and line, or a flag name),
 * sorted by line.
 */
export function issuesOf (
  error: z.ZodError,
  knownKeys: KnownKeys,
  place: (path: Path) => Omit<ConfigIssue, 'message'>
): ConfigIssue[] {
  const issues: ConfigIssue[] = []
  for (const iss of error.issues) {
    for (const { path, message } of explain(iss, knownKeys)) {
      issues.push({ ...place(path), message })
    }
  }
  // By line, so the list reads top to bottom like the file.
  issues.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity))
  return issues
}

function explain (
  iss: z.core.$ZodIssue,
  knownKeys: KnownKeys
): Array<{ path: Path, message: string }> {
  const input = (iss as { input?: unknown }).input
  switch (iss.code) {
    case 'unrecognized_keys': {
      const known = knownKeys[normalisePath(iss.path)] ?? []
      return iss.keys.map((key) => ({
        path: [...iss.path, key],
        message: unknownKeyMessage(key, known),
      }))
    }
    case 'invalid_type':
      if (input === undefined) return [{ path: iss.path, message: 'required' }]
      // Keep a schema's own message; replace zod's generic one.
      if (!iss.message.startsWith('Invalid input')) break
      return [{
        path: iss.path,
        message: `expected ${article(iss.expected)}, got ${describe(input)}`,
      }]
    case 'invalid_value': {
      if (input === undefined) return [{ path: iss.path, message: 'required' }]
      const values = iss.values.map(String).join(' | ')
      return [{ path: iss.path, message: `expected one of ${values}, got ${describe(input)}` }]
    }
  }
  return [{ path: iss.path, message: iss.message }]
}

/** 'unknown key', with the nearest known key as a hint when one is close. */
export function unknownKeyMessage (key: string, known: string[]): string {
  const near = known.find((k) => editDistance(k, key) <= 2)
  return near !== undefined ? `unknown key (did you mean '${near}'?)` : 'unknown key'
}

/** ['replicas', 1, 'address'] → 'replicas[1].address' */
export function formatPath (path: Path): string {
  let s = ''
  for (const seg of path) {
    if (typeof seg === 'number') s += `[${seg}]`
    else s += s === '' ? String(seg) : `.${String(seg)}`
  }
  return s
}

function normalisePath (path: Path): string {
  return formatPath(path).replace(/\[\d+\]/g, '[]')
}

/**
 * The line of a key path. Walks the YAML nodes along the path as far as they exist: a scalar
 * reports its own line; a collection reports the line of its key; a missing key reports its
 * parent's line.
 */
export function lineOfPath (
  doc: Document,
  path: Path,
  lineAt: (offset: number) => number
): number | undefined {
  let node: unknown = doc.contents
  let line = lineOfNode(node, lineAt)
  for (const seg of path) {
    if (isAlias(node)) node = node.resolve(doc)
    if (isMap(node)) {
      const pair = node.items.find((p) => keyString(p.key) === String(seg))
      if (pair === undefined) break
      node = pair.value
      line = isScalar(node) && node.value != null
        ? lineOfNode(node, lineAt) ?? line
        : lineOfNode(pair.key, lineAt) ?? line
    } else if (isSeq(node) && typeof seg === 'number' && node.items[seg] != null) {
      node = node.items[seg]
      line = lineOfNode(node, lineAt) ?? line
    } else {
      break
    }
  }
  return line
}

export function lineOfNode (node: unknown, lineAt: (offset: number) => number): number | undefined {
  const range = (node as YamlNode | null)?.range
  return range != null ? lineAt(range[0]) : undefined
}

function keyString (key: unknown): string {
  return isScalar(key) ? String(key.value) : String(key)
}

const ARTICLES: Record<string, string> = {
  object: 'a map',
  array: 'a list',
  int: 'an integer',
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
}

function article (expected: string): string {
  return ARTICLES[expected] ?? expected
}

function editDistance (a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0] ?? 0
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j] ?? 0
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      row[j] = Math.min(cur + 1, (row[j - 1] ?? 0) + 1, prev + cost)
      prev = cur
    }
  }
  return row[b.length] ?? 0
}
