/**
 * Python trainers in whole simulated jobs: examples/pytorch-fedavg (PyTorch at
 * every site), its mixed/ variant (tfjs at site-1 and site-3, PyTorch at
 * site-2, aggregated together), and a job whose Python trainer raises.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { readSafetensors } from '../src/core/safetensors.ts';
import type { TensorDict } from '../src/core/tensor.ts';
import { type SimulationResult, simulate } from '../src/simulator/simulator.ts';

const PYTHON = '/usr/bin/python3';
const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const example = path.join(repoRoot, 'examples/pytorch-fedavg');

function requireTorch(): void {
  const r = spawnSync(PYTHON, ['-c', 'import numpy, torch']);
  if (r.error || r.status !== 0) assert.fail(`${PYTHON} cannot import numpy and torch: apt-get install -y python3-numpy python3-torch`);
}

let tmp = '';
before(() => {
  tmp = mkdtempSync(path.join(tmpdir(), 'flotilla-pysim-'));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

async function globalModel(r: SimulationResult): Promise<TensorDict> {
  return (await readSafetensors(path.join(r.workspace, 'server', 'global_model.safetensors'))).tensors;
}

function maxAbsDiff(a: TensorDict, b: TensorDict): number {
  assert.deepEqual([...a.keys()], [...b.keys()]);
  let m = 0;
  for (const [k, t] of a) {
    const x = t.data as Float32Array;
    const y = b.get(k)!.data as Float32Array;
    assert.equal(x.length, y.length, k);
    for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
  }
  return m;
}

function assertLearned(r: SimulationResult): void {
  assert.equal(r.rounds.length, 5);
  for (const round of r.rounds) {
    assert.deepEqual([...round.sites].sort(), ['site-1', 'site-2', 'site-3']);
    assert.deepEqual(round.failures, {});
  }
  const first = r.rounds[0]!.metrics;
  const last = r.rounds[4]!.metrics;
  assert.ok(last.val_loss! < first.val_loss!, `val_loss ${first.val_loss} → ${last.val_loss}`);
  assert.ok(last.val_accuracy! > 0.8, `val_accuracy ${last.val_accuracy}`);
  const cross = r.crossSite as Record<string, Record<string, Record<string, number>>>;
  assert.deepEqual(Object.keys(cross).sort(), ['server', 'site-1', 'site-2', 'site-3']);
  for (const row of Object.values(cross)) for (const cell of Object.values(row)) assert.ok(cell.val_accuracy! > 0.5, JSON.stringify(row));
}

describe('Python trainers in the simulator', () => {
  let pytorchOnly: TensorDict | undefined;

  it('examples/pytorch-fedavg: 3 PyTorch sites, FedAvg 5 rounds + cross-site evaluation', async () => {
    requireTorch();
    const r = await simulate({ jobDir: example, clients: 3, workspace: path.join(tmp, 'pytorch') });
    assertLearned(r);
    pytorchOnly = await globalModel(r);
    assert.deepEqual([...pytorchOnly.keys()], ['dense1.kernel', 'dense1.bias', 'dense2.kernel', 'dense2.bias']);
    for (const s of ['site-1', 'site-2', 'site-3']) assert.equal(r.rounds[0]!.siteMetrics[s]!.global_val_loss, undefined);
  });

  it('examples/pytorch-fedavg/mixed: tfjs and PyTorch sites aggregate into the same model', async () => {
    requireTorch();
    const r = await simulate({ jobDir: path.join(example, 'mixed'), clients: 3, workspace: path.join(tmp, 'mixed') });
    assertLearned(r);
    // site-2 is the PyTorch script (no global_val_loss metric); site-1 and site-3 run the tfjs trainer
    const m = r.rounds[0]!.siteMetrics;
    assert.equal(typeof m['site-1']!.global_val_loss, 'number');
    assert.equal(typeof m['site-3']!.global_val_loss, 'number');
    assert.equal(m['site-2']!.global_val_loss, undefined);
    // same data, same initial model, same SGD: the two implementations agree to float32 rounding
    if (pytorchOnly) {
      const d = maxAbsDiff(await globalModel(r), pytorchOnly);
      assert.ok(d < 1e-4, `mixed vs PyTorch-only global models differ by ${d}`);
    }
  });

  it('a raising Python trainer fails the round with its traceback', async () => {
    const job = path.join(tmp, 'raising-job');
    rmSync(job, { recursive: true, force: true });
    const { mkdirSync } = await import('node:fs');
    mkdirSync(job);
    writeFileSync(path.join(job, 'model.ts'), `export { initialModel } from ${JSON.stringify(path.join(repoRoot, 'examples/hello-fedavg/model.ts'))};\n`);
    writeFileSync(
      path.join(job, 'job.json'),
      JSON.stringify({
        name: 'raising',
        minClients: 1,
        model: { module: 'model.ts' },
        workflows: [{ type: 'fedavg', rounds: 2 }],
        executor: { script: { command: PYTHON, args: [path.join(repoRoot, 'python/tests/trainers/raising.py')], env: { PYTHONPATH: path.join(repoRoot, 'python') } } },
      }),
    );
    await assert.rejects(simulate({ jobDir: job, clients: 1, workspace: path.join(tmp, 'raising') }), (e: Error) => {
      assert.match(e.message, /round 0: task train: only 0 of 1 required sites succeeded/);
      assert.match(e.message, /failed in the trainer: KeyError: 'missing.weight'/);
      assert.match(e.message, /raising\.py\\?", line 7, in train_one_epoch/);
      return true;
    });
  });
});
