#!/usr/bin/env node
// The test runner's file list: `unit` (test/unit/**: no processes, servers or Python; `npm run test:unit`),
// `e2e` (test/e2e/**: deployments, child processes, Python, browsers) or `all` (`npm test`). Test files
// directly under test/ count as e2e until they are filed. Extra arguments go to `node --test`.
// Files run two at a time by default (node's default is one fewer than the cores: one on CI's two): most
// e2e files wait on processes, sockets and timers rather than compute. FLOTILLA_TEST_CONCURRENCY overrides.
// --test-force-exit: a file whose test timed out with a handle still open (a server, a browser) ends with its
// failure reported instead of holding the whole run until CI's limit.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const [which = 'all', ...rest] = process.argv.slice(2);
if (!['unit', 'e2e', 'all'].includes(which)) {
  process.stderr.write(`usage: run-tests.mjs unit|e2e|all [node --test options]\n`);
  process.exit(2);
}
const under = (dir) =>
  existsSync(dir)
    ? readdirSync(dir, { recursive: true })
        .filter((f) => f.endsWith('.test.ts'))
        .map((f) => join(dir, f))
        .sort()
    : [];
const unfiled = readdirSync('test')
  .filter((f) => f.endsWith('.test.ts'))
  .map((f) => join('test', f));
const files = [...(which !== 'e2e' ? under('test/unit') : []), ...(which !== 'unit' ? [...under('test/e2e'), ...unfiled] : [])];
const concurrency = process.env.FLOTILLA_TEST_CONCURRENCY ?? '2';
if (!/^[1-9]\d*$/.test(concurrency)) {
  process.stderr.write(`FLOTILLA_TEST_CONCURRENCY must be a positive integer, got ${JSON.stringify(concurrency)}\n`);
  process.exit(2);
}
const r = spawnSync(
  process.execPath,
  [
    '--conditions=flotilla-source',
    '--import',
    'tsx',
    '--test',
    '--test-reporter=spec',
    `--test-concurrency=${concurrency}`,
    '--test-force-exit',
    ...rest,
    ...files,
  ],
  {
    stdio: 'inherit',
  },
);
process.exit(r.status ?? 1);
