// @ts-check
// A tiny deterministic echo server: the "legacy server" for raw byte throughput and latency.
// Every byte read is written back on the same connection, in order, with backpressure
// (pipe pauses the read side while the write side is full). A half-close from the client
// ends the reply stream once everything was echoed (allowHalfOpen), so an ftproxy front sees
// the same end on every replica.
//
//   node bench/echo.mjs [--port N] [--host H]     (port 0: any; prints the bound port)
//
// Prints one JSON line {"event":"listening","host":H,"port":N} on stdout once bound.

import net from 'node:net'
import { parseArgs } from 'node:util'

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
  },
})

const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
  socket.on('error', () => socket.destroy())
  socket.pipe(socket)
})

server.on('error', (err) => {
  process.stderr.write(`echo: ${err.message}\n`)
  process.exitCode = 1
})

server.listen({ port: Number(values.port), host: values.host, backlog: 4096 }, () => {
  const a = /** @type {net.AddressInfo} */ (server.address())
  process.stdout.write(JSON.stringify({ event: 'listening', host: a.address, port: a.port }) + '\n')
})

for (const sig of /** @type {NodeJS.Signals[]} */ (['SIGTERM', 'SIGINT'])) {
  process.once(sig, () => process.exit(0))
}
