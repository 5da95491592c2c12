/**
 * Fail fast (issue 20): `flotilla validate` resolves every module, script and interpreter a job
 * names and reports the first problem with the file and the field; the simulator fails within
 * seconds, with the cause, when a site's trainer cannot be created (no 120 s wait for a site
 * that will never connect).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { writeSafetensors } from '../../../src/core/safetensors.ts';
import { f32 } from '../../../src/core/tensor.ts';
import { checkJob } from '../../../src/runtime/job-check.ts';
import { simulate } from '../../../src/simulator/simulator.ts';
import { PYTHON } from '../../helpers/python.ts';

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const helloModel = path.join(repoRoot, 'examples/hello-fedavg/model.ts');
let tmp = '';
before(() => {
  tmp = mkdtempSync(path.join(tmpdir(), 'flotilla-validate-'));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

let n = 0;
/** A job folder with `config` as job.json and the given files. */
function job(config: Record<string, unknown>, files: Record<string, string> = {}): string {
  const dir = path.join(tmp, `job-${n++}`);
  mkdirSync(dir);
  writeFileSync(path.join(dir, 'package.json'), '{ "type": "module" }\n'); // job code is ES modules
  writeFileSync(path.join(dir, 'model.ts'), `export { initialModel } from ${JSON.stringify(helloModel)};\n`);
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text);
  writeFileSync(
    path.join(dir, 'job.json'),
    JSON.stringify({ name: 'v', minClients: 1, model: { module: 'model.ts' }, workflows: [{ type: 'fedavg', rounds: 1 }], ...config }),
  );
  return dir;
}
const script = (
  command: string,
  args: string[],
  env: Record<string, string> = { PYTHONPATH: '{flotillaRoot}/python' },
  params?: 'file',
) => ({ executor: { script: { command, args, env }, ...(params && { params }) } });

async function rejects(dir: string, field: RegExp, what: RegExp): Promise<void> {
  await assert.rejects(checkJob(dir), (e: Error) => {
    assert.match(e.message, new RegExp(`${path.join(dir, 'job.json').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `), 'names the file');
    assert.match(e.message, field, 'names the field');
    assert.match(e.message, what);
    return true;
  });
}

