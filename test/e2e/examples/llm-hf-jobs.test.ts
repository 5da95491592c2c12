/**
 * PyTorch sites of the LLM example (python/train_llm.py: transformers + peft) through the simulator,
 * shortened to 2 rounds of 2 local steps on tiny splits: jobs/peft-torch (every site PyTorch) and
 * jobs/mixed (site-2 PyTorch, the others tfjs, one global LoRA model) and jobs/sft-torch (full SFT, `params: file`). The job's own config is read,
 * only sizes are overridden (as test/e2e/examples/llm-jobs.test.ts does): the scratch job folder's job.ts
 * re-exports the real one.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import type { TensorDict } from '../../../src/core/tensor.ts';
import { simulate } from '../../../src/simulator/simulator.ts';
import { argsFromScript, initialModelFor } from '../../../examples/llm/src/job-entry.ts';
import { PEFT_PREFIX } from '../../../examples/llm/src/model.ts';
import { exampleDir } from '../../../examples/llm/src/paths.ts';
import { writeShortJob } from '../../../examples/llm/src/short-job.ts';
import '../../helpers/python.ts';

const TINY = { localSteps: 2, batch: 2, valCount: 4, maxTrain: 8, ctx: 192 };

async function runJob(name: string, rounds = 2) {
  const jobDir = path.join(exampleDir, 'jobs', name);
  const scratch = mkdtempSync(path.join(tmpdir(), `llm-hf-${name}-`));
  try {
    const { dir, config } = writeShortJob(jobDir, scratch, { rounds, ...TINY });
    const t0 = performance.now();
    const r = await simulate({ jobDir: dir, clients: config.minClients, workspace: path.join(scratch, 'ws') });
    console.log(`jobs/${name}: ${config.minClients} sites, ${rounds} rounds in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    assert.equal(r.rounds.length, rounds);
    for (const round of r.rounds) {
      assert.deepEqual(Object.keys(round.failures), []);
      assert.equal(round.sites.length, config.minClients);
      for (const [site, m] of Object.entries(round.siteMetrics)) {
        assert.ok(Number.isFinite(m.train_loss) && m.train_loss! > 0, `${site}: train_loss ${m.train_loss}`);
        assert.ok(Number.isFinite(m.val_loss) && m.val_loss! > 0, `${site}: val_loss ${m.val_loss}`);
      }
    }
    // val_loss of round r is the global model of round r - 1 scored on each site's validation split
    const mean = (i: number) => {
      const v = Object.values(r.rounds[i]!.siteMetrics).map((m) => m.val_loss!);
      return v.reduce((a, b) => a + b, 0) / v.length;
    };
    console.log(`jobs/${name}: mean global val_loss ${mean(0).toFixed(4)} -> ${mean(rounds - 1).toFixed(4)}`);
    assert.ok(mean(rounds - 1) < mean(0), `the global model's validation loss falls: ${mean(0)} -> ${mean(rounds - 1)}`);
    assert.ok(r.model);
    return { model: r.model, config };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

const changed = (a: TensorDict, b: TensorDict) => [...a].filter(([k, t]) => t.data.some((x, i) => x !== b.get(k)!.data[i])).length;
const shapes = (d: TensorDict) => Object.fromEntries([...d].map(([k, t]) => [k, [...t.shape]]));

test('jobs/peft-torch: PyTorch sites train the LoRA adapters (PEFT names) of one global model', async () => {
  const { model, config } = await runJob('peft-torch');
  assert.ok('script' in config.executor);
  const initial = await initialModelFor('peft', argsFromScript(config.executor.script.args));
  assert.deepEqual(shapes(model), shapes(initial));
  assert.ok([...model.keys()].every((k) => k.startsWith(`${PEFT_PREFIX}model.layers.`) && /\.lora_[AB]\.weight$/.test(k)));
  assert.ok(changed(model, initial) === initial.size, `every adapter tensor moved: ${changed(model, initial)}/${initial.size}`);
});

test('jobs/mixed: tfjs and PyTorch sites fine-tune the same global LoRA model', async () => {
  const { model, config } = await runJob('mixed');
  assert.ok('script' in (config.sites['site-2']?.executor ?? {}), 'site-2 runs the PyTorch script');
  assert.ok('trainer' in config.executor, 'the other sites run the tfjs trainer');
  const initial = await initialModelFor('peft', 'args' in config.executor.trainer ? config.executor.trainer.args : {});
  assert.deepEqual(shapes(model), shapes(initial));
  assert.ok(changed(model, initial) === initial.size, `every adapter tensor moved: ${changed(model, initial)}/${initial.size}`);
});

test('jobs/sft-torch: PyTorch sites in file mode train every weight of the full model', async () => {
  const { model, config } = await runJob('sft-torch');
  assert.ok('script' in config.executor);
  assert.equal(config.executor.params, 'file', 'the job runs the large-model path: safetensors files in and out');
  const initial = await initialModelFor('sft');
  assert.deepEqual(shapes(model), shapes(initial));
  assert.equal(changed(model, initial), initial.size, 'every tensor of the full model moved');
});
