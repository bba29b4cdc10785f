import t from 'tap'
import { Queue } from '../../lib/util/queue.js'

t.test('first in, first out; peek, last, at and pop agree with the contents', async (t) => {
  const q = new Queue<number>()
  t.equal(q.length, 0)
  t.equal(q.shift(), undefined)
  t.equal(q.pop(), undefined)
  t.equal(q.peek(), undefined)
  t.equal(q.last(), undefined)
  for (let i = 1; i <= 5; i++) q.push(i)
  t.equal(q.shift(), 1)
  t.equal(q.peek(), 2)
  t.equal(q.last(), 5)
  t.equal(q.at(0), 2)
  t.equal(q.at(3), 5)
  t.equal(q.at(4), undefined, 'past the end')
  t.equal(q.at(-1), undefined, 'before the head')
  t.equal(q.pop(), 5)
  t.same([...q], [2, 3, 4])
  q.clear()
  t.equal(q.length, 0)
  t.same([...q], [])
})

t.test('a long-lived queue keeps its order and compacts what it consumed', async (t) => {
  const q = new Queue<number>()
  let next = 0
  let expect = 0
  for (let round = 0; round < 200; round++) {
    for (let i = 0; i < 7; i++) q.push(next++)
    for (let i = 0; i < 5; i++) t.equal(q.shift(), expect++)
  }
  t.equal(q.length, next - expect)
  t.same([...q], Array.from({ length: next - expect }, (_, i) => expect + i))
  // The array behind it never holds more than twice what is left (plus the threshold).
  const inner = (q as unknown as { items: unknown[] }).items
  t.ok(inner.length <= 2 * q.length + 64, `array ${inner.length} for ${q.length} held`)
})