describe('flotilla validate resolves what a job names', () => {
  it('a missing trainer module: the CLI says so with the file and field, exit 1', () => {
    const dir = job({ executor: { trainer: { module: 'trainer.ts' } } });
    const started = Date.now();
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'src/cli/main.ts'), 'validate', dir], {
      encoding: 'utf8',
    });
    const ms = Date.now() - started;
    assert.equal(r.status, 1, r.stdout);
    assert.match(
      r.stderr,
      new RegExp(`${path.join(dir, 'job.json')}: executor\\.trainer\\.module: ${path.join(dir, 'trainer.ts')} does not exist`),
    );
    process.stdout.write(`# validate with a missing trainer module: ${ms} ms (CLI start included)\n`);
  });

  it('trainer modules that fail to load or lack the export; model modules likewise', async () => {
    await rejects(
      job({ executor: { trainer: { module: 'trainer.ts' } } }, { 'trainer.ts': 'export const x = ;\n' }),
      /executor\.trainer\.module: cannot load/,
      /trainer\.ts/,
    );
    await rejects(
      job({ executor: { trainer: { module: 'trainer.ts', export: 'train' } } }, { 'trainer.ts': 'export function other() {}\n' }),
      /executor\.trainer: trainer\.ts has no export "train" \(it exports other\)/,
      /./,
    );
    await rejects(
      job({ executor: { trainer: { module: 'trainer.ts', factory: 'make' } } }, { 'trainer.ts': 'export const make = 3;\n' }),
      /executor\.trainer: export "make" of trainer\.ts must be a function/,
      /./,
    );
    await rejects(
      job({ model: { module: 'nope.ts' }, executor: { trainer: { module: 'model.ts', export: 'initialModel' } } }),
      /model\.module: .*nope\.ts does not exist/,
      /./,
    );
    await rejects(
      job({ model: { path: 'nope.safetensors' }, executor: { trainer: { module: 'model.ts', export: 'initialModel' } } }),
      /model\.path: .*nope\.safetensors does not exist/,
      /./,
    );
    // a per-site override is checked too, with its own field
    await rejects(
      job({
        executor: { trainer: { module: 'model.ts', export: 'initialModel' } },
        sites: { 'site-2': { executor: { trainer: { module: 'gone.ts' } } } },
      }),
      /sites\.site-2\.executor\.trainer\.module: .*gone\.ts does not exist/,
      /./,
    );
  });

  it('scripts: the interpreter, the script file, flotilla importable, the script compiles, params: file supported', async () => {
    const saved = process.env.FLOTILLA_PYTHON;
    try {
      process.env.FLOTILLA_PYTHON = path.join(tmp, 'no-such-python');
      await rejects(
        job(script('{python}', ['train.py'])),
        /executor\.script\.command: ".*no-such-python" is not an executable file nor on PATH \(\{python\} resolved to/,
        /FLOTILLA_PYTHON/,
      );
      process.env.FLOTILLA_PYTHON = PYTHON;
      await rejects(job(script('{python}', ['train.py'])), /executor\.script\.args\.0: .*train\.py does not exist/, /./);
      // Debian's interpreter has no flotilla installed (CI installs it into a venv only), and no PYTHONPATH is given
      process.env.FLOTILLA_PYTHON = '/usr/bin/python3';
      await rejects(
        job(script('{python}', ['train.py'], {}), { 'train.py': 'import flotilla\n' }),
        /executor\.script\.command: .* cannot import flotilla \(ModuleNotFoundError/,
        /pip install \.\/python/,
      );
      process.env.FLOTILLA_PYTHON = PYTHON;
      await rejects(
        job(script('{python}', ['-u', 'train.py']), { 'train.py': 'def f(:\n' }),
        /executor\.script\.args\.1: /,
        /invalid syntax|never closed|was not closed/,
      );
      // an older flotilla (no params: file) on the path
      const old = path.join(tmp, 'old-flotilla');
      mkdirSync(path.join(old, 'flotilla'), { recursive: true });
      writeFileSync(path.join(old, 'flotilla', '__init__.py'), '');
      await rejects(
        job(script('{python}', ['train.py'], { PYTHONPATH: old }, 'file'), { 'train.py': 'import flotilla\n' }),
        /executor\.params: "file" needs a flotilla Python package that supports it/,
        /old-flotilla/,
      );
      // and the examples pass
      const ok = await checkJob(path.join(repoRoot, 'examples/pytorch-fedavg'));
      assert.equal(ok.config.name, 'pytorch-fedavg');
      await checkJob(path.join(repoRoot, 'examples/pytorch-fedavg/mixed'));
      await checkJob(path.join(repoRoot, 'examples/hello-fedavg'));
    } finally {
      if (saved === undefined) delete process.env.FLOTILLA_PYTHON;
      else process.env.FLOTILLA_PYTHON = saved;
    }
  });
});

describe('the simulator fails fast when a site cannot start', () => {
  for (const threads of [0, 2]) {
    it(
      `a trainer module that does not load fails the run in seconds, with the cause (threads: ${threads})`,
      { timeout: 60_000 },
      async () => {
        const dir = job(
          {
            minClients: 2,
            executor: { trainer: { module: 'model.ts', export: 'initialModel' } },
            sites: { 'site-2': { executor: { trainer: { module: 'broken.ts' } } } },
          },
          { 'broken.ts': 'throw new Error("broken on purpose");\n' },
        );
        const started = Date.now();
        await assert.rejects(
          simulate({ jobDir: dir, clients: 2, threads, workspace: path.join(tmp, `ws-fast-${threads}`) }),
          (e: Error) => {
            assert.match(e.message, /a simulated site failed: .*site-2.*|a simulated site failed: .*broken on purpose/);
            assert.match(e.message, /broken on purpose/);
            return true;
          },
        );
        assert.ok(Date.now() - started < 30_000, `failed after ${Date.now() - started} ms, not after the 120 s wait for sites`);
      },
    );
  }
  it("a Python trainer whose script is missing fails its round with the interpreter's error", { timeout: 60_000 }, async () => {
    const dir = job(script('{python}', ['missing.py']));
    const w = path.join(tmp, 'model.safetensors');
    await writeSafetensors(w, new Map([['w', f32([1], [1])]]));
    cpSync(w, path.join(dir, 'm.safetensors'));
    await assert.rejects(simulate({ jobDir: dir, clients: 1, workspace: path.join(tmp, 'ws-missing') }), /missing\.py/);
  });
});
