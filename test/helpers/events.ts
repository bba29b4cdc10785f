// The one collector of JSON-line log events (a front's or agent's logger stream, a child's
// stdout). Chunks are buffered up to the newline, so a line split across chunks (or a UTF-8
// character split across Buffers) is parsed once, whole.

import { StringDecoder } from 'node:string_decoder'
import { Writable } from 'node:stream'
import { untilValue } from './until.js'

export interface Event { event: string, [k: string]: unknown }

export type EventPred = (e: Event) => boolean

export class EventLog {
  readonly events: Event[] = []
  private rest = ''
  private readonly decoder = new StringDecoder('utf8')

  /** Takes the next piece of output; complete lines become events. */
  feed (chunk: Buffer | string): void {
    const text = typeof chunk === 'string' ? chunk : this.decoder.write(chunk)
    const lines = (this.rest + text).split('\n')
    this.rest = lines.pop() ?? ''
    for (const line of lines) this.parse(line)
  }

  /** A stream whose writes are fed here (e.g. a logger's destination). */
  stream (): Writable {
    return new Writable({
      write: (chunk: Buffer | string, _encoding, done) => { this.feed(chunk); done() },
    })
  }

  find (event: string, pred: EventPred = () => true): Event | undefined {
    return this.events.find((e) => e.event === event && pred(e))
  }

  all (event: string): Event[] {
    return this.events.filter((e) => e.event === event)
  }

  /** The first `event` matching pred, logged already or waited for (up to ms). */
  next (event: string, pred: EventPred = () => true, ms = 15000): Promise<Event> {
    return untilValue(() => this.find(event, pred), `event ${event}`, ms)
  }

  // Lines that are not a JSON object with a string `event` (a stray print, a stack trace)
  // are not events.
  private parse (line: string): void {
    if (!line.startsWith('{')) return
    let e: unknown
    try {
      e = JSON.parse(line)
    } catch {
      return
    }
    if (isEvent(e)) this.events.push(e)
  }
}

function isEvent (v: unknown): v is Event {
  return typeof v === 'object' && v !== null && typeof (v as { event?: unknown }).event === 'string'
}
