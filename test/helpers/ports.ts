// Loopback ports for tests: servers on port 0, and ports handed out by the kernel for
// servers whose port must be known before they start.

import net from 'node:net'
import { listen } from '../../lib/util/listen.js'

/** Listen on 127.0.0.1, port 0; resolves with the port. */
export async function listenLocal (server: net.Server): Promise<number> {
  await listen(server, { host: '127.0.0.1', port: 0 })
  return (server.address() as net.AddressInfo).port
}

/** n distinct ports the kernel just handed out (all held at once, so no two are the same). */
export async function freePorts (n: number): Promise<number[]> {
  const servers = Array.from({ length: n }, () => net.createServer())
  const ports = await Promise.all(servers.map(listenLocal))
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))))
  return ports
}

/** One port the kernel just handed out. */
export async function freePort (): Promise<number> {
  const [port] = await freePorts(1)
  if (port === undefined) throw new Error('no port')
  return port
}
