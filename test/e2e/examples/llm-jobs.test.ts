/**
 * The LLM example's job folders (examples/llm/jobs/peft, jobs/sft) run
 * through the simulator, shortened: 1 round, 3 sites, 1 local step of 2
 * short examples each. The job's own config is read and validated, then only
 * the round count and the trainer's size arguments are overridden: the test
 * writes that config to a scratch job folder whose job.ts re-exports the real
 * job.ts, and hands the folder to `simulate()` (what `flotilla simulate`
 * calls, worker threads included).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import type { TensorDict } from '../../../src/core/tensor.ts';
import { type JobConfig, readJobConfig } from '../../../src/runtime/job-config.ts';
import { simulate } from '../../../src/simulator/simulator.ts';
import { initialModelFor } from '../../../examples/llm/src/job-entry.ts';
import { readConfig, readWeights } from '../../../examples/llm/src/io.ts';
import { ATTN_MODULES, MLP_MODULES, PEFT_PREFIX } from '../../../examples/llm/src/model.ts';
import { baseDir, exampleDir } from '../../../examples/llm/src/paths.ts';

const TINY = { localSteps: 1, batch: 2, valCount: 2, maxTrain: 4, ctx: 192 };

/** The job's config with 1 round and TINY trainer args, in a scratch folder next to a job.ts that re-exports the real one. */
function shortenedJob(jobDir: string, scratch: string): { dir: string; config: JobConfig } {
  const { config } = readJobConfig(jobDir);
  assert.ok('trainer' in config.executor && 'factory' in config.executor.trainer, 'the LLM jobs use a trainer factory');
  assert.ok(
    'module' in config.model && config.model.module === config.executor.trainer.module,
    'model and trainer come from the same module',
  );
  const module = config.model.module;
  const short: JobConfig = {
    ...config,
    workflows: config.workflows.map((w) => ({ ...w, rounds: 1 })),
    executor: { ...config.executor, trainer: { ...config.executor.trainer, args: { ...config.executor.trainer.args, ...TINY } } },
  };
  const dir = path.join(scratch, path.basename(jobDir));
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'job.json'), JSON.stringify(short, null, 2));
  writeFileSync(path.join(dir, 'package.json'), '{ "type": "module" }\n');
  writeFileSync(path.join(dir, module), `export * from ${JSON.stringify(pathToFileURL(path.join(jobDir, module)).href)};\n`);
  return { dir, config: readJobConfig(dir).config };
}

async function runJob(name: 'peft' | 'sft') {
  const jobDir = path.join(exampleDir, 'jobs', name);
  const scratch = mkdtempSync(path.join(tmpdir(), `llm-job-${name}-`));
  try {
    const { dir, config } = shortenedJob(jobDir, scratch);
    assert.equal(config.workflows[0]!.type, 'fedavg');
    const workspace = path.join(scratch, 'ws');
    const t0 = performance.now();
    const r = await simulate({ jobDir: dir, clients: config.minClients, workspace });
    console.log(`jobs/${name}: ${config.minClients} sites, 1 round in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    assert.equal(r.rounds.length, 1);
    const round = r.rounds[0]!;
    assert.deepEqual(Object.keys(round.failures), []);
    assert.equal(round.sites.length, 3);
    for (const [site, m] of Object.entries(round.siteMetrics)) {
      assert.ok(Number.isFinite(m.train_loss) && m.train_loss! > 0, `${site}: train_loss ${m.train_loss}`);
      assert.ok(Number.isFinite(m.val_loss) && m.val_loss! > 0, `${site}: val_loss ${m.val_loss}`);
    }
    const metrics = readFileSync(path.join(workspace, 'server', 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { key: string; site: string; value: number });
    const logged = new Set(metrics.filter((m) => m.key === 'train_loss' && Number.isFinite(m.value)).map((m) => m.site));
    assert.equal(logged.size, 3, 'every site logged a train_loss');

    const file = path.join(workspace, 'server', 'global_model.safetensors');
    assert.ok(existsSync(file), 'the global model was saved');
    const saved = (await readSafetensors(file)).tensors;
    assert.ok(r.model);
    assert.deepEqual([...saved.keys()], [...r.model.keys()]);
    return { model: r.model, args: 'trainer' in config.executor && 'args' in config.executor.trainer ? config.executor.trainer.args : {} };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

const changed = (a: TensorDict, b: TensorDict) => [...a].filter(([k, t]) => t.data.some((x, i) => x !== b.get(k)!.data[i])).length;
const shapes = (d: TensorDict) => Object.fromEntries([...d].map(([k, t]) => [k, [...t.shape]]));

test('jobs/peft through the simulator: the global model is the LoRA adapters only, trained', async () => {
  const { model, args } = await runJob('peft');
  const layers = readConfig(baseDir).nLayers;
  const targets = [...ATTN_MODULES, ...MLP_MODULES];
  const want = new Set(
    Array.from({ length: layers }, (_, l) =>
      targets.map((t) => `${PEFT_PREFIX}model.layers.${l}.${(ATTN_MODULES as readonly string[]).includes(t) ? 'self_attn' : 'mlp'}.${t}`),
    )
      .flat()
      .flatMap((p) => [`${p}.lora_A.weight`, `${p}.lora_B.weight`]),
  );
  assert.deepEqual(new Set(model.keys()), want, `${layers} layers × ${targets.length} projections × (A, B)`);
  const initial = await initialModelFor('peft', args);
  assert.deepEqual(shapes(model), shapes(initial));
  assert.ok(changed(model, initial) > 0, 'the adapters were trained');
});

test('jobs/sft through the simulator: the global model is every weight of the base model, trained', async () => {
  const { model } = await runJob('sft');
  const base = await readWeights(baseDir);
  assert.deepEqual(shapes(model), shapes(base));
  assert.ok(![...model.keys()].some((k) => k.includes('lora_')));
  assert.ok(changed(model, base) >= base.size - 1, `nearly every tensor moved: ${changed(model, base)}/${base.size}`);
});
