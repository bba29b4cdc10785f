import t from 'tap'
import type { Test } from 'tap'
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { FileArbiter, createArbiter, initialState, lockName } from '../../lib/arbiter/index.js'
import type { ArbiterState } from '../../lib/arbiter/index.js'
import { untilValue } from '../helpers/until.js'

const HOLD_LOCK = fileURLToPath(new URL('../fixtures/arbiter/hold-lock.mjs', import.meta.url))

function arbiter (
  t: Test, dir: string, opts: { owner?: string, lock?: 'socket' | 'pidfile' } = {}
): FileArbiter {
  const a = new FileArbiter({ dir, ...opts })
  t.teardown(() => a.close())
  return a
}

function next (epoch: number, primary: string | null, stale: string[] = []): ArbiterState {
  return { epoch, primary, stale, owner: 'ignored', incarnations: {} }
}

// Start the lock-holding fixture on dir and resolve with its first stdout line.
async function holdLock (t: Test, dir: string): Promise<{ child: ChildProcess, line: string }> {
  const child = spawn(process.execPath, [HOLD_LOCK, dir], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { child.kill('SIGKILL') })
  let out = ''
  child.stdout!.setEncoding('utf8')
  for await (const chunk of child.stdout!) {
    out += chunk
    if (out.includes('\n')) break
  }
  const [line = ''] = out.split('\n')
  return { child, line }
}

t.test('open on an empty dir gives epoch 0 and creates the dir', async (t) => {
  const dir = path.join(t.testdir(), 'state')
  const a = arbiter(t, dir)
  t.same(await a.open(), initialState())
  t.same(await a.open(), initialState(), 'open again while holding the lock re-reads')
  const st = await fs.stat(dir)
  t.ok(st.isDirectory())
  t.equal(st.mode & 0o007, 0, 'no access for others')
  t.equal((await fs.readFile(path.join(dir, 'lock.pid'), 'utf8')).trim(), String(process.pid))
})

t.test('concurrent open() on one instance does not lock itself out', async (t) => {
  const a = arbiter(t, t.testdir())
  const [x, y] = await Promise.all([a.open(), a.open()])
  t.same(x, initialState())
  t.same(y, initialState())
})

t.test('compareAndSet wins with the right epoch and loses with a stale one', async (t) => {
  const dir = t.testdir()
  const a = arbiter(t, dir, { owner: 'front-1' })
  await a.open()
  t.equal(await a.compareAndSet(0, next(1, 'a')), true)
  t.equal(await a.compareAndSet(0, next(1, 'b')), false, 'epoch 0 is gone')
  t.equal(await a.compareAndSet(1, next(2, 'b', ['a'])), true)
  t.equal(await a.compareAndSet(1, next(2, 'a')), false)
  const stored = JSON.parse(await fs.readFile(path.join(dir, 'state.json'), 'utf8'))
  t.match(stored, { epoch: 2, primary: 'b', stale: ['a'], owner: 'front-1', updated_at: String })
  t.ok(!Number.isNaN(Date.parse(stored.updated_at)))
})

t.test('a CAS sees a change made behind its back', async (t) => {
  const dir = t.testdir()
  const a = arbiter(t, dir)
  await a.open()
  const behind = { epoch: 5, primary: 'b', stale: [], owner: 'x' }
  await fs.writeFile(path.join(dir, 'state.json'), JSON.stringify(behind))
  t.equal(await a.compareAndSet(0, next(1, 'a')), false)
  t.equal(await a.compareAndSet(5, next(6, 'a')), true)
})

t.test('concurrent CAS calls in one process: exactly one wins', async (t) => {
  const a = arbiter(t, t.testdir())
  await a.open()
  const results = await Promise.all([
    a.compareAndSet(0, next(1, 'a')),
    a.compareAndSet(0, next(1, 'b')),
  ])
  t.same(results.sort(), [false, true])
})

