// The files a config involves: the config file itself, read with a size cap before any
// parsing, and the PEM files a tls section names, each read (capped too) and parsed the way
// the TLS handshake will, so that a file that cannot work is refused at load time, not on the
// first connect.

import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto'
import { open, stat } from 'node:fs/promises'
import { resolve } from 'node:path'
import { ConfigError, type ConfigIssue } from '../errors.js'
import { MAX_CONFIG_BYTES, MAX_PEM_BYTES } from './defaults.js'
import { formatPath, type Path } from './issues.js'
import { formatSize } from './units.js'
import type { TlsConfig } from './types.js'

/** A file's bytes, or undefined when it holds more than `max` (never reads past max + 1). */
async function readCapped (file: string, max: number): Promise<Buffer | undefined> {
  const fh = await open(file, 'r')
  try {
    const chunks: Buffer[] = []
    let size = 0
    for (;;) {
      const chunk = Buffer.alloc(Math.min(64 * 1024, max + 1 - size))
      const { bytesRead } = await fh.read(chunk, 0, chunk.length, null)
      if (bytesRead === 0) return Buffer.concat(chunks, size)
      chunks.push(chunk.subarray(0, bytesRead))
      size += bytesRead
      if (size > max) return undefined
    }
  } finally {
    await fh.close()
  }
}

/**
 * The config file's absolute path and text. Capped at MAX_CONFIG_BYTES: a config is a few
 * KiB, and parsing tens of MiB of YAML takes GiBs of memory. Not only regular files (a pipe
 * from `<(…)` works); the cap holds for them too.
 */
export async function readConfigText (path: string): Promise<{ file: string, text: string }> {
  const file = resolve(path)
  let bytes: Buffer | undefined
  try {
    bytes = await readCapped(file, MAX_CONFIG_BYTES)
  } catch (err) {
    throw new ConfigError(file, [{ path: '', message: `cannot read: ${(err as Error).message}` }])
  }
  if (bytes === undefined) {
    throw new ConfigError(file, [{
      path: '',
      message: `the file is larger than ${formatSize(MAX_CONFIG_BYTES)}: not a config file?`,
    }])
  }
  return { file, text: bytes.toString('utf8') }
}

/** A tls section of a config and its key path (['replicas', 1, 'tls'] or ['tls']). */
export interface TlsSection { at: Path, tls: TlsConfig }

type Kind = keyof TlsConfig
type Place = (path: Path) => Omit<ConfigIssue, 'message'>

/**
 * Every file each tls section names must be a readable regular file of PEM that parses: cert
 * and ca as X.509 certificates, key as an unencrypted private key that matches cert. Throws
 * one ConfigError listing every problem at its key path (replicas[1].tls.key …), in file order.
 */
export async function checkTlsFiles (
  file: string,
  lineOf: (path: Path) => number | undefined,
  sections: TlsSection[]
): Promise<void> {
  const place: Place = (path) => ({ path: formatPath(path), line: lineOf(path) })
  const issues = (await Promise.all(sections.map((s) => checkSection(s, place)))).flat()
  issues.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity))
  if (issues.length > 0) throw new ConfigError(file, issues)
}

async function checkSection ({ at, tls }: TlsSection, place: Place): Promise<ConfigIssue[]> {
  const problems: Partial<Record<Kind, string>> = {}
  const settle = async <T>(kind: Kind, parse: (path: string) => Promise<T>) => {
    try {
      return await parse(tls[kind])
    } catch (err) {
      problems[kind] = (err as Error).message
      return undefined
    }
  }
  const [cert, key] = await Promise.all([
    settle('cert', (p) => parseCerts(p, 'a certificate')),
    settle('key', parseKey),
    settle('ca', (p) => parseCerts(p, 'CA certificates')),
  ])
  // The handshake would fail on every connect with a key that is not the certificate's.
  if (cert !== undefined && key !== undefined && !cert.checkPrivateKey(key)) {
    problems.key = `the key does not match the certificate in '${tls.cert}'`
  }
  return (['cert', 'key', 'ca'] as const).flatMap((kind) => {
    const message = problems[kind]
    return message !== undefined ? [{ ...place([...at, kind]), message }] : []
  })
}

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----/g

/** Every certificate of a PEM file parses; the first one (a chain's leaf) is returned. */
async function parseCerts (path: string, what: string): Promise<X509Certificate> {
  const blocks = (await readPem(path)).toString('latin1').match(CERT_BLOCK) ?? []
  const [first] = blocks.map((block, i) => {
    try {
      return new X509Certificate(block)
    } catch (err) {
      throw new Error(`certificate ${i + 1} in '${path}' does not parse: ${(err as Error).message}`)
    }
  })
  if (first === undefined) {
    throw new Error(`expected ${what} in PEM (-----BEGIN CERTIFICATE-----), found none`)
  }
  return first
}

async function parseKey (path: string): Promise<KeyObject> {
  const pem = await readPem(path)
  try {
    return createPrivateKey(pem)
  } catch (err) {
    throw new Error(`not a usable private key (unencrypted PEM): ${(err as Error).message}`)
  }
}

async function readPem (path: string): Promise<Buffer> {
  let pem: Buffer | undefined
  try {
    if (!(await stat(path)).isFile()) throw new Error(`'${path}' is not a file`)
    pem = await readCapped(path, MAX_PEM_BYTES)
  } catch (err) {
    throw new Error(`cannot read: ${(err as Error).message}`)
  }
  if (pem === undefined) {
    throw new Error(`cannot read: '${path}' is larger than ${formatSize(MAX_PEM_BYTES)}`)
  }
  return pem
}
