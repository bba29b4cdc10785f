// A value as a user reads it in an error message: 'a map', 'a list', 'nothing', '2s' (quoted)
// or its type and value.

export function describe (v: unknown): string {
  if (v === null) return 'an empty value'
  if (v === undefined) return 'nothing'
  if (Array.isArray(v)) return 'a list'
  if (typeof v === 'object') return 'a map'
  if (typeof v === 'string') return `'${v}'`
  return `${typeof v} ${String(v)}`
}