t.test('compareAndSet refuses bad input and a closed arbiter', async (t) => {
  const dir = t.testdir()
  const a = arbiter(t, dir)
  await t.rejects(a.compareAndSet(0, next(1, 'a')), { code: 'ERR_FTPROXY_STATE' }, 'not open yet')
  await a.open()
  await t.rejects(a.compareAndSet(0, next(0, 'a')), { code: 'ERR_FTPROXY_STATE' },
    'epoch must move on')
  await t.rejects(a.compareAndSet(0, { ...next(1, 'a'), stale: [1] } as unknown as ArbiterState),
    { code: 'ERR_FTPROXY_STATE' }, 'malformed next')
  await t.rejects(a.compareAndSet(0, next(1.5, 'a')), { code: 'ERR_FTPROXY_STATE' })
  t.same(await a.open(), initialState(), 'nothing was written')
  await a.close()
  await t.rejects(a.compareAndSet(0, next(1, 'a')), { code: 'ERR_FTPROXY_STATE' }, 'closed')
})

t.test('state survives a new instance', async (t) => {
  const dir = t.testdir()
  const a = new FileArbiter({ dir, owner: 'front-1' })
  await a.open()
  const incarnations = { a: 'proc:12@345', b: 'redis:abc' }
  t.equal(await a.compareAndSet(0, { ...next(1, 'b', ['a']), incarnations }), true)
  await a.close()
  await a.close() // idempotent
  const b = arbiter(t, dir, { owner: 'front-2' })
  t.same(await b.open(),
    { epoch: 1, primary: 'b', stale: ['a'], owner: 'front-1', incarnations })
})

t.test('a state file from before incarnations reads as none known', async (t) => {
  const dir = t.testdir({
    'state.json': JSON.stringify({ epoch: 4, primary: 'a', stale: [], owner: 'x' }),
  })
  t.same(await arbiter(t, dir).open(),
    { epoch: 4, primary: 'a', stale: [], owner: 'x', incarnations: {} })
})

t.test('malformed incarnations are an error, never a reset', async (t) => {
  const dir = t.testdir({
    'state.json': JSON.stringify({
      epoch: 4, primary: 'a', stale: [], owner: 'x', incarnations: { a: 7 },
    }),
  })
  await t.rejects(arbiter(t, dir).open(), { code: 'ERR_FTPROXY_STATE' })
})

t.test('atomic writes leave no temp files, and a crash leftover is removed on open', async (t) => {
  const dir = t.testdir({ 'state.json.1234.deadbeef.tmp': '{"epoch": 9' })
  const a = arbiter(t, dir)
  await a.open()
  t.same((await fs.readdir(dir)).sort(), ['lock.pid'])
  for (let epoch = 1; epoch <= 5; epoch++) {
    t.equal(await a.compareAndSet(epoch - 1, next(epoch, 'a')), true)
  }
  t.same((await fs.readdir(dir)).sort(), ['lock.pid', 'state.json'])
  await a.close()
  t.same(await fs.readdir(dir), ['state.json'], 'close removes lock.pid')
})

t.test('a malformed state file is an error, never a reset', async (t) => {
  const cases: Record<string, string> = {
    garbage: '{"epoch": 3, "primary": ',
    empty: '',
    array: '[]',
    'negative epoch': '{"epoch": -1, "primary": null, "stale": [], "owner": ""}',
    'bad primary': '{"epoch": 1, "primary": 7, "stale": [], "owner": ""}',
    'bad stale': '{"epoch": 1, "primary": "a", "stale": "b", "owner": ""}',
    'missing owner': '{"epoch": 1, "primary": "a", "stale": []}'
  }
  for (const [name, text] of Object.entries(cases)) {
    t.test(name, async (t) => {
      const dir = t.testdir({ 'state.json': text })
      const file = path.join(dir, 'state.json')
      await t.rejects(arbiter(t, dir).open(), { code: 'ERR_FTPROXY_STATE', details: { file } })
      t.equal(await fs.readFile(file, 'utf8'), text, 'file untouched')
      // The failed open gave the lock back.
      await fs.writeFile(file, '{"epoch": 4, "primary": "a", "stale": [], "owner": "o"}')
      t.match(await arbiter(t, dir).open(), { epoch: 4 }, 'lock released')
    })
  }
})

