// Two redis-server copies that a front (in this process) supervises and re-seeds with the
// shipped config/reseed-redis.sh, each in a directory of its own.

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { Test } from 'tap'
import { frontYaml, ROOT, TestFront } from './cluster.js'
import { freePorts } from './ports.js'
import { until } from './until.js'

const SCRIPT = path.join(ROOT, 'config/reseed-redis.sh')

function redisCommand (port: number, dir: string): string[] {
  return ['redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--dir', dir, '--rdb-del-sync-files', 'yes']
}

export async function supervisedRedis (t: Test, extra = ''):
Promise<{ f: TestFront, ports: number[] }> {
  const ports = await freePorts(2)
  // Not t.testdir(): frontYaml() takes that one (and empties it).
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ftproxy-redis-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const n of ['a', 'b']) mkdirSync(path.join(dir, n))
  const replicas = ['a', 'b'].map((name, i) => {
    const port = ports[i] as number
    return { name, port, command: redisCommand(port, path.join(dir, name)) }
  })
  const yaml = frontYaml(t, replicas, 'protocol: resp\noutput_commit: ack\n' +
    `reseed: { command: [${JSON.stringify(SCRIPT)}], timeout: 30s }\n${extra}`)
  return { f: await new TestFront().start(t, yaml), ports }
}

export const pidOf = (f: TestFront, name: string): number =>
  f.front.status().replicas.find((r) => r.name === name)?.pid as number

export const inSyncAgain = (f: TestFront, name: string): Promise<unknown> =>
  until(() => f.front.status().protected && f.role(name) === 'backup',
    `${name} re-seeded and protected`, 30000)
