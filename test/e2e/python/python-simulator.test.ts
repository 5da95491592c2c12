/**
 * Python trainers in whole simulated jobs: examples/pytorch-fedavg/mixed
 * (tfjs at site-1 and site-3, the PyTorch script at site-2, aggregated
 * together) and a job whose Python trainer raises. The all-PyTorch job
 * (examples/pytorch-fedavg) runs the same script at every site; it is left
 * out here to keep this file fast (three torch imports on 2 cores).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import type { TensorDict } from '../../../src/core/tensor.ts';
import { type SimulationResult, simulate } from '../../../src/simulator/simulator.ts';
import { PYTHON } from '../../helpers/python.ts';

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
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
  it('examples/pytorch-fedavg/mixed: tfjs and PyTorch sites aggregate into the same model', async () => {
    requireTorch();
    const r = await simulate({ jobDir: path.join(example, 'mixed'), clients: 3, workspace: path.join(tmp, 'mixed') });
    assertLearned(r);
    // site-2 is the PyTorch script (no global_val_loss metric); site-1 and site-3 run the tfjs trainer
    const m = r.rounds[0]!.siteMetrics;
    assert.equal(typeof m['site-1']!.global_val_loss, 'number');
    assert.equal(typeof m['site-3']!.global_val_loss, 'number');
    assert.equal(m['site-2']!.global_val_loss, undefined);
    const model = await globalModel(r);
    assert.deepEqual([...model.keys()], ['dense1.kernel', 'dense1.bias', 'dense2.kernel', 'dense2.bias']);
    for (const t of model.values()) assert.ok((t.data as Float32Array).every(Number.isFinite));
  });

  it('a raising Python trainer fails the round with its traceback', async () => {
    const job = path.join(tmp, 'raising-job');
    rmSync(job, { recursive: true, force: true });
    mkdirSync(job);
    writeFileSync(
      path.join(job, 'model.ts'),
      `export { initialModel } from ${JSON.stringify(path.join(repoRoot, 'examples/hello-fedavg/model.ts'))};\n`,
    );
    writeFileSync(path.join(job, 'package.json'), '{ "type": "module" }\n');
    writeFileSync(
      path.join(job, 'job.json'),
      JSON.stringify({
        name: 'raising',
        minClients: 1,
        model: { module: 'model.ts' },
        workflows: [{ type: 'fedavg', rounds: 2 }],
        executor: {
          script: {
            command: PYTHON,
            args: [path.join(repoRoot, 'python/tests/trainers/raising.py')],
            env: { PYTHONPATH: path.join(repoRoot, 'python') },
          },
        },
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
