// Clients that make a server close their connection, recording what they see as a direct
// client of the server would: the bytes before the close, how it ended (FIN or reset), and
// how much more they could write after it. Run against a server directly and through a front,
// the two records must match.

import net from 'node:net'

/** What one client saw of a connection the server closed. */
export interface Seen {
  /** Bytes received, as latin1 text. */
  text: string
  /** How it ended: 'fin', 'reset', another errno code, or 'timeout'. */
  end: string
}

/** What a client that keeps writing after the server's reply saw. */
export interface Dribble extends Seen {
  /** Bytes it wrote after the first reply byte arrived, until a write failed. */
  bytesAfter: number
  /** Milliseconds from the first reply byte to the failure. */
  msAfter: number
  /** The code of the failure (null: none within the limits). */
  code: string | null
}

function codeOf (err: Error): string {
  return (err as NodeJS.ErrnoException).code ?? 'error'
}

const NONE = Buffer.alloc(0)

/** The end an error shows (none: a FIN), as `Seen.end` names it. */
function kindOf (err: Error | null | undefined): string {
  if (!err) return 'fin'
  return codeOf(err) === 'ECONNRESET' ? 'reset' : codeOf(err)
}

/** Connect, write `data` in one go, and record until the connection is closed. */
export function sendAndWatch (port: number, data: Buffer, ms = 10000): Promise<Seen> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    const chunks: Buffer[] = []
    let end: string | null = null
    const timer = setTimeout(() => {
      end ??= 'timeout'
      socket.destroy()
    }, ms)
    socket.on('connect', () => socket.write(data))
    socket.on('data', (d: Buffer) => chunks.push(d))
    // Node reports a reset that follows the last bytes read as an end too. The kernel knows:
    // an empty write succeeds after a FIN, and fails with ECONNRESET after a reset.
    socket.on('end', () => socket.write(NONE, (err) => {
      end ??= kindOf(err)
      socket.destroy()
    }))
    socket.on('error', (err) => { end ??= kindOf(err) })
    socket.on('close', () => {
      clearTimeout(timer)
      resolve({ text: Buffer.concat(chunks).toString('latin1'), end: end ?? 'closed' })
    })
  })
}

export interface DribbleOptions {
  /** Stop once this much was written after the reply … */
  maxBytes: number
  /** … or after this long. */
  ms: number
  /** Read slowly (paused and resumed every 3 ms), so that the servers' output backs up. */
  slowRead?: boolean
}

/**
 * Connect (half-open allowed, as a raw client), write `first`, then one `piece` a
 * millisecond until a write fails, or the limits are reached.
 */
export function dribble (port: number, first: Buffer, piece: Buffer, opts: DribbleOptions):
Promise<Dribble> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    const chunks: Buffer[] = []
    const st = { end: null as string | null, code: null as string | null, written: 0 }
    let replyAt: { bytes: number, ms: number } | null = null
    const timers: NodeJS.Timeout[] = []
    const stop = (): void => { socket.destroy() }
    const write = (): void => {
      if (socket.destroyed) return
      if (replyAt && st.written - replyAt.bytes >= opts.maxBytes) return stop()
      socket.write(piece, (err) => {
        if (!err) st.written += piece.length
        else st.code ??= codeOf(err)
        if (err) stop()
      })
    }
    const toggle = (): void => { if (socket.isPaused()) socket.resume(); else socket.pause() }
    socket.on('connect', () => {
      socket.write(first)
      // A write that fails destroys the socket, and with it whatever the kernel holds unread:
      // writing after the poll phase (setImmediate), any reply that came with the reset is
      // read first. From a timer, a client descheduled while both arrived would lose it.
      timers.push(setInterval(() => setImmediate(write), 1), setTimeout(stop, opts.ms))
      if (opts.slowRead) timers.push(setInterval(toggle, 3))
    })
    socket.on('data', (d: Buffer) => {
      replyAt ??= { bytes: st.written, ms: performance.now() }
      chunks.push(d)
    })
    socket.on('end', () => { st.end ??= 'fin' })
    socket.on('error', (err) => {
      st.end ??= kindOf(err)
      st.code ??= codeOf(err)
    })
    socket.on('close', () => {
      for (const timer of timers) clearTimeout(timer)
      const at = replyAt ?? { bytes: st.written, ms: performance.now() }
      resolve({
        text: Buffer.concat(chunks).toString('latin1'),
        end: st.end ?? 'closed',
        bytesAfter: st.written - at.bytes,
        msAfter: performance.now() - at.ms,
        code: st.code,
      })
    })
  })
}
