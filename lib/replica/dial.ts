// One TCP connection to a server, within a timeout: ftproxy's own connections to it (the
// control connection, the shared lane) are opened this way.

import net from 'node:net'
import type { HostPort } from '../address.js'
import { FtproxyError } from '../errors.js'
import { runningTimeout } from '../util/timer.js'

/** Resolves with the connected socket (errors after that are the caller's: 'close' tells). */
export function dial (address: HostPort, timeout: number, what: string): Promise<net.Socket> {
  const { host, port } = address
  const socket = net.connect({ host, port, noDelay: true })
  return new Promise((resolve, reject) => {
    const timer = runningTimeout(timeout, () => {
      const message = `${what} to ${host}:${port} timed out`
      socket.destroy(new FtproxyError('ERR_FTPROXY_CONNECT_TIMEOUT', message))
    })
    socket.once('error', (err) => {
      timer.clear()
      reject(err)
    })
    socket.once('connect', () => {
      timer.clear()
      socket.removeAllListeners('error')
      socket.on('error', () => {}) // 'close' follows, and the caller decides
      resolve(socket)
    })
  })
}
