// Certificates for mutual-TLS tests, made with the openssl CLI (check `haveOpenssl` first):
// two unrelated CAs, and leaves signed by either.

import { execFileSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'

/** What a leaf is for: the agent (a server on 127.0.0.1) or a front (a client). */
export const AGENT_EXT = 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n'
export const FRONT_EXT = 'extendedKeyUsage=clientAuth\n'

export class Pki {
  constructor (readonly dir: string) {
    mkdirSync(dir, { recursive: true })
  }

  path (file: string): string {
    return path.join(this.dir, file)
  }

  /** A self-signed CA: `<name>.crt`, `<name>.key`. */
  ca (name: string): this {
    this.ossl('req', '-x509', ...this.newKey(name), '-days', '2', '-subj', `/CN=${name}`,
      '-out', this.path(`${name}.crt`))
    return this
  }

  /** A leaf signed by `ca`, with these X.509 extensions: `<name>.crt`, `<name>.key`. */
  leaf (name: string, ca: string, ext: string): this {
    this.ossl('req', ...this.newKey(name), '-subj', `/CN=${name}`,
      '-out', this.path(`${name}.csr`))
    writeFileSync(this.path(`${name}.ext`), ext)
    this.ossl('x509', '-req', '-in', this.path(`${name}.csr`),
      '-CA', this.path(`${ca}.crt`), '-CAkey', this.path(`${ca}.key`), '-CAcreateserial',
      '-days', '2', '-extfile', this.path(`${name}.ext`), '-out', this.path(`${name}.crt`))
    return this
  }

  /** `tls:` YAML (flow style) for the holder of `name`'s certificate, trusting `ca`. */
  tlsYaml (name: string, ca: string): string {
    const q = (f: string): string => JSON.stringify(this.path(f))
    return `{ cert: ${q(`${name}.crt`)}, key: ${q(`${name}.key`)}, ca: ${q(`${ca}.crt`)} }`
  }

  // EC keys: as good as RSA here, and made in milliseconds.
  private newKey (name: string): string[] {
    return ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', this.path(`${name}.key`)]
  }

  private ossl (...args: string[]): void {
    execFileSync('openssl', args, { stdio: 'ignore' })
  }
}
