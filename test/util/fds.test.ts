import t from 'tap'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import {
  fdBudget, fdLimit, isLocalResourceError, openFdCount, parseFdLimit,
} from '../../lib/util/fds.js'

// A real /proc/self/limits (Linux 6.x), trailing spaces and all.
const LIMITS = `Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max stack size            8388608              unlimited            bytes     
Max processes             96365                96365                processes 
Max open files            1024                 524288               files     
Max locked memory         8388608              8388608              bytes     
`

t.test('parseFdLimit: the soft "Max open files"', async (t) => {
  t.equal(parseFdLimit(LIMITS), 1024, 'the soft limit, not the hard one')
  t.equal(parseFdLimit(LIMITS.replace('1024     ', 'unlimited')), Infinity, 'unlimited')
  t.equal(parseFdLimit(LIMITS.replace(/^Max open files.*$/m, '')), null, 'no such line')
  t.equal(parseFdLimit(LIMITS.replace('1024 ', '-1   ')), null, 'not a count')
  t.equal(parseFdLimit(''), null)
})

t.test('fdBudget: (limit - reserve) / (1 + replicas), floored, never negative', async (t) => {
  t.equal(fdBudget(400, 2, 40), 120)
  t.equal(fdBudget(20000, 2, 100), 6633)
  t.equal(fdBudget(1024, 1, 0), 512)
  t.equal(fdBudget(1025, 1, 0), 512, 'floored')
  t.equal(fdBudget(50, 2, 100), 0, 'a reserve above the limit leaves none')
  t.equal(fdBudget(Infinity, 2, 100), Infinity, 'unlimited')
})

t.test('isLocalResourceError: the front\'s own shortage, not the peer\'s failure', async (t) => {
  const err = (code: string, syscall = 'connect'): Error =>
    Object.assign(new Error('x'), { code, syscall })
  for (const code of ['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM', 'EADDRNOTAVAIL']) {
    t.ok(isLocalResourceError(err(code)), code)
  }
  for (const code of ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH',
    'ENETUNREACH', 'ERR_FTPROXY_CONNECT_TIMEOUT']) {
    t.notOk(isLocalResourceError(err(code)), code)
  }
  t.notOk(isLocalResourceError(err('ENOTFOUND', 'getaddrinfo')),
    'a failed lookup while descriptors are plenty: the name\'s problem')
  t.notOk(isLocalResourceError(null))
  t.notOk(isLocalResourceError('EMFILE'), 'only error objects')
  t.notOk(isLocalResourceError(new Error('EMFILE')), 'the code counts, not the message')
})

t.test('openFdCount counts the descriptors this process opens and closes', {
  skip: fs.existsSync('/proc/self/fd') || fs.existsSync('/dev/fd') ? false : 'no fd directory',
}, async (t) => {
  // All synchronous: nothing else of this process runs in between.
  const before = openFdCount()
  const fds = Array.from({ length: 5 }, () => fs.openSync('/dev/null', 'r'))
  const during = openFdCount()
  for (const fd of fds) fs.closeSync(fd)
  t.equal(during, before + 5)
  t.equal(openFdCount(), before)
})

t.test('fdLimit is the soft limit the shell sees', {
  skip: process.platform !== 'linux' ? 'reads /proc/self/limits' : false,
}, async (t) => {
  const own = spawnSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).stdout.trim()
  t.equal(fdLimit(), own === 'unlimited' ? Infinity : Number(own), 'this process')
  // A child with a lower limit reads its own (the module as built is not needed here).
  const script = 'const fs = require("node:fs"); console.log(' +
    'fs.readFileSync("/proc/self/limits", "utf8"))'
  const res = spawnSync('sh', ['-c', 'ulimit -n 77 && exec "$0" -e "$1"', process.execPath,
    script], { encoding: 'utf8' })
  t.equal(parseFdLimit(res.stdout), 77, 'a child under ulimit -n 77')
})
