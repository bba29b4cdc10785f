// Lint and format gate: neostandard (no semicolons, 2-space indent, single quotes, space before
// function parens) plus size limits (lines, files, functions). `npm run lint` fails on any
// problem, warnings included; `npm run lint:fix` applies the fixable ones.
import neostandard, { plugins } from 'neostandard'

// Counted as eslint counts them: blank lines and comments do not count.
const sizeOptions = { skipBlankLines: true, skipComments: true }

export default [
  {
    ignores: [
      'dist/',
      '.tap/',
      'coverage/',
      'node_modules/',
      'state/',
      'bench/results/',
    ],
  },
  ...neostandard({
    ts: true,
    noJsx: true,
    // The launcher is JavaScript without an extension: name it so eslint picks it up.
    files: ['bin/ftproxy'],
  }),
  {
    name: 'ftproxy/everywhere',
    plugins: { '@stylistic': plugins['@stylistic'] },
    rules: {
      // Strings, templates and comments count too: ignoreStrings would skip every line holding a
      // string, which is most long lines of code. A long message is wrapped or built in parts.
      '@stylistic/max-len': ['error', {
        code: 100,
        tabWidth: 2,
        ignoreUrls: true,
        ignoreRegExpLiterals: true,
      }],
      // `void promise` marks a deliberate fire-and-forget; `return void f()` is still refused.
      'no-void': ['error', { allowAsStatement: true }],
    },
  },
  {
    name: 'ftproxy/lib',
    files: ['lib/**/*.ts'],
    rules: {
      'max-lines': ['error', { max: 500, ...sizeOptions }],
    },
  },
  {
    // Not the *.test.ts files: a tap test callback is one scenario (set up, act, check) and
    // reads best whole; their helpers are ordinary code and are held to the limit.
    name: 'ftproxy/functions',
    files: ['lib/**/*.ts', 'bench/**/*.mjs', 'test/helpers/**/*.ts'],
    rules: {
      'max-lines-per-function': ['error', { max: 60, ...sizeOptions, IIFEs: true }],
    },
  },
]
