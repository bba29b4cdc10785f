// The test helpers' event collector and poll (test/helpers/events.ts, until.ts): a JSON line
// split across chunks is parsed once and whole; a wait ends on a truthy value or times out.

import t from 'tap'
import { EventLog } from './helpers/events.js'
import { until, untilValue } from './helpers/until.js'

t.test('a JSON line split across two chunks is one event', async (t) => {
  const log = new EventLog()
  const line = JSON.stringify({ event: 'listening', address: '127.0.0.1:7000', note: 'ïü' }) + '\n'
  const bytes = Buffer.from(line)
  const cut = bytes.indexOf('ï') + 1 // inside the two-byte character
  log.feed(bytes.subarray(0, cut))
  t.same(log.events, [], 'nothing before the newline')
  log.feed(bytes.subarray(cut))
  t.same(log.events, [{ event: 'listening', address: '127.0.0.1:7000', note: 'ïü' }],
    'parsed once, whole')
})

t.test('strings, several lines a chunk, and lines that are not events', async (t) => {
  const log = new EventLog()
  log.feed('{"event":"a","n":1}\nnot json\n{"event":')
  log.feed('"b"}\n{"no_event":1}\n[1]\n{broken\n\n{"event":"a","n":2}')
  t.same(log.events, [{ event: 'a', n: 1 }, { event: 'b' }], 'the last line waits for its newline')
  log.feed('\n')
  t.same(log.all('a'), [{ event: 'a', n: 1 }, { event: 'a', n: 2 }])
  t.same(log.find('a', (e) => e.n === 2), { event: 'a', n: 2 })
  t.equal(log.find('c'), undefined)
})

t.test('stream() feeds the log', async (t) => {
  const log = new EventLog()
  const s = log.stream()
  s.write('{"event":"x",')
  s.write(Buffer.from('"v":1}\n'))
  await new Promise<void>((resolve) => s.end(resolve))
  t.same(log.events, [{ event: 'x', v: 1 }])
})

t.test('next() waits for a matching event', async (t) => {
  const log = new EventLog()
  log.feed('{"event":"e","n":1}\n')
  t.same(await log.next('e'), { event: 'e', n: 1 }, 'one logged already')
  setTimeout(() => log.feed('{"event":"e","n":2}\n'), 30)
  t.same(await log.next('e', (e) => e.n === 2, 5000), { event: 'e', n: 2 }, 'one yet to come')
  await t.rejects(log.next('never', undefined, 50), { message: 'timed out: event never' })
})

t.test('until and untilValue', async (t) => {
  let n = 0
  await until(() => ++n >= 3, 'three polls')
  t.equal(n, 3)
  t.equal(await untilValue(async () => (++n >= 5 ? 'v' : ''), 'an async value'), 'v')
  await t.rejects(until(() => false, 'nothing', 30), { message: 'timed out: nothing' })
  await t.rejects(until(() => { throw new Error('boom') }, 'a throw'), { message: 'boom' },
    'a throw ends the wait')
})
