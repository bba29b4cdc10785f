// Shared-key load on the demo server's line protocol: clients INCR a few keys that many of
// them share, with a few requests in flight each, until stopped. Every reply of a key, from
// whichever client, must then be exactly 1..N once each: nothing lost, nothing run twice.

import type { Test } from 'tap'
import { Client } from './cluster.js'
import { until } from './until.js'

export class SharedIncr {
  readonly clients: Client[] = []
  private readonly sent: number[] = []
  private stopped = false
  private timer?: NodeJS.Timeout

  private constructor (readonly keys: number, private readonly inflight: number) {}

  /** `n` clients on `port`, client i on key `s<i % keys>`. */
  static async open (port: number, n: number, keys = 3, inflight = 4): Promise<SharedIncr> {
    const load = new SharedIncr(keys, inflight)
    for (let i = 0; i < n; i++) {
      load.clients.push(await Client.open(port))
      load.sent.push(0)
    }
    return load
  }

  key (i: number): string {
    return `s${i % this.keys}`
  }

  /** Keep `inflight` INCRs unanswered on every client until stop(). */
  start (): void {
    this.timer = setInterval(() => this.top(), 2)
  }

  private top (): void {
    if (this.stopped) return
    this.clients.forEach((c, i) => {
      const sent = this.sent[i] ?? 0
      const n = this.inflight - (sent - c.lines.length)
      if (n <= 0 || c.closed || c.ended) return
      c.send(`INCR ${this.key(i)}\n`.repeat(n))
      this.sent[i] = sent + n
    })
  }

  /** Replies so far, over every client. */
  get replies (): number {
    return this.clients.reduce((n, c) => n + c.lines.length, 0)
  }

  /** Stop sending and wait for every reply. */
  async stop (ms = 15000): Promise<void> {
    this.stopped = true
    clearInterval(this.timer)
    await until(() => this.clients.every((c, i) =>
      c.closed || c.ended || c.lines.length >= (this.sent[i] ?? 0)), 'every INCR answered', ms)
  }

  /**
   * Every key's replies are 1..N once each, and (unless `ended`: the front closed them)
   * every client kept its connection and got a reply for every INCR.
   */
  check (t: Test, ended = false): Map<string, number> {
    const byKey = new Map<string, number[]>()
    this.clients.forEach((c, i) => {
      if (!ended) {
        t.equal(c.closed, false, `client ${i} kept its connection`)
        t.equal(c.lines.length, this.sent[i], `client ${i}: a reply for every INCR`)
      }
      const k = this.key(i)
      byKey.set(k, [...(byKey.get(k) ?? []), ...c.lines.map(Number)])
    })
    const totals = new Map<string, number>()
    for (const [k, got] of byKey) {
      got.sort((x, y) => x - y)
      const bad = got.findIndex((v, j) => v !== j + 1)
      t.equal(bad, -1, `${k}: replies are 1..${got.length}, no gap, no duplicate`)
      totals.set(k, got.length)
    }
    return totals
  }

  close (): void {
    this.stopped = true
    clearInterval(this.timer)
    for (const c of this.clients) c.close()
  }
}
