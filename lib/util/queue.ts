// A FIFO queue over an array with a moving head: O(1) push and shift without Array#shift's
// copying. The consumed prefix is dropped once it is both large and most of the array, so
// memory stays proportional to what is held.

const COMPACT_AT = 64

export class Queue<T> implements Iterable<T> {
  private items: T[] = []
  private head = 0

  /** Items held. */
  get length (): number {
    return this.items.length - this.head
  }

  push (item: T): void {
    this.items.push(item)
  }

  /** The oldest item, without removing it. */
  peek (): T | undefined {
    return this.items[this.head]
  }

  /** The newest item, without removing it. */
  last (): T | undefined {
    return this.length > 0 ? this.items[this.items.length - 1] : undefined
  }

  /** The i-th held item, 0 being the oldest. */
  at (i: number): T | undefined {
    return i >= 0 && i < this.length ? this.items[this.head + i] : undefined
  }

  /** Remove and return the oldest item. */
  shift (): T | undefined {
    if (this.head >= this.items.length) return undefined
    const item = this.items[this.head] as T
    this.items[this.head++] = undefined as T // let it be collected
    if (this.head === this.items.length) {
      this.items = []
      this.head = 0
    } else if (this.head >= COMPACT_AT && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return item
  }

  /** Remove and return the newest item. */
  pop (): T | undefined {
    if (this.length === 0) return undefined
    return this.items.pop()
  }

  clear (): void {
    this.items = []
    this.head = 0
  }

  * [Symbol.iterator] (): Iterator<T> {
    for (let i = this.head; i < this.items.length; i++) yield this.items[i] as T
  }
}
