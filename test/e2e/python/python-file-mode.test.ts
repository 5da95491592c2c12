/**
 * `executor.params: file` with PyTorch trainers (issue 20): the site streams the task's model to a
 * safetensors file, the Python trainer gets its path (`model.params_path`), maps it copy-on-write,
 * and answers with a file it wrote tensor by tensor, which the site streams back: the Node site
 * never holds the model. Explicitly (test/fixtures/pytorch-file/train.py: load_file + assign, trains
 * in place, result_path) and unchanged (examples/pytorch-fedavg's train_fl.py, whose params are then
 * mapped views and whose state_dict result is written to a file for it). In the simulator here;
 * POC mode in python-poc.test.ts.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { readSafetensors, writeSafetensors } from '../../../src/core/safetensors.ts';
import { f32 } from '../../../src/core/tensor.ts';
import { simulate } from '../../../src/simulator/simulator.ts';
import '../../helpers/python.ts'; // {python}: the test Python

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
let tmp = '';
before(() => {
  tmp = mkdtempSync(path.join(tmpdir(), 'flotilla-pyfile-'));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

test('params: file, explicit API: the trainer maps the task file, trains in place, sends a file; FedAvg of two sites is exact', async () => {
  const job = path.join(tmp, 'explicit');
  cpSync(path.join(repoRoot, 'test/fixtures/pytorch-file'), job, { recursive: true });
  const initial = new Map([
    [
      'layer.0.weight',
      f32(
        [8, 4],
        Array.from({ length: 32 }, (_, i) => (i - 16) / 20),
      ),
    ],
    ['layer.0.bias', f32([8], new Array(8).fill(0.1))],
    [
      'layer.2.weight',
      f32(
        [2, 8],
        Array.from({ length: 16 }, (_, i) => (i % 5) / 7),
      ),
    ],
    ['layer.2.bias', f32([2], [0, 0])],
  ]);
  await writeSafetensors(path.join(job, 'initial_model.safetensors'), initial);
  writeFileSync(
    path.join(job, 'job.json'),
    JSON.stringify({
      name: 'file-explicit',
      minClients: 2,
      model: { path: 'initial_model.safetensors' },
      workflows: [{ type: 'fedavg', rounds: 2 }],
      executor: {
        script: { command: '{python}', args: ['train.py'], env: { PYTHONPATH: '{flotillaRoot}/python', OMP_NUM_THREADS: '1' } },
        params: 'file',
      },
    }),
  );
  const r = await simulate({ jobDir: job, clients: 2, workspace: path.join(tmp, 'ws-explicit') });
  assert.equal(r.rounds.length, 2);
  for (const round of r.rounds) assert.deepEqual(round.failures, {});
  for (const site of ['site-1', 'site-2']) {
    const seen = readFileSync(path.join(r.workspace, site, 'seen.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { params_path: string; params: string[]; in_place: boolean; result: string });
    assert.equal(seen.length, 2, site);
    for (const s of seen) {
      assert.match(s.params_path, new RegExp(`${site}/tasks/[^/]+/input\\.safetensors$`), 'the task came as a file in the site workspace');
      assert.deepEqual(s.params, [...initial.keys()].sort(), 'and its tensors as mapped views');
      assert.ok(s.in_place, 'the module trained the mapped tensors themselves (no copy)');
      assert.equal(path.dirname(s.result), path.dirname(s.params_path), 'the result went next to the input');
      assert.ok(!existsSync(path.dirname(s.params_path)), 'the task files are gone once the result was sent');
    }
  }
  const global = (await readSafetensors(path.join(r.workspace, 'server', 'global_model.safetensors'))).tensors;
  assert.deepEqual([...global.keys()], [...initial.keys()]);
  const moved = [...(global.get('layer.0.weight')!.data as Float32Array)].some((v, i) => v !== initial.get('layer.0.weight')!.data[i]);
  assert.ok(moved, 'training changed the model');
  assert.deepEqual(readdirSync(path.join(r.workspace, 'site-1', 'tasks')), []);
});

test('params: file with examples/pytorch-fedavg unchanged: the script sees mapped params and its state_dict goes back as a file', async () => {
  const job = path.join(tmp, 'example');
  cpSync(path.join(repoRoot, 'examples/pytorch-fedavg'), job, {
    recursive: true,
    filter: (p) => !p.includes('__pycache__') && !p.endsWith('/mixed'),
  });
  const yaml = readFileSync(path.join(job, 'job.yaml'), 'utf8');
  const edited = yaml
    .replace('minClients: 3', 'minClients: 2')
    .replace('rounds: 5', 'rounds: 2')
    .replace(/^executor:\n/m, 'executor:\n  params: file\n');
  assert.notEqual(edited, yaml);
  assert.match(edited, /params: file/);
  writeFileSync(path.join(job, 'job.yaml'), edited);
  const r = await simulate({ jobDir: job, clients: 2, workspace: path.join(tmp, 'ws-example') });
  assert.equal(r.rounds.length, 2);
  for (const round of r.rounds) assert.deepEqual(round.failures, {});
  assert.ok(
    r.rounds[1]!.metrics.val_loss! < r.rounds[0]!.metrics.val_loss! + 0.05,
    `val_loss ${r.rounds[0]!.metrics.val_loss} → ${r.rounds[1]!.metrics.val_loss}`,
  );
  const cross = r.crossSite as Record<string, Record<string, Record<string, number>>>;
  assert.deepEqual(Object.keys(cross).sort(), ['server', 'site-1', 'site-2']);
});