t.test('an unreadable state file is an error', async (t) => {
  const dir = t.testdir({ 'state.json': {} }) // a directory where the file should be
  await t.rejects(arbiter(t, dir).open(), { code: 'ERR_FTPROXY_STATE' })
})

t.test('a second arbiter in the same process is locked out', async (t) => {
  const dir = t.testdir()
  const a = arbiter(t, dir)
  const b = arbiter(t, dir)
  await a.open()
  await t.rejects(b.open(), { code: 'ERR_FTPROXY_LOCKED', details: { dir, pid: process.pid } })
  await a.close()
  t.same(await b.open(), initialState(), 'free after close')
})

t.test('the lock works across processes and dies with its holder', async (t) => {
  const dir = t.testdir()
  const { child, line } = await holdLock(t, dir)
  t.equal(line, 'locked ' + lockName(dir).slice(1), 'the fixture computed the same lock name')
  const a = arbiter(t, dir)
  await t.rejects(a.open(), { code: 'ERR_FTPROXY_LOCKED', details: { dir, pid: child.pid } })
  child.kill('SIGKILL')
  // Retried while the lock is still held: the kernel frees it once the holder is gone.
  const opened = await untilValue(() => a.open().catch(() => null),
    'open once the holder is gone', 5000)
  t.same(opened, initialState(), 'open succeeds once the holder is SIGKILLed')
  t.equal((await fs.readFile(path.join(dir, 'lock.pid'), 'utf8')).trim(), String(process.pid))
})

t.test('another process cannot take the lock we hold', async (t) => {
  const dir = t.testdir()
  await arbiter(t, dir).open()
  const { child, line } = await holdLock(t, dir)
  t.equal(line, 'error EADDRINUSE')
  const [code] = await once(child, 'exit')
  t.equal(code, 2)
})

t.test('the lock follows the real path, not the spelling', async (t) => {
  const root = t.testdir({ state: {} })
  await fs.symlink(path.join(root, 'state'), path.join(root, 'link'))
  await arbiter(t, path.join(root, 'state')).open()
  await t.rejects(arbiter(t, path.join(root, 'link')).open(), { code: 'ERR_FTPROXY_LOCKED' })
})

t.test('pid file fallback', async (t) => {
  t.test('locks out a live holder', async (t) => {
    const dir = t.testdir()
    const a = arbiter(t, dir, { lock: 'pidfile' })
    await a.open()
    await t.rejects(arbiter(t, dir, { lock: 'pidfile' }).open(),
      { code: 'ERR_FTPROXY_LOCKED', details: { pid: process.pid } })
    await a.close()
    t.same(await fs.readdir(dir), [])
    t.same(await arbiter(t, dir, { lock: 'pidfile' }).open(), initialState())
  })

  t.test('takes over from a dead holder', async (t) => {
    const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' })
    await once(child, 'exit')
    const dir = t.testdir({ 'lock.pid': `${child.pid}\n` })
    t.same(await arbiter(t, dir, { lock: 'pidfile' }).open(), initialState())
    t.equal((await fs.readFile(path.join(dir, 'lock.pid'), 'utf8')).trim(), String(process.pid))
  })

  t.test('takes over an unreadable pid file', async (t) => {
    const dir = t.testdir({ 'lock.pid': 'garbage' })
    t.same(await arbiter(t, dir, { lock: 'pidfile' }).open(), initialState())
  })
})

t.test('createArbiter builds a file arbiter on the state dir', async (t) => {
  const dir = t.testdir()
  const a = createArbiter({ kind: 'file' }, dir)
  t.teardown(() => a.close())
  t.ok(a instanceof FileArbiter)
  t.equal((a as FileArbiter).dir, dir)
  t.same(await a.open(), initialState())
})
