// Durations and sizes as a config spells them ('250ms', '2s', '8MiB') ⇄ milliseconds and
// bytes. Exact: decimals are scaled as integers, never through floating point.

import { describe } from '../util/describe.js'

const DURATION_UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const
const SIZE_UNITS = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 } as const

type DurationUnit = keyof typeof DURATION_UNITS
type SizeUnit = keyof typeof SIZE_UNITS

/**
 * '250ms', '2s', '1.5s', '1m', '1h' → milliseconds. Units are required; the only bare number
 * accepted is 0. Throws TypeError / RangeError with a message fit for a user.
 */
export function parseDuration (s: string | number): number {
  if (s === 0 || s === '0') return 0
  if (typeof s === 'number') {
    throw new RangeError(
      `invalid duration ${s}: add a unit (ms, s, m, h), e.g. '${s}ms' or '${s}s'`)
  }
  if (typeof s !== 'string') {
    throw new TypeError(`expected a duration like '2s', got ${describe(s)}`)
  }
  const m = /^(\d+)(?:\.(\d+))?(ms|s|m|h)$/.exec(s)
  if (m == null) {
    if (/^\d+(\.\d+)?$/.test(s)) {
      throw new RangeError(`invalid duration '${s}': add a unit (ms, s, m, h), e.g. '${s}s'`)
    }
    throw new RangeError(`invalid duration '${s}': expected a number and a unit ` +
      "(ms, s, m, h), e.g. '250ms' or '2s'")
  }
  const [, int = '', frac = '', unit] = m
  const ms = scaleDecimal(int, frac, DURATION_UNITS[unit as DurationUnit])
  if (ms === undefined) {
    throw new RangeError(`invalid duration '${s}': not a whole number of milliseconds`)
  }
  return ms
}

/** Milliseconds → the largest unit that expresses them exactly: '500ms', '2s', '1m', '1h'. */
export function formatDuration (ms: number): string {
  if (!Number.isSafeInteger(ms) || ms <= 0) return `${ms}ms`
  for (const unit of ['h', 'm', 's'] as const) {
    if (ms % DURATION_UNITS[unit] === 0) return `${ms / DURATION_UNITS[unit]}${unit}`
  }
  return `${ms}ms`
}

/**
 * '512B', '64KiB', '8MiB', '1GiB' (1024-based) or a bare integer → bytes. KB/MB/GB are
 * refused rather than guessed at: 1000 or 1024 is exactly the ambiguity a config must not have.
 */
export function parseSize (s: string | number): number {
  if (typeof s === 'number') {
    if (Number.isSafeInteger(s) && s >= 0) return s
    throw new RangeError(`invalid size ${s}: expected a whole number of bytes or e.g. '64KiB'`)
  }
  if (typeof s !== 'string') throw new TypeError(`expected a size like '8MiB', got ${describe(s)}`)
  if (/^\d+$/.test(s)) return checkSafe(Number(s), s)
  const m = /^(\d+)(?:\.(\d+))?(B|KiB|MiB|GiB)$/.exec(s)
  if (m == null) {
    if (/^\d+(\.\d+)?\s*[kmgt]i?b?$/i.test(s)) {
      throw new RangeError(`invalid size '${s}': use B, KiB, MiB or GiB (1024-based), ` +
        "e.g. '64KiB' or '8MiB'")
    }
    throw new RangeError(`invalid size '${s}': expected a number and a unit ` +
      "(B, KiB, MiB, GiB), e.g. '8MiB'")
  }
  const [, int = '', frac = '', unit] = m
  const bytes = scaleDecimal(int, frac, SIZE_UNITS[unit as SizeUnit])
  if (bytes === undefined) throw new RangeError(`invalid size '${s}': not a whole number of bytes`)
  return bytes
}

/** Bytes → the largest unit that expresses them exactly: '8MiB', '64KiB', '100B'. */
export function formatSize (bytes: number): string {
  if (!Number.isSafeInteger(bytes) || bytes <= 0) return `${bytes}B`
  for (const unit of ['GiB', 'MiB', 'KiB'] as const) {
    if (bytes % SIZE_UNITS[unit] === 0) return `${bytes / SIZE_UNITS[unit]}${unit}`
  }
  return `${bytes}B`
}

// int.frac × unit, exactly (no 1.1 * 1000 = 1100.0000000000002); undefined when not whole.
function scaleDecimal (int: string, frac: string, unit: number): number | undefined {
  const scale = 10 ** frac.length
  const scaled = checkSafe(Number(int + frac) * unit, int + (frac ? '.' + frac : ''))
  return scaled % scale === 0 ? scaled / scale : undefined
}

function checkSafe (n: number, s: string): number {
  if (!Number.isSafeInteger(n)) throw new RangeError(`'${s}' is too large`)
  return n
}
