// Agent replicas' incarnations (named in each WELCOME) are written to state.json before any
// client is served, so that the next front can tell a server that restarted while no front
// ran: kill -9 of the front, then of a's server (its agent starts it again, empty), then a
// new front. It must know a restarted, and serve the data from b.

import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { Client, agentInProcess } from '../helpers/cluster.js'
import { freePorts } from '../helpers/ports.js'
import { alive, Cli } from '../helpers/proc.js'
import { until } from '../helpers/until.js'

const demoCommand = (port: number): string =>
  `command: ${JSON.stringify(['ftproxy', 'demo-server', '--port', String(port)])}\n`

async function ask (c: Client, line: string): Promise<string> {
  const n = c.lines.length
  c.send(`${line}\n`)
  await c.waitLines(n + 1)
  return c.lines[n] as string
}

interface Pair { file: string, port: number, dir: string }

async function setup (t: Test):
Promise<Pair & { serverPid: (i: number) => number, upCount: (i: number) => number }> {
  const dir = t.testdir({ state: {} })
  const [port, sa, sb] = await freePorts(3) as [number, number, number]
  const A = await agentInProcess(t, sa, demoCommand(sa))
  const B = await agentInProcess(t, sb, demoCommand(sb))
  const file = path.join(dir, 'ftproxy.yaml')
  writeFileSync(file, [
    `listen: 127.0.0.1:${port}`,
    `state_dir: ${JSON.stringify(path.join(dir, 'state'))}`,
    'protocol: line',
    'replicas:',
    `  - { name: a, agent: "127.0.0.1:${A.port}" }`,
    `  - { name: b, agent: "127.0.0.1:${B.port}" }`,
    'health_check: { interval: 200ms, timeout: 200ms, fall: 2, rise: 1 }',
    'timeouts: { connect: 1s, stall: 1s, linger: 1s }',
    'log: { level: info, format: json }',
    'admin: { listen: 127.0.0.1:0 }',
    'reseed: { command: [ftproxy, demo-reseed], timeout: 20s }',
    '',
  ].join('\n'))
  const evs = [A.events, B.events]
  const serverPid = (i: number): number => {
    const e = (evs[i] ?? []).filter((e) => e.event === 'replica_process_started').at(-1)
    return Number(e?.pid)
  }
  const upCount = (i: number): number =>
    (evs[i] ?? []).filter((e) => e.event === 'server_up').length
  return { file, port, dir, serverPid, upCount }
}

function stateOf (dir: string): { incarnations: Record<string, string>, primary: string } {
  return JSON.parse(readFileSync(path.join(dir, 'state', 'state.json'), 'utf8'))
}

t.test('agents: the incarnations a front learnt are in state.json for the next front',
  async (t) => {
    const s = await setup(t)
    const f1 = new Cli(t, ['run', '--config', s.file])
    await f1.waitEvent('listening')
    await f1.waitEvent('protected')
    const c = await Client.open(s.port)
    c.send(Array.from({ length: 20 }, (_, i) => `SET k${i} v${i}\n`).join(''))
    await c.waitLines(20)
    c.close()
    const st = stateOf(s.dir)
    t.comment(`state.json after start: ${JSON.stringify(st)}`)
    t.ok(st.incarnations.a !== undefined && st.incarnations.b !== undefined,
      'both agents\' incarnations are recorded in state.json')

    // The front dies, and a's server restarts (its agent respawns it) while no front runs.
    f1.proc.kill('SIGKILL')
    await f1.waitExit()
    const old = s.serverPid(0)
    const ups = s.upCount(0)
    process.kill(old, 'SIGKILL')
    await until(() => s.serverPid(0) !== old && alive(s.serverPid(0)), 'a\'s server respawned',
      20000)
    await until(() => s.upCount(0) > ups, 'a\'s agent sees its server up again', 20000)

    const f2 = new Cli(t, ['run', '--config', s.file])
    await f2.waitEvent('listening', undefined, 20000)
    const d = await Client.open(s.port)
    t.teardown(() => d.close())
    const got = await ask(d, 'GET k7')
    t.match(f2.find('replica_restarted'), { replica: 'a' }, 'a is known to have restarted')
    t.equal(got, 'v7', 'no data served from the emptied copy')
  })
