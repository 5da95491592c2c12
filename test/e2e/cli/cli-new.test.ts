// `flotilla new`: every template, written into a folder outside the repository, simulates as written.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { TEMPLATES } from '../../../src/cli/new.ts';
import { readSafetensors } from '../../../src/core/safetensors.ts';

const repo = fileURLToPath(new URL('../../..', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'flotilla-new-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const cli = (...args: string[]) => spawnSync(process.execPath, [join(repo, 'bin/flotilla.js'), ...args], { cwd: tmp, encoding: 'utf8' });
const ok = (...args: string[]): string =>
  execFileSync(process.execPath, [join(repo, 'bin/flotilla.js'), ...args], {
    cwd: tmp,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });

test('flotilla new --list names every template', () => {
  const out = ok('new', '--list');
  assert.ok(TEMPLATES.length >= 2);
  for (const t of TEMPLATES) assert.match(out, new RegExp(`^  ${t.name} +${t.description.slice(0, 20).replace(/[()]/g, '.')}`, 'm'));
});

test('flotilla new refuses an unknown template, a non-empty folder and a missing --template, saying what to do', () => {
  const unknown = cli('new', 'x', '--template', 'nope');
  assert.equal(unknown.status, 1);
  assert.match(unknown.stderr, /no template "nope"; choose one of tfjs, pytorch/);
  mkdirSync(join(tmp, 'full'));
  writeFileSync(join(tmp, 'full', 'keep.txt'), 'mine');
  const full = cli('new', 'full', '--template', 'tfjs');
  assert.equal(full.status, 1);
  assert.match(full.stderr, /full exists and is not empty/);
  assert.equal(readFileSync(join(tmp, 'full', 'keep.txt'), 'utf8'), 'mine');
  const none = cli('new', 'y');
  assert.equal(none.status, 1);
  assert.match(none.stderr, /choose a template: flotilla new y --template <name>/);
  assert.ok(!existsSync(join(tmp, 'x')) && !existsSync(join(tmp, 'y')));
});

for (const t of TEMPLATES) {
  test(`template ${t.name}: flotilla new, then flotilla simulate as written`, { timeout: 600_000 }, async () => {
    const dir = `my-${t.name}-job`;
    const made = ok('new', dir, '--template', t.name);
    assert.match(made, new RegExp(`Created job "${dir}"`));
    const pkg = JSON.parse(readFileSync(join(tmp, dir, 'package.json'), 'utf8')) as { type: string; dependencies: Record<string, string> };
    assert.equal(pkg.type, 'module');
    assert.ok(!('flotilla' in pkg.dependencies), 'the running installation provides flotilla');
    assert.match(readFileSync(join(tmp, dir, 'job.yaml'), 'utf8'), new RegExp(`^name: ${dir}$`, 'm'));
    const minClients = Number(/--clients (\d+)/.exec(made)![1]);
    const out = ok('simulate', dir, '--clients', String(minClients), '--workspace', `ws-${t.name}`);
    assert.match(out, /Done in/);
    const model = (await readSafetensors(join(tmp, `ws-${t.name}`, 'server', 'global_model.safetensors'))).tensors;
    assert.ok(model.size > 0);
    for (const [name, x] of model) assert.ok(Array.from(x.data as Float32Array).every(Number.isFinite), `${name} is finite`);
    const summary = JSON.parse(readFileSync(join(tmp, `ws-${t.name}`, 'server', 'summary.json'), 'utf8')) as {
      rounds: { failures: Record<string, unknown> }[];
    };
    assert.ok(summary.rounds.length > 0);
    assert.deepEqual(
      summary.rounds.flatMap((r) => Object.keys(r.failures)),
      [],
      'no site failed a round',
    );
  });
}
