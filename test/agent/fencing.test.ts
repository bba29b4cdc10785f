// Fencing and mutual TLS on the log channel, spoken to a real agent process with the codec.

import t from 'tap'
import type { Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import tls from 'node:tls'
import { Client, TestFront, agentProc, demoServer } from '../helpers/cluster.js'
import { haveOpenssl } from '../helpers/openssl.js'
import { RawChannel } from '../helpers/raw-channel.js'
import { until } from '../helpers/until.js'

t.test('an agent refuses a front whose epoch is older than the newest it has seen, ' +
  'across restarts', async (tt) => {
  const server = await demoServer(tt)
  const agent = await agentProc(tt, server.port)
  const one = await RawChannel.open(tt, agent.port)
  one.hello(3, 'front-one')
  tt.match(await one.next('WELCOME'), { type: 'WELCOME', applied: 0 })
  const two = await RawChannel.open(tt, agent.port)
  two.hello(4, 'front-two')
  tt.match(await two.next('WELCOME'), { type: 'WELCOME' })
  tt.match(await one.next('ERROR'), { code: 'ERR_FTPROXY_FENCED' }, 'the older front is fenced off')
  await until(() => one.closed, 'the fenced channel to close')
  const again = await RawChannel.open(tt, agent.port)
  again.hello(3, 'front-one')
  tt.match(await again.next('ERROR'), { code: 'ERR_FTPROXY_FENCED' }, 'and may not come back')

  // The newest epoch survives a restart of the agent.
  agent.kill('SIGKILL')
  await until(() => agent.proc.exitCode !== null || agent.proc.signalCode !== null,
    'the agent to die')
  const restarted = await agentProc(tt, server.port, { stateDir: agent.stateDir })
  const late = await RawChannel.open(tt, restarted.port)
  late.hello(3, 'front-one')
  tt.match(await late.next('ERROR'), { code: 'ERR_FTPROXY_FENCED' })
  const ok = await RawChannel.open(tt, restarted.port)
  ok.hello(4, 'front-two')
  tt.match(await ok.next('WELCOME'), { type: 'WELCOME' })
  for (const r of [two, ok]) r.socket.destroy()
})

t.test('a front fenced by an agent logs it and stops driving that replica', async (tt) => {
  const [sa, sb] = [await demoServer(tt), await demoServer(tt)]
  const a = await agentProc(tt, sa.port)
  const b = await agentProc(tt, sb.port)
  // b has seen epoch 9 from some newer front.
  const newer = await RawChannel.open(tt, b.port)
  newer.hello(9, 'newer-front')
  await newer.next('WELCOME')
  newer.socket.destroy()
  const dir = tt.testdir({})
  const f = await new TestFront().start(tt,
    `listen: 127.0.0.1:0\nstate_dir: ${JSON.stringify(dir)}\nreplicas:\n` +
    `  - name: a\n    agent: 127.0.0.1:${a.port}\n  - name: b\n    agent: 127.0.0.1:${b.port}\n`)
  const ev = await f.waitEvent('fenced')
  tt.equal(ev.replica, 'b')
  await until(() => f.role('b') !== 'backup', 'b to leave service')
  await f.waitEvent('unprotected')
  const c = await Client.open(f.port)
  c.send('PING\n')
  tt.same(await c.waitLines(1), ['PONG'], 'served by a')
  c.close()
})

// A CA, an agent certificate for 127.0.0.1, a front (client) certificate, and a stranger's.
function makeCerts (dir: string): { dir: string, ca: string } {
  mkdirSync(dir, { recursive: true })
  const p = (n: string): string => path.join(dir, n)
  const ossl = (...args: string[]): void => { execFileSync('openssl', args, { stdio: 'ignore' }) }
  for (const ca of ['ca', 'rogue-ca']) {
    ossl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${ca}`,
      '-keyout', p(`${ca}.key`), '-out', p(`${ca}.crt`))
  }
  const leaf = (name: string, ca: string, ext: string): void => {
    ossl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`,
      '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`))
    writeFileSync(p(`${name}.ext`), ext)
    ossl('x509', '-req', '-in', p(`${name}.csr`), '-CA', p(`${ca}.crt`), '-CAkey', p(`${ca}.key`),
      '-CAcreateserial', '-days', '2', '-extfile', p(`${name}.ext`), '-out', p(`${name}.crt`))
  }
  leaf('agent', 'ca', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n')
  leaf('front', 'ca', 'extendedKeyUsage=clientAuth\n')
  leaf('stranger', 'rogue-ca', 'extendedKeyUsage=clientAuth\n')
  return { dir, ca: p('ca.crt') }
}

t.test('mutual TLS: the front and the agent verify each other; others are refused', {
  skip: !haveOpenssl && 'openssl not installed',
}, async (tt: Test) => {
  const base = tt.testdir({}) // one per test: a second call would wipe the first
  const certs = makeCerts(path.join(base, 'pki'))
  const p = (n: string): string => path.join(certs.dir, n)
  const tlsOf = (who: string): string =>
    `{ cert: ${p(`${who}.crt`)}, key: ${p(`${who}.key`)}, ca: ${certs.ca} }`
  const tlsYaml = (who: string): string => `tls: ${tlsOf(who)}\n`
  const [sa, sb] = [await demoServer(tt), await demoServer(tt)]
  const a = await agentProc(tt, sa.port, { extraYaml: tlsYaml('agent') })
  const b = await agentProc(tt, sb.port, { extraYaml: tlsYaml('agent') })
  const dir = path.join(base, 'front')
  const replica = (name: string, port: number): string =>
    `  - name: ${name}\n    agent: 127.0.0.1:${port}\n    tls: ${tlsOf('front')}\n`
  const f = await new TestFront().start(tt,
    `listen: 127.0.0.1:0\nstate_dir: ${JSON.stringify(dir)}\n` +
    `replicas:\n${replica('a', a.port)}${replica('b', b.port)}`)
  await f.waitEvent('channel_up', (e) => e.replica === 'a')
  await f.waitEvent('channel_up', (e) => e.replica === 'b')
  const c = await Client.open(f.port)
  c.send('SET k v\nGET k\n')
  tt.same(await c.waitLines(2), ['OK', 'v'], 'served over mutual TLS')
  c.close()

  const attempt = (opts: tls.ConnectionOptions): Promise<string> => new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port: a.port, ca: readFileSync(certs.ca), ...opts })
    s.once('secureConnect', () => {
      // TLS 1.3 reports a refused client certificate after the handshake: wait for it.
      s.once('data', () => resolve('data'))
      s.once('close', () => resolve('closed'))
    })
    s.once('error', (err: NodeJS.ErrnoException) => resolve(`error: ${err.code ?? err.message}`))
  })
  tt.not(await attempt({}), 'data', 'no client certificate: refused')
  const stranger = { cert: readFileSync(p('stranger.crt')), key: readFileSync(p('stranger.key')) }
  tt.not(await attempt(stranger), 'data', 'a certificate from another CA: refused')
  const plain = await RawChannel.open(tt, a.port)
  plain.hello(1, 'plain')
  await until(() => plain.closed, 'a plaintext channel to be dropped')
  tt.equal(plain.frames.length, 0, 'no frame answered in plaintext')
})
