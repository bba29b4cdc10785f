// Network addresses: host:port parsed, formatted (IPv6 in brackets) and classified. Modules
// that need only an address import from here, not from the config parser.

import { BlockList, isIPv4, isIPv6 } from 'node:net'
import { describe } from './util/describe.js'

export interface HostPort {
  host: string
  port: number
}

/** '127.0.0.1:7000', 'localhost:7000', '[::1]:7000' → {host, port}. Port 0 is allowed (tests). */
export function parseHostPort (s: string): HostPort {
  if (typeof s !== 'string') throw new TypeError(`expected host:port, got ${describe(s)}`)
  const bracketed = /^\[([^\]]*)\]:([^:]*)$/.exec(s)
  const [host, port] = bracketed != null
    ? [checkIPv6(s, bracketed[1] ?? ''), bracketed[2] ?? '']
    : splitHostPort(s)
  if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) {
    throw new RangeError(`invalid address '${s}': the port must be an integer from 0 to 65535`)
  }
  return { host, port: Number(port) }
}

function checkIPv6 (s: string, host: string): string {
  if (!isIPv6(host)) {
    throw new RangeError(`invalid address '${s}': '${host}' is not an IPv6 address`)
  }
  return host
}

// host:port without brackets: the host is a name or an IPv4 address.
function splitHostPort (s: string): [host: string, port: string] {
  const colon = s.lastIndexOf(':')
  if (colon < 0) {
    throw new RangeError(`invalid address '${s}': expected host:port, e.g. 127.0.0.1:7000`)
  }
  const host = s.slice(0, colon)
  if (host.includes(':')) {
    throw new RangeError(
      `invalid address '${s}': put an IPv6 address in brackets, e.g. [::1]:7000`)
  }
  if (host === '') {
    throw new RangeError(`invalid address '${s}': the host is missing, e.g. 127.0.0.1${s}`)
  }
  if (!/^[A-Za-z0-9._-]+$/.test(host)) {
    throw new RangeError(`invalid address '${s}': '${host}' is not a host name or IP address`)
  }
  // getaddrinfo would take '256.1.1.1' as a name and '127.1' or '010.0.0.1' as inet_aton
  // numbers: digits and dots must be a plain dotted quad.
  if (/^[0-9.]+$/.test(host) && !isIPv4(host)) {
    throw new RangeError(`invalid address '${s}': '${host}' is not a valid IPv4 address ` +
      '(four numbers from 0 to 255, no leading zeros)')
  }
  return [host, s.slice(colon + 1)]
}

/** host:port, with an IPv6 host in brackets: '127.0.0.1:7000', '[::1]:7000'. */
export function formatHostPort (hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`
}

const LOOPBACK = new BlockList()
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4')
LOOPBACK.addAddress('::1', 'ipv6')

/**
 * True for 127.0.0.0/8, ::1 (any spelling, and IPv4-mapped 127.x) and 'localhost': a listener
 * there is reachable from this machine only. Other names are not resolved: false.
 */
export function isLoopback (host: string): boolean {
  if (host.toLowerCase() === 'localhost') return true
  if (isIPv4(host)) return LOOPBACK.check(host, 'ipv4')
  if (isIPv6(host)) return LOOPBACK.check(host, 'ipv6')
  return false
}

/**
 * Would a connect to `target` reach a listener bound at `listen`? Decided without DNS, so the
 * same answer on every machine: equal ports, and either the same address (IPv6 in any
 * spelling, IPv4-mapped as IPv4), or 'localhost' against 127.0.0.1 or ::1 (what it resolves
 * to), or a loopback target against a wildcard listen (0.0.0.0, ::). A connect to 0.0.0.0 or
 * :: goes to this machine, so such a target counts as loopback. Other names are compared as
 * written (case aside): 'db.example.com' is not resolved.
 */
export function reaches (target: HostPort, listen: HostPort): boolean {
  if (target.port !== listen.port) return false
  const to = addressesOf(target.host, true)
  const at = addressesOf(listen.host, false)
  if (to.some((a) => at.includes(a))) return true
  const loopbackTarget = to.some(isLoopback)
  const wildcard = canonical(listen.host)
  if (wildcard === '::') return loopbackTarget
  if (wildcard === '0.0.0.0') return loopbackTarget && to.some((a) => isIPv4(a))
  return false
}

// The addresses a host stands for, canonical. As a connect target, a wildcard means loopback.
function addressesOf (host: string, asTarget: boolean): string[] {
  const h = canonical(host)
  if (h === 'localhost') return ['127.0.0.1', '::1']
  if (asTarget && h === '0.0.0.0') return ['127.0.0.1']
  if (asTarget && h === '::') return ['::1']
  return [h]
}

// One spelling per address: IPv6 compressed and lower case, IPv4-mapped IPv6 as IPv4, names
// in lower case.
function canonical (host: string): string {
  if (!isIPv6(host)) return host.toLowerCase()
  const h = new URL(`http://[${host}]/`).hostname.slice(1, -1)
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(h)
  if (mapped == null) return h
  const n = (parseInt(mapped[1] ?? '0', 16) << 16 | parseInt(mapped[2] ?? '0', 16)) >>> 0
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.')
}
