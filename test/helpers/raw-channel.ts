// A raw log-channel client: writes frames (with the codec) or bytes, collects the frames that
// come back, notes when the other side closed it. Destroyed at teardown.

import net from 'node:net'
import type { Test } from 'tap'
import {
  FrameDecoder, PROTOCOL_VERSION, encode, type Frame, type HelloFrame,
} from '../../lib/channel/codec.js'
import { until } from './until.js'

export class RawChannel {
  readonly frames: Frame[] = []
  closed = false
  private readonly decoder = new FrameDecoder()

  private constructor (readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => { this.frames.push(...this.decoder.push(d)) })
    socket.on('close', () => { this.closed = true })
    socket.on('error', () => {})
  }

  /** Connected to 127.0.0.1:port. */
  static async open (t: Test, port: number): Promise<RawChannel> {
    const s = net.connect(port, '127.0.0.1')
    t.teardown(() => { s.destroy() })
    await new Promise((resolve, reject) => { s.once('connect', resolve); s.once('error', reject) })
    return new RawChannel(s)
  }

  send (f: Frame): void { for (const p of encode(f)) this.socket.write(p) }

  hello (epoch: number, frontId: string, resume: HelloFrame['resume'] = []): void {
    const version = PROTOCOL_VERSION
    this.send({ type: 'HELLO', epoch, version, frontId, window: 1 << 20, protocol: 'raw', resume })
  }

  /** The first frame of that type received; rejects if the channel closes without one. */
  async next (type: Frame['type']): Promise<Frame> {
    await until(() => this.frames.some((f) => f.type === type) || this.closed, `a ${type} frame`)
    const f = this.frames.find((f) => f.type === type)
    if (!f) throw new Error(`channel closed without ${type}`)
    return f
  }
}
