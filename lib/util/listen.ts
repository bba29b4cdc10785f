// The one promise-wrapped listen: resolves once the server is bound, rejects with the bind
// error (EADDRINUSE, EACCES …) and leaves no listener of its own behind either way.

import type net from 'node:net'

export function listen (server: net.Server, options: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err)
    server.once('error', onError)
    server.listen(options, () => {
      server.off('error', onError)
      resolve()
    })
  })
}
