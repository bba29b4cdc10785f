// Byte helpers of the reply aligner (replies.ts): lists of Buffer views, cut and compared
// without copying.

// Views of bytes [from, to) of the concatenation of `list` (nothing copied).
export function slice (list: readonly Buffer[], from: number, to: number): Buffer[] {
  const out: Buffer[] = []
  let at = 0
  for (const b of list) {
    const end = at + b.length
    if (end > from && at < to) {
      const a = Math.max(from, at) - at
      const z = Math.min(to, end) - at
      out.push(a === 0 && z === b.length ? b : b.subarray(a, z))
    }
    at = end
    if (at >= to) break
  }
  return out
}

// How many leading bytes of `a` equal those of `b` (at most b's length).
export function agree (a: readonly Buffer[], b: readonly Buffer[]): number {
  let n = 0
  let i = 0
  let ia = 0
  for (const y of b) {
    let j = 0
    while (j < y.length) {
      const x = a[i]
      if (!x) return n
      const len = Math.min(x.length - ia, y.length - j)
      const xs = x.subarray(ia, ia + len)
      const ys = y.subarray(j, j + len)
      if (!xs.equals(ys)) {
        let k = 0
        while (xs[k] === ys[k]) k++
        return n + k
      }
      n += len
      j += len
      ia += len
      if (ia === x.length) {
        i++
        ia = 0
      }
    }
  }
  return n
}

// Whether the concatenation of `list` is exactly `want`.
export function equalsAll (list: readonly Buffer[], want: Buffer): boolean {
  let size = 0
  for (const b of list) size += b.length
  return size === want.length && agree(list, [want]) === size
}
