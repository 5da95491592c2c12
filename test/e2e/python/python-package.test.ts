/**
 * The Python package (issue 13 item 4): `pip install --no-build-isolation ./python` into a fresh
 * `--system-site-packages` venv installs `flotilla` offline (numpy and torch from Debian), and a
 * PyTorch job whose executor says `command: "{python}"` runs with that venv's interpreter when
 * FLOTILLA_PYTHON names it (no PYTHONPATH: the installed package is what it imports). `{python}`
 * resolves from FLOTILLA_PYTHON, then the site's setting, then python3 on PATH.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { writeSafetensors } from '../../../src/core/safetensors.ts';
import { f32 } from '../../../src/core/tensor.ts';
import { DEFAULT_PYTHON, resolvePython } from '../../../src/runtime/job.ts';
import { ClientConfigSchema } from '../../../src/provision/kit.ts';
import { simulate } from '../../../src/simulator/simulator.ts';
import { SYSTEM_PYTHON } from '../../helpers/python.ts';

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
let tmp = '';
before(() => {
  tmp = mkdtempSync(path.join(tmpdir(), 'flotilla-pypkg-'));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env, timeout: 180_000 });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.error?.message ?? ''}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

test('{python}: FLOTILLA_PYTHON, else the site setting, else python3 on PATH; the kit carries the setting', () => {
  assert.equal(resolvePython(undefined, {}), DEFAULT_PYTHON);
  assert.equal(DEFAULT_PYTHON, 'python3');
  assert.equal(resolvePython('/opt/conda/bin/python', {}), '/opt/conda/bin/python');
  assert.equal(resolvePython('/opt/conda/bin/python', { FLOTILLA_PYTHON: '/venv/bin/python' }), '/venv/bin/python');
  assert.equal(resolvePython('/opt/conda/bin/python', { FLOTILLA_PYTHON: '' }), '/opt/conda/bin/python');
  const kit = { kind: 'client', project: 'p', name: 'site-1', org: 'o', server: { host: 'h', port: 1 }, serverName: 'h' };
  assert.equal(ClientConfigSchema.parse({ ...kit, python: '/venv/bin/python' }).python, '/venv/bin/python');
  assert.equal(ClientConfigSchema.parse(kit).python, undefined);
  assert.throws(() => ClientConfigSchema.parse({ ...kit, python: '' }));
});

test('pip install --no-build-isolation ./python into a fresh venv, then a PyTorch job runs on that venv through {python}', async () => {
  // build from a copy: setuptools writes build/ and *.egg-info next to the sources
  const src = path.join(tmp, 'python');
  cpSync(path.join(repoRoot, 'python'), src, { recursive: true, filter: (p) => !/(__pycache__|\.egg-info|\/build)$/.test(p) });
  const venv = path.join(tmp, 'venv');
  run(SYSTEM_PYTHON, ['-m', 'venv', '--system-site-packages', venv]);
  const py = path.join(venv, 'bin', 'python');
  const env = { ...process.env, PIP_DISABLE_PIP_VERSION_CHECK: '1', PYTHONPATH: '' };
  run(py, ['-m', 'pip', 'install', '-q', '--no-build-isolation', '--no-index', src], env);
  const show = run(py, ['-m', 'pip', 'show', 'flotilla'], env);
  assert.match(show, /^Name: flotilla$/m);
  assert.match(show, /^Requires: numpy$/m);
  assert.match(
    run(py, ['-c', 'import flotilla, flotilla.safetensors; print(flotilla.__file__)'], { ...env, PYTHONPATH: '' }),
    new RegExp(`^${venv}/lib/python3[.0-9]*/site-packages/flotilla/__init__.py`),
  );

  const job = path.join(tmp, 'job');
  cpSync(path.join(repoRoot, 'test/fixtures/python-package'), job, { recursive: true });
  await writeSafetensors(
    path.join(job, 'initial_model.safetensors'),
    new Map([
      ['weight', f32([2, 4], [1, 2, 3, 4, 5, 6, 7, 8])],
      ['bias', f32([2], [0, 0])],
    ]),
  );
  writeFileSync(
    path.join(job, 'job.json'),
    JSON.stringify({
      name: 'venv-job',
      minClients: 1,
      model: { path: 'initial_model.safetensors' },
      workflows: [{ type: 'fedavg', rounds: 1 }],
      executor: { script: { command: '{python}', args: ['train.py'], env: { OMP_NUM_THREADS: '1' } } },
    }),
  );
  const saved = { python: process.env.FLOTILLA_PYTHON, path: process.env.PYTHONPATH };
  process.env.FLOTILLA_PYTHON = py;
  delete process.env.PYTHONPATH;
  try {
    const r = await simulate({ jobDir: job, clients: 1, threads: 0, workspace: path.join(tmp, 'ws') });
    assert.deepEqual(r.rounds[0]!.failures, {});
    assert.equal(typeof r.rounds[0]!.metrics.loss, 'number');
    const who = JSON.parse(readFileSync(path.join(r.workspace, 'site-1', 'who.json'), 'utf8')) as Record<string, string>;
    assert.equal(who.prefix, venv, 'the job ran on the venv');
    assert.ok(who.flotilla!.startsWith(path.join(venv, 'lib')), `flotilla imported from the venv: ${who.flotilla}`);
  } finally {
    if (saved.python === undefined) delete process.env.FLOTILLA_PYTHON;
    else process.env.FLOTILLA_PYTHON = saved.python;
    if (saved.path !== undefined) process.env.PYTHONPATH = saved.path;
  }
});
