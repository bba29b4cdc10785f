// A faulty relay for the log channel: listens on loopback port 0 and forwards to a target,
// and can cut every connection, delay bytes, or blackhole them (connections stay open, no
// byte passes either way, new connections hang) — the network failures the channel must
// survive or report.

import net from 'node:net'
import { listenLocal } from './ports.js'
import type { Test } from 'tap'

export class Relay {
  readonly server: net.Server
  port = 0
  private readonly pairs = new Set<[net.Socket, net.Socket]>()
  private blackholed = false
  /** Bytes caught by the blackhole: like TCP retransmission, they arrive after heal(). */
  private readonly waiting: Array<() => void> = []
  private delayMs = 0
  connections = 0

  constructor (private readonly target: number) {
    this.server = net.createServer((client) => this.onClient(client))
  }

  static async start (t: Test, target: number): Promise<Relay> {
    const r = new Relay(target)
    await listenLocal(r.server)
    r.port = (r.server.address() as net.AddressInfo).port
    t.teardown(() => r.close())
    return r
  }

  /** Reset every open connection (the next ones pass again). */
  cut (): void {
    for (const [a, b] of this.pairs) { a.destroy(); b.destroy() }
    this.pairs.clear()
  }

  /** Stop passing bytes, both ways, until heal(). */
  blackhole (): void { this.blackholed = true }

  heal (): void {
    this.blackholed = false
    for (const flush of this.waiting.splice(0)) flush()
    for (const [a, b] of this.pairs) { a.resume(); b.resume() }
  }

  /** Hold every chunk this long before passing it on. */
  delay (ms: number): void { this.delayMs = ms }

  close (): void {
    this.cut()
    this.server.close()
  }

  private onClient (client: net.Socket): void {
    this.connections++
    const upstream = net.connect(this.target, '127.0.0.1')
    const pair: [net.Socket, net.Socket] = [client, upstream]
    this.pairs.add(pair)
    const pipe = (from: net.Socket, to: net.Socket): void => {
      from.on('data', (d: Buffer) => {
        if (this.blackholed) {
          from.pause()
          this.waiting.push(() => to.write(d))
          return
        }
        if (this.delayMs > 0) setTimeout(() => to.write(d), this.delayMs)
        else if (!to.write(d)) { from.pause(); to.once('drain', () => from.resume()) }
      })
    }
    pipe(client, upstream)
    pipe(upstream, client)
    const end = (): void => { client.destroy(); upstream.destroy(); this.pairs.delete(pair) }
    for (const s of pair) { s.on('error', end); s.on('close', end) }
    if (this.blackholed) { client.pause(); upstream.pause() }
  }
}
