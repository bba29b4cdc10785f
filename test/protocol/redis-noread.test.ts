// A client that never reads must not stop the order. With a serial protocol every replica
// runs one connection's turn at a time; a turn of a client whose output the front paused
// (backpressure) is still read to its end, and the client is not read from until it reads.
// Without that, one idle reader would hold every other client's turn forever.

import t from 'tap'
import net from 'node:net'
import { haveRedis, redisPair } from '../helpers/cluster.js'
import { RespConn, encode } from '../helpers/resp.js'
import { until } from '../helpers/until.js'

const skip = haveRedis() ? false : 'redis-server not installed'
const VALUE = 1 << 20
const GETS = 40

t.test('resp: a client that never reads does not stop the others', { skip }, async (tt) => {
  const cfg = 'protocol: resp\noutput_commit: ack\nlimits: { max_lag: 1MiB }'
  const { f } = await redisPair(tt, cfg)
  const setter = await RespConn.open(f.port)
  await setter.command('SET', 'big', Buffer.alloc(VALUE, 120))
  const lazy = net.connect({ port: f.port, host: '127.0.0.1' })
  lazy.pause()
  await new Promise((resolve) => lazy.once('connect', resolve))
  lazy.write(Buffer.concat(Array.from({ length: GETS }, () => encode(['GET', 'big']))))
  await until(() => f.front.status().output_held_bytes > VALUE, 'the lazy client\'s output held')
  const busy = await RespConn.open(f.port)
  for (let n = 1; n <= 200; n++) {
    const [v] = await busy.call([['INCR', 'shared']], 5000)
    if (v !== n) tt.fail(`INCR ${n} answered ${String(v)}`)
  }
  tt.pass('200 INCRs answered while the lazy client read nothing')
  // The lazy client reads at last: it gets every reply, intact.
  let got = 0
  lazy.on('data', (d: Buffer) => { got += d.length })
  lazy.resume()
  const each = `$${VALUE}\r\n`.length + VALUE + 2
  await until(() => got >= GETS * each, 'every GET reply reached the lazy client', 20000)
  tt.equal(got, GETS * each, 'exactly its replies')
  tt.same(f.all('divergence'), [], 'no divergence')
  tt.equal(f.role('b'), 'backup', 'the backup is still in service')
  lazy.destroy()
  setter.close()
  busy.close()
})
