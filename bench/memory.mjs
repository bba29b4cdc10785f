// @ts-check
// Memory under clients that never read: N clients send as fast as the front takes input and
// never read a byte of output, while one well-behaved client does round trips. Two echo
// servers (they honour backpressure) behind one front, output_commit ack. Reports the
// front's RSS against its budget, the good client's latency, and any role change.
//
//   npm run build && node bench/memory.mjs [--clients 128] [--seconds 5]

import net from 'node:net'
import { parseArgs } from 'node:util'
import {
  freePort, installCleanup, killAll, memKiB, percentile, sleep, startEcho, startFront,
} from './lib.mjs'

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '128' },
    seconds: { type: 'string', default: '5' },
  },
})
const CLIENTS = Number(values.clients)
const SECONDS = Number(values.seconds)

/**
 * A client that writes until its own buffer holds 16 MiB and never reads.
 * @param {number} port
 */
function greedy (port) {
  const s = net.connect({ port, host: '127.0.0.1' })
  s.on('error', () => {})
  s.pause()
  const chunk = Buffer.alloc(64 * 1024, 'g')
  const fill = () => { while (s.writableLength < 16 * 1024 * 1024 && s.write(chunk)); }
  s.on('connect', fill)
  s.on('drain', fill)
  return s
}

/**
 * Sequential 64-byte round trips for `ms`; the latencies in µs.
 * @param {number} port
 * @param {number} ms
 * @returns {Promise<number[]>}
 */
async function roundTrips (port, ms) {
  const s = net.connect({ port, host: '127.0.0.1' })
  await new Promise((resolve) => s.once('connect', resolve))
  const msg = Buffer.alloc(64, 'p')
  const out = []
  const end = Date.now() + ms
  while (Date.now() < end) {
    const t0 = process.hrtime.bigint()
    let got = 0
    await new Promise((resolve) => {
      const onData = (/** @type {Buffer} */ d) => {
        got += d.length
        if (got >= msg.length) { s.off('data', onData); resolve(null) }
      }
      s.on('data', onData)
      s.write(msg)
    })
    out.push(Number(process.hrtime.bigint() - t0) / 1000)
  }
  s.destroy()
  return out
}

async function main () {
  installCleanup()
  const [a, b] = [await startEcho(), await startEcho()]
  const admin = await freePort()
  const front = await startFront({
    replicas: [
      { name: 'a', address: `127.0.0.1:${a.port}` },
      { name: 'b', address: `127.0.0.1:${b.port}` },
    ],
    extraYaml: `admin: { listen: 127.0.0.1:${admin} }\n`,
  })
  /** @typedef {{ buffered_bytes: number, lag_cap_bytes: number, output_held_bytes: number,
   *   log_bytes: number }} Status */
  const status = async () => /** @type {Status} */ (
    await (await fetch(`http://127.0.0.1:${admin}/status`)).json())
  const base = memKiB(front.pid).rss
  const greedyClients = Array.from({ length: CLIENTS }, () => greedy(front.port))
  await sleep(1000) // let them fill every buffer the front allows
  const lat = (await roundTrips(front.port, SECONDS * 1000)).sort((x, y) => x - y)
  const { rss, hwm } = memKiB(front.pid)
  const st = await status()
  const roles = front.events.filter((e) => e.event === 'replica_role' || e.event === 'replica_down')
  for (const s of greedyClients) s.destroy()
  console.log(JSON.stringify({
    clients: CLIENTS,
    max_memory: '256MiB (default)',
    rss_base_mib: +(base / 1024).toFixed(1),
    rss_mib: +(rss / 1024).toFixed(1),
    peak_rss_mib: +(hwm / 1024).toFixed(1),
    per_client_mib: +((hwm - base) / 1024 / CLIENTS).toFixed(2),
    buffered_mib: +(st.buffered_bytes / 1048576).toFixed(1),
    lag_cap_kib: Math.round(st.lag_cap_bytes / 1024),
    held_mib: +(st.output_held_bytes / 1048576).toFixed(1),
    log_mib: +(st.log_bytes / 1048576).toFixed(1),
    good_client_round_trips: lat.length,
    good_client_p50_ms: +(percentile(lat, 50) / 1000).toFixed(2),
    good_client_p99_ms: +(percentile(lat, 99) / 1000).toFixed(2),
    role_changes: roles.map((e) => `${e.event} ${e.replica} ${e.reason ?? ''}`),
  }))
  await killAll()
}

main().catch(async (err) => {
  console.error(err)
  await killAll()
  process.exit(1)
})
