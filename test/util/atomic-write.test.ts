import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { writeFileAtomic, writeFileAtomicSync } from '../../lib/util/atomic-write.js'

const forms = {
  async: writeFileAtomic,
  sync: async (file: string, data: string) => writeFileAtomicSync(file, data),
}

for (const [name, write] of Object.entries(forms)) {
  t.test(`${name}: replaces the file whole, mode 0640, no temp file left`, async (t) => {
    const dir = t.testdir({ 'state.json': 'old\n' })
    const file = path.join(dir, 'state.json')
    await write(file, 'new\n')
    t.equal(fs.readFileSync(file, 'utf8'), 'new\n')
    t.equal(fs.statSync(file).mode & 0o777, 0o640)
    t.same(fs.readdirSync(dir), ['state.json'])
  })

  t.test(`${name}: a failed step leaves the old file and no temp file`, async (t) => {
    // The target is a directory: the rename fails after the temp file was written.
    const dir = t.testdir({ 'state.json': { inside: 'x' } })
    const file = path.join(dir, 'state.json')
    await t.rejects(write(file, 'new\n'), { code: /^E/ })
    t.same(fs.readdirSync(dir), ['state.json'], 'the temp file is gone')
    t.same(fs.readdirSync(file), ['inside'], 'the target is untouched')
  })
}
