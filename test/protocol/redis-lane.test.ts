// The shared lane (lib/replica/lane.ts): requests that do not depend on their connection go
// pipelined on one connection per replica. What must hold: a connection that leaves the lane
// mid-pipeline keeps its order against everyone else's; a client that half-closes after lane
// requests gets every reply before the end; the servers see the lane as one client.

import t from 'tap'
import net from 'node:net'
import { TestFront, frontYaml, haveRedis, redisPair, redisServer } from '../helpers/cluster.js'
import { converge } from '../helpers/redis-load.js'
import { RespConn, encode } from '../helpers/resp.js'
import { until } from '../helpers/until.js'

const skip = haveRedis() ? false : 'redis-server not installed'
const RESP = 'protocol: resp\noutput_commit: ack'

t.test('leaving the lane mid-pipeline keeps the order', { skip }, async (tt) => {
  const { a, b, f } = await redisPair(tt, RESP)
  const others = await Promise.all(Array.from({ length: 4 }, () => RespConn.open(f.port)))
  const load = { running: true }
  const loaders = others.map(async (c) => {
    while (load.running) await c.call([['INCR', 'n'], ['INCR', 'n']], 5000)
  })
  for (let round = 0; round < 20; round++) {
    const c = await RespConn.open(f.port)
    // Lane requests, then one that is not shareable (the connection leaves), then more.
    const batch: string[][] = []
    for (let i = 0; i < 50; i++) batch.push(['INCR', 'n'])
    batch.push(['CLIENT', 'SETNAME', `c${round}`])
    for (let i = 0; i < 50; i++) batch.push(['INCR', 'n'])
    const replies = await c.call(batch, 10000)
    const numbers = replies.filter((r): r is number => typeof r === 'number')
    tt.equal(numbers.length, 100, `round ${round}: every INCR answered`)
    if (numbers.some((n, i) => i > 0 && n <= (numbers[i - 1] ?? 0))) tt.fail('values rise')
    c.close()
  }
  load.running = false
  await Promise.all(loaders)
  tt.same(f.all('divergence'), [], 'no divergence')
  tt.same(await converge(a.port, b.port), [], 'both copies identical')
  for (const c of others) c.close()
})

t.test('a half-close after lane requests: every reply, then the end', { skip }, async (tt) => {
  const { f } = await redisPair(tt, RESP)
  const s = net.connect({ port: f.port, host: '127.0.0.1', allowHalfOpen: true })
  await new Promise((resolve) => s.once('connect', resolve))
  let got = ''
  let ended = false
  s.on('data', (d: Buffer) => { got += d.toString() })
  s.on('end', () => { ended = true })
  s.end(Buffer.concat(Array.from({ length: 200 }, () => encode(['INCR', 'h']))))
  await until(() => ended, 'the server ended the connection')
  const values = got.split('\r\n').filter((l) => l.startsWith(':')).map((l) => Number(l.slice(1)))
  tt.same(values, Array.from({ length: 200 }, (_, i) => i + 1), 'all 200 replies, in order')
  s.destroy()
})

t.test('the lane is one connection on each server, opened with the control one', { skip },
  async (tt) => {
    const { a, b, f } = await redisPair(tt, RESP)
    const clients = await Promise.all(Array.from({ length: 10 }, () => RespConn.open(f.port)))
    for (const c of clients) await c.call([['INCR', 'x']])
    const counts = await Promise.all([a.port, b.port].map(async (port) => {
      const c = await RespConn.open(port)
      const [list] = await c.call([['CLIENT', 'LIST']])
      c.close()
      // Clients whose last command was INCR: only the lane ran them.
      return String(list).split('\n').filter((l) => / cmd=incr /.test(l)).length
    }))
    tt.same(counts, [1, 1], 'one connection ran every INCR, on each copy')
    for (const c of clients) c.close()
  })

