/**
 * README's quick start on a fresh clone: the repository cloned into an empty temporary
 * folder (nothing beside it), then the quick start's first line run there verbatim
 * (`npm ci && npx flotilla simulate examples/hello-fedavg --clients 3`: install and a real
 * federated job). Its second line (`npm ci && npm test`) is the whole suite, this file
 * included, so it is not nested here: it is what CI runs on a fresh clone (.ci/run), which
 * the last test checks.
 *
 * npm ci takes packages from npm's cache when it holds them (CI's own npm ci filled it);
 * better-sqlite3 still compiles its addon, so this takes minutes on 2 cores.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('..', import.meta.url));
const readme = readFileSync(join(repo, 'README.md'), 'utf8');
const block = /## Quick start\s+```(?:bash|sh)\n([\s\S]*?)```/.exec(readme);
const lines = block ? block[1]!.trim().split('\n') : [];
const tmp = mkdtempSync(join(tmpdir(), 'flotilla-quickstart-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('README quick start: two lines, one runs a federated job, one the tests', () => {
  assert.equal(lines.length, 2, `README's quick start block: ${block?.[1]}`);
  assert.match(lines[0]!, /^npm ci && npx flotilla simulate examples\/\S+ --clients \d+$/);
  assert.equal(lines[1], 'npm ci && npm test');
});

test('line 1 on a fresh clone in an empty folder: installs, then a federated job runs', { timeout: 900_000 }, () => {
  const clone = join(tmp, 'flotilla');
  execFileSync('git', ['clone', '--quiet', '--no-hardlinks', repo, clone], { stdio: 'ignore' });
  assert.deepEqual(readdirSync(tmp), ['flotilla'], 'nothing beside the clone');
  const t0 = performance.now();
  const out = execFileSync('bash', ['-c', `set -e; ${lines[0]!}`], {
    cwd: clone,
    encoding: 'utf8',
    env: { ...process.env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  console.log(`quick start line 1 on a fresh clone: ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  assert.match(out, /Cross-site evaluation/);
  assert.match(out, /Done in [\d.]+ s/);
  const name = /Simulating job "([^"]+)"/.exec(out)![1]!;
  const server = join(clone, 'workspace', name, 'server');
  assert.ok(existsSync(join(server, 'global_model.safetensors')));
  const summary = JSON.parse(readFileSync(join(server, 'summary.json'), 'utf8')) as { rounds: { failures: object }[] };
  assert.ok(summary.rounds.length >= 1 && summary.rounds.every((r) => Object.keys(r.failures).length === 0));
});

test('line 2 is what CI runs on a fresh clone: .ci/run installs with npm ci, then runs npm test', () => {
  const ci = readFileSync(join(repo, '.ci/run'), 'utf8').split('\n').filter((l) => /^\s*npm /.test(l)).map((l) => l.trim().split(' ').slice(0, 2).join(' '));
  assert.deepEqual(ci, ['npm ci', 'npm test']);
});
