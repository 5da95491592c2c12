// The algorithms as job settings: job.yaml's fedopt / scaffold workflows, sampling, proxMu and
// aggregation reach the workflows (simulator, in memory and offloaded), and bad settings are
// refused naming the field.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { ServerOptimizer, stepInMemory } from '../../../src/algorithms/server-optimizer.ts';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import { type TensorDict, f32 } from '../../../src/core/tensor.ts';
import { JobConfigError, parseJobConfig } from '../../../src/runtime/job-config.ts';
import { simulate } from '../../../src/simulator/simulator.ts';

const root = fileURLToPath(new URL('../../..', import.meta.url));

/** The tiny fixture job with its workflows replaced (trainer: w ← w + 0.5·(site index + 1 − w)). */
function job(workflows: string): string {
  const deep = join(mkdtempSync(join(tmpdir(), 'flotilla-algjob-')), 'job');
  mkdirSync(deep);
  writeFileSync(join(deep, 'package.json'), '{ "type": "module" }\n'); // job code is ES modules
  writeFileSync(join(deep, 'trainer.ts'), `export * from ${JSON.stringify(join(root, 'test/fixtures/jobs/tiny/trainer.ts'))};\n`);
  writeFileSync(
    join(deep, 'job.yaml'),
    `name: tiny\nminClients: 2\nmodel:\n  module: trainer.ts\n  export: initialModel\nworkflows:\n${workflows}\nexecutor:\n  trainer:\n    module: trainer.ts\n    factory: createTrainer\n    args:\n      rate: 0.5\n`,
  );
  return deep;
}

test('job.yaml fedopt: the same model in memory and offloaded, equal to the direct FedAdam steps; state on disk per round', async () => {
  const dir = job('  - type: fedopt\n    rounds: 3\n    optimizer: {name: fedadam, lr: 0.1}');
  const mem = await simulate({ jobDir: dir, clients: 3, threads: 0, workspace: mkdtempSync(join(tmpdir(), 'flotilla-algsim-')) });
  const wsOff = mkdtempSync(join(tmpdir(), 'flotilla-algsim-'));
  const off = await simulate({ jobDir: dir, clients: 3, threads: 0, workspace: wsOff, offload: true });
  const offModel = (await readSafetensors(off.modelPath!)).tensors;
  assert.deepEqual(offModel.get('w')!.data, mem.model!.get('w')!.data);
  // direct: targets 1, 2, 3 with equal weights → mean = x + 0.5·(2 − x), then the FedAdam step
  const opt = new ServerOptimizer({ name: 'fedadam', lr: 0.1 });
  let x: TensorDict = new Map([['w', f32([4], [0, 0, 0, 0])]]);
  let state: { tensors: TensorDict; metadata: Record<string, string> } | null = null;
  for (let r = 0; r < 3; r++) {
    const mean = (x.get('w')!.data as Float32Array).map((v) => v + 0.5 * (2 - v));
    const s = await stepInMemory(opt, x, new Map([['w', f32([4], mean)]]), state);
    x = s.model;
    state = { tensors: s.state, metadata: s.stateMetadata };
    assert.ok(existsSync(join(wsOff, 'server', `round-${r}`, 'server_optimizer.safetensors')));
  }
  [...(mem.model!.get('w')!.data as Float32Array)].forEach((v, i) =>
    assert.ok(Math.abs(v - (x.get('w')!.data as Float32Array)[i]!) < 1e-6, `${v}`),
  );
});

test('job.yaml sampling and proxMu: two of three sites per round; scaffold and robust rules run from the config', async () => {
  const dir = job(
    '  - type: fedavg\n    rounds: 4\n    sampling: {count: 2, seed: 5}\n    proxMu: 0.01\n  - type: scaffold\n    rounds: 1\n  - type: fedavg\n    rounds: 1\n    aggregation: {rule: median}',
  );
  const r = await simulate({ jobDir: dir, clients: 3, threads: 0, workspace: mkdtempSync(join(tmpdir(), 'flotilla-algsim-')) });
  assert.equal(r.rounds.length, 6);
  for (const round of r.rounds.slice(0, 4)) assert.equal(round.sites.length, 2);
  assert.ok(new Set(r.rounds.slice(0, 4).map((x) => x.sites.join())).size > 1, 'sampling varies by round');
  for (const round of r.rounds.slice(4)) {
    assert.equal(round.sites.length, 3);
    assert.deepEqual(round.failures, {});
  }
});

test('bad algorithm settings are refused, naming the field', () => {
  const base = { name: 'j', minClients: 2, model: { path: 'm.safetensors' }, executor: { trainer: { module: 't.ts' } } };
  const bad: Array<[unknown, RegExp]> = [
    [{ type: 'fedopt', rounds: 2, optimizer: { name: 'adam' } }, /workflows\.0\.optimizer\.name/],
    [{ type: 'fedopt', rounds: 2, optimizer: { name: 'fedadam', beta2: 1 } }, /workflows\.0\.optimizer\.beta2/],
    [{ type: 'fedavg', rounds: 2, sampling: { fraction: 1.5 } }, /workflows\.0\.sampling\.fraction/],
    [{ type: 'fedavg', rounds: 2, sampling: { fraction: 0.5, count: 2 } }, /fraction or count, not both/],
    [{ type: 'fedavg', rounds: 2, proxMu: -1 }, /workflows\.0\.proxMu/],
    [{ type: 'fedavg', rounds: 2, aggregation: { rule: 'krum', byzantine: -1 } }, /workflows\.0\.aggregation/],
    [
      { type: 'fedavg', rounds: 2, offload: true, aggregation: { rule: 'median' } },
      /workflows\.0\.aggregation: a robust aggregation rule keeps the global model in memory/,
    ],
    [{ type: 'scaffold', rounds: 2, aggregation: { rule: 'median' } }, /unknown key\(s\) "aggregation"/],
  ];
  for (const [w, re] of bad)
    assert.throws(
      () => parseJobConfig({ ...base, workflows: [w] }),
      (e: Error) => e instanceof JobConfigError && re.test(e.message),
      JSON.stringify(w),
    );
});
