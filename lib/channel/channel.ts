// One log-channel connection: the one place a channel socket is wired. Bytes in go through
// the FrameDecoder; frames out are encoded and written without copying payloads. A decoding
// error closes the channel (the codec never buffers without bound).

import { EventEmitter } from 'node:events'
import type net from 'node:net'
import { FrameDecoder, encode, type Frame, type FrameDecoderOptions } from './codec.js'

export interface ChannelEvents {
  frame: [frame: Frame]
  /** A decoding error or a socket error; the channel is closed after it. */
  error: [err: Error]
  close: []
}

export class Channel extends EventEmitter<ChannelEvents> {
  private readonly decoder: FrameDecoder
  closed = false

  constructor (readonly socket: net.Socket, opts: FrameDecoderOptions = {}) {
    super()
    this.decoder = new FrameDecoder(opts)
    socket.setNoDelay(true)
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('error', (err) => this.emit('error', err))
    socket.on('close', () => {
      this.closed = true
      this.emit('close')
    })
    socket.on('error', () => { this.closed = true })
  }

  /**
   * Write one frame; false when the socket's buffer is full. A frame that cannot be
   * encoded (a bug, or a list grown past the frame limit) fails the channel, not the process.
   */
  send (frame: Frame): boolean {
    if (this.closed || this.socket.destroyed) return false
    let pieces: Buffer[]
    try {
      pieces = encode(frame)
    } catch (err) {
      this.emit('error', err as Error)
      this.destroy()
      return false
    }
    let ok = true
    for (const p of pieces) ok = this.socket.write(p)
    return ok
  }

  /** Send a last frame (an ERROR), then close; nothing more is read from it. */
  fail (frame: Frame): void {
    if (this.closed) return
    if (frame.type === 'ERROR' && Buffer.byteLength(frame.message) > 1000) {
      frame = { ...frame, message: frame.message.slice(0, 900) + '…' }
    }
    this.send(frame)
    this.closed = true
    this.socket.end()
    setTimeout(() => this.socket.destroy(), 1000).unref()
  }

  /** Close at once; no frame is emitted after this. */
  destroy (): void {
    this.closed = true
    this.socket.destroy()
  }

  private onData (chunk: Buffer): void {
    // Failed or destroyed: what still arrives is neither decoded nor held.
    if (this.closed) return
    let frames: Frame[]
    try {
      frames = this.decoder.push(chunk)
    } catch (err) {
      this.emit('error', err as Error)
      this.socket.destroy()
      return
    }
    for (const f of frames) {
      if (this.closed) return
      this.emit('frame', f)
    }
  }
}
