// A certificate that the front or the agent refuses fails the agent replica at once, as a TLS
// error naming the side that refused, not as silence once timeouts.heartbeat has passed.

import t from 'tap'
import type { Test } from 'tap'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { AGENT_EXT, FRONT_EXT, Pki } from '../helpers/certs.js'
import { Client, TestFront, agentInProcess, demoServer } from '../helpers/cluster.js'
import type { Event } from '../helpers/events.js'
import { haveOpenssl } from '../helpers/openssl.js'

// Long enough that a failure seen in time cannot be the heartbeat's.
const HEARTBEAT_MS = 30000
const IN_TIME_MS = 8000
let fronts = 0

// ca signs the front's and the agents' certificates; rogue signs nothing anyone uses.
function pki (tt: Test): Pki {
  return new Pki(path.join(tt.testdir({}), 'pki')).ca('ca').ca('rogue')
    .leaf('front', 'ca', FRONT_EXT)
    .leaf('agent', 'ca', AGENT_EXT)
    .leaf('misnamed', 'ca', 'subjectAltName=DNS:elsewhere.invalid\n')
}

/**
 * A direct primary a, and b behind an in-process agent with `agentTls`, the front speaking to
 * it with `frontTls`. Resolves with b's replica_down and channel_tls_refused events.
 */
async function refused (tt: Test, p: Pki, agentTls: string, frontTls: string): Promise<{
  down: Event, tlsEvent: Event, ms: number, f: TestFront
}> {
  const [sa, sb] = [await demoServer(tt), await demoServer(tt)]
  const b = await agentInProcess(tt, sb.port, `tls: ${agentTls}`)
  // Beside the certificates: a second tt.testdir() would wipe them.
  const stateDir = path.join(path.dirname(p.dir), `front-${++fronts}`)
  const yaml = `listen: 127.0.0.1:0\nstate_dir: ${JSON.stringify(stateDir)}\n` +
    `timeouts: { heartbeat: ${HEARTBEAT_MS}ms }\nreplicas:\n` +
    `  - name: a\n    address: 127.0.0.1:${sa.port}\n` +
    `  - name: b\n    agent: 127.0.0.1:${b.port}\n    tls: ${frontTls}\n`
  const started = performance.now()
  const f = await new TestFront().start(tt, yaml)
  const down = await f.waitEvent('replica_down', (e) => e.replica === 'b', IN_TIME_MS)
  const ms = performance.now() - started
  const tlsEvent = await f.waitEvent('channel_tls_refused', (e) => e.replica === 'b', 1000)
  return { down, tlsEvent, ms, f }
}

// The front goes on serving on a, with b out.
async function servedByA (tt: Test, f: TestFront): Promise<void> {
  tt.equal(f.role('a'), 'primary')
  tt.not(f.role('b'), 'backup', 'b is out of service')
  const c = await Client.open(f.port)
  c.send('PING\n')
  tt.same(await c.waitLines(1), ['PONG'], 'served by a')
  c.close()
}

t.test('the front refuses the agent\'s certificate', {
  skip: !haveOpenssl && 'openssl not installed',
}, async (tt) => {
  const p = pki(tt)
  const cases = [
    { what: 'signed by a CA the front does not trust', agent: 'agent', frontCa: 'rogue' },
    { what: 'naming another host', agent: 'misnamed', frontCa: 'ca' },
  ]
  for (const c of cases) {
    await tt.test(c.what, async (st) => {
      const r = await refused(st, p, p.tlsYaml(c.agent, 'ca'), p.tlsYaml('front', c.frontCa))
      st.match(r.tlsEvent, { code: 'ERR_FTPROXY_TLS', refused_by: 'front', tls_code: String })
      st.notMatch(r.tlsEvent.tls_code, /^E(CONN|PIPE)/, 'a verification code, not a reset')
      if (c.agent === 'misnamed') st.equal(r.tlsEvent.tls_code, 'ERR_TLS_CERT_ALTNAME_INVALID')
      st.match(r.down.reason, /\btls\b.*front refused the agent's certificate/,
        'the reason names TLS and the side that refused')
      st.ok(r.ms < HEARTBEAT_MS / 4, `failed after ${Math.round(r.ms)}ms, not the heartbeat's`)
      await servedByA(st, r.f)
    })
  }
})

t.test('the agent refuses the front\'s certificate', {
  skip: !haveOpenssl && 'openssl not installed',
}, async (tt) => {
  const p = pki(tt)
  const r = await refused(tt, p, p.tlsYaml('agent', 'rogue'), p.tlsYaml('front', 'ca'))
  tt.match(r.tlsEvent, { code: 'ERR_FTPROXY_TLS', refused_by: 'agent', tls_code: String })
  tt.match(r.down.reason, /\btls\b.*agent refused the front's certificate/,
    'the reason names TLS and the side that refused')
  tt.ok(r.ms < HEARTBEAT_MS / 4, `failed after ${Math.round(r.ms)}ms, not the heartbeat's`)
  await servedByA(tt, r.f)
})
