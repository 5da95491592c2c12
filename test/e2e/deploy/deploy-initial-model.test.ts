// The initial model named by path: a model module may return the path of a safetensors file
// (a model too large for the job bundle, stored on the server), and `model: {path}` is no
// longer read into memory before the workflows run (offloaded FedAvg streams it from disk).
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { readSafetensors, writeSafetensors } from '../../../src/core/safetensors.ts';
import { f32 } from '../../../src/core/tensor.ts';
import { loadInitialModel, loadJob } from '../../../src/runtime/job.ts';
import { simulate } from '../../../src/simulator/simulator.ts';

const root = fileURLToPath(new URL('../../..', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'flotilla-initial-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** The tiny-file job (params: file trainer) with its model given by `modelYaml` and `model.ts`. */
function job(name: string, modelYaml: string, modelTs?: string): string {
  const dir = join(tmp, name);
  cpSync(join(root, 'test/fixtures/jobs/tiny-file'), dir, { recursive: true });
  const trainer = join(dir, 'trainer.ts');
  writeFileSync(trainer, readFileSync(trainer, 'utf8').replaceAll("'../../../../src/", `'${root}src/`));
  const yaml = readFileSync(join(dir, 'job.yaml'), 'utf8').replace('model:\n  path: initial.safetensors\n', modelYaml);
  writeFileSync(join(dir, 'job.yaml'), yaml);
  if (modelTs !== undefined) writeFileSync(join(dir, 'model.ts'), modelTs);
  return dir;
}

const outside = join(tmp, 'models', 'big.safetensors');

test('a model module may return a safetensors path (absolute or job-relative); model: {path} is a file ModelRef', async () => {
  await writeSafetensors(outside, new Map([['w', f32([4], [1, 2, 3, 4])]]));
  const abs = loadJob(
    job('abs', 'model:\n  module: model.ts\n', `export function initialModel() { return ${JSON.stringify(outside)}; }\n`),
  );
  assert.equal((await loadInitialModel(abs)).path, outside);
  const rel = loadJob(job('rel', 'model:\n  module: model.ts\n', "export function initialModel() { return 'initial.safetensors'; }\n"));
  assert.equal((await loadInitialModel(rel)).path, join(rel.dir, 'initial.safetensors'));
  const byPath = loadJob(job('bypath', 'model:\n  path: initial.safetensors\n'));
  assert.equal((await loadInitialModel(byPath)).path, join(byPath.dir, 'initial.safetensors'));
  const bad = loadJob(job('bad', 'model:\n  module: model.ts\n', "export function initialModel() { return 'missing.safetensors'; }\n"));
  await assert.rejects(
    loadInitialModel(bad),
    /model: model\.ts#initialModel\(\) returned .*missing\.safetensors, not a readable safetensors file/,
  );
  const notModel = loadJob(job('notmodel', 'model:\n  module: model.ts\n', 'export function initialModel() { return 42; }\n'));
  await assert.rejects(loadInitialModel(notModel), /must return a Map of tensors \(TensorDict\) or the path of a safetensors file/);
  const corrupt = loadJob(job('corrupt', 'model:\n  path: job.yaml\n'));
  await assert.rejects(loadInitialModel(corrupt));
});

test('FedAvg from a model path outside the job folder: in memory and offloaded give the same model', async () => {
  const dir = job('sim', 'model:\n  module: model.ts\n', `export function initialModel() { return ${JSON.stringify(outside)}; }\n`);
  const results: Float32Array[] = [];
  for (const offload of [false, true]) {
    const ws = join(tmp, `ws-${offload}`);
    const r = await simulate({ jobDir: dir, clients: 3, threads: 0, workspace: ws, offload });
    assert.equal(r.rounds.length, 3);
    if (offload) assert.equal(r.model, null, 'offloaded FedAvg keeps the model on disk');
    results.push((await readSafetensors(join(ws, 'server', 'global_model.safetensors'))).tensors.get('w')!.data as Float32Array);
  }
  // each site moves w halfway to its target (index+1); equal weights → mean target 2
  const want = [1, 2, 3, 4].map((x) => {
    for (let r = 0; r < 3; r++) x = x + 0.5 * (2 - x);
    return x;
  });
  for (const got of results) for (let i = 0; i < 4; i++) assert.ok(Math.abs(got[i]! - want[i]!) < 1e-5, `${got[i]} vs ${want[i]}`);
  assert.deepEqual([...results[0]!], [...results[1]!]);
  // the job's file is only read, never replaced
  assert.deepEqual([...((await readSafetensors(outside)).tensors.get('w')!.data as Float32Array)], [1, 2, 3, 4]);
});
