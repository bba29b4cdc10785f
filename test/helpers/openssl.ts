// Whether the openssl CLI is here, for tests that make their own certificates.

import { execFileSync } from 'node:child_process'

export const haveOpenssl = ((): boolean => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
})()