t.test('a lane the server closes with requests owed takes its replica out of service',
  { skip }, async (tt) => {
    const { a, b, f } = await redisPair(tt, RESP)
    const clients = await Promise.all(Array.from({ length: 10 }, () => RespConn.open(f.port)))
    const load = { running: true }
    const loaders = clients.map(async (c) => {
      while (load.running) await c.call([['INCR', 'n'], ['INCR', 'n']], 5000)
    })
    const direct = await RespConn.open(b.port)
    await until(async () => /cmd=incr/.test(String((await direct.call([['CLIENT', 'LIST']]))[0])),
      'the lane ran an INCR on b')
    const [list] = await direct.call([['CLIENT', 'LIST']])
    const lane = /id=(\d+) [^\n]* cmd=incr /.exec(String(list))?.[1]
    tt.ok(lane, 'found the lane on b')
    await direct.call([['CLIENT', 'KILL', 'ID', String(lane)]])
    await new Promise((resolve) => setTimeout(resolve, 300)) // load goes on meanwhile
    load.running = false
    await Promise.all(loaders)
    // The backup either left service (it lost requests it owed) or was idle when its lane
    // closed and reopened it: in both cases a backup still in service holds what a holds.
    const role = f.role('b')
    tt.comment(`b is ${role}`)
    if (role === 'backup') tt.same(await converge(a.port, b.port), [], 'copies identical')
    else tt.ok(f.find('replica_down'), 'b left service, and said so')
    for (const c of clients) c.close()
    direct.close()
  })

t.test('servers whose settings rule the lane out: every connection takes turns', { skip },
  async (tt) => {
    const idle = ['--timeout', '1']
    const a = await redisServer(tt, idle)
    const b = await redisServer(tt, idle)
    const replicas = [{ name: 'a', port: a.port }, { name: 'b', port: b.port }]
    const f = await new TestFront().start(tt, frontYaml(tt, replicas, RESP))
    const ev = await f.waitEvent('lane_disabled')
    tt.match(ev, { reason: /timeout is 1/ })
    const c = await RespConn.open(f.port)
    // A client busy for longer than the servers' idle timeout keeps its connection.
    for (let i = 1; i <= 25; i++) {
      const [v] = await c.call([['INCR', 'k']], 3000)
      if (v !== i) tt.fail(`INCR ${i} answered ${String(v)}`)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    tt.notOk(c.closed || c.ended, 'still connected after 2.5 s of one INCR per 100 ms')
    tt.same(f.all('divergence'), [], 'no divergence')
    c.close()
  })

t.test('a backup that stops reading: what waits for it in the front stays bounded', { skip },
  async (tt) => {
    const cfg = `${RESP}\nlimits: { max_lag: 1MiB }\n` +
      'timeouts: { stall: 30s, connect: 1s, linger: 1s }'
    const a = await redisServer(tt)
    const b = await redisServer(tt)
    const replicas = [{ name: 'a', port: a.port }, { name: 'b', port: b.port }]
    const yaml = frontYaml(tt, replicas, cfg).replace(/timeouts: \{[^}]*\}\n/, '')
    const f = await new TestFront().start(tt, yaml)
    const clients = await Promise.all(Array.from({ length: 10 }, () => RespConn.open(f.port)))
    b.proc.kill('SIGSTOP')
    const value = Buffer.alloc(64 * 1024, 97)
    for (const [i, c] of clients.entries()) {
      for (let n = 0; n < 200; n++) c.send([['SET', `k${i}`, value]])
    }
    // The front takes what its caps allow, then stops reading the clients: most of what
    // they sent is still in their own sockets. Watch for a while that it stays so.
    const sent = 10 * 200 * (value.length + 40)
    const unread = (): number => clients.reduce((n, c) => n + c.socket.writableLength, 0)
    const deadline = Date.now() + 2000
    let least = Infinity
    while (Date.now() < deadline) {
      least = Math.min(least, unread())
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const taken = sent - least
    const mib = (n: number): string => (n / 2 ** 20).toFixed(1)
    tt.comment(`the front took ${mib(taken)} MiB of ${mib(sent)}`)
    tt.ok(taken < 64 * 2 ** 20, 'bounded: far less than what the clients sent')
    b.proc.kill('SIGCONT')
    await until(() => clients.every((c) => c.received >= 200), 'every SET answered', 20000)

    tt.same(await converge(a.port, b.port), [], 'both copies identical')
    for (const c of clients) c.close()
  })
