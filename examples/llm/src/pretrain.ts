/**
 * Pre-trains the example's small base model on the text corpus (corpus.ts).
 * Deterministic for a given seed: the batch of step s is drawn from
 * Rng(seed, s), so a run resumed from a checkpoint continues identically.
 *
 * usage: node --conditions=flotilla-source --import tsx examples/llm/src/pretrain.ts [--steps 1500] [--max-minutes 25] [--resume]
 * Writes <out>/model.safetensors, config.json, pretrain-log.jsonl, pretrain.json;
 * checkpoints (weights + optimizer moments) go to --ckpt every --eval-every steps.
 */
import { appendFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { readSafetensors, writeSafetensors } from 'flotilla/core';
import { initBackend, tf } from './backend.ts';
import { BpeTokenizer, EOT } from './bpe.ts';
import type { LlamaConfig } from './config.ts';
import { loadTextSources, randomWindows, tokenizeCorpus } from './corpus.ts';
import { loadModel, saveModel } from './io.ts';
import { LlamaModel } from './model.ts';
import { AdamW, cosineLr } from './optim.ts';
import { baseDir } from './paths.ts';
import { Rng } from './rng.ts';

const o = new Command()
  .option('--out <dir>', 'output folder (tokenizer.json must be there)', baseDir)
  .option('--ckpt <dir>', 'checkpoint folder', '/tmp/flotilla-llm-pretrain')
  .option('--resume', 'continue from the checkpoint folder', false)
  .option('--seed <n>', 'seed', '1234')
  .option('--steps <n>', 'optimizer steps', '1500')
  .option('--batch <n>', 'sequences per step', '8')
  .option('--ctx <n>', 'context length', '128')
  .option('--dim <n>', 'model width', '128')
  .option('--layers <n>', 'transformer blocks', '3')
  .option('--heads <n>', 'attention heads', '4')
  .option('--kv-heads <n>', 'key/value heads', '2')
  .option('--hidden <n>', 'MLP width', '344')
  .option('--lr <x>', 'peak learning rate', '3e-3')
  .option('--warmup <n>', 'warm-up steps', '100')
  .option('--weight-decay <x>', 'AdamW decay', '0.1')
  .option('--eval-every <n>', 'validate and checkpoint every n steps', '100')
  .option('--max-minutes <x>', 'stop (and save) after this much wall time', '25')
  .parse()
  .opts<Record<string, string | boolean>>();

const num = (k: string): number => {
  const v = Number(o[k]);
  if (!Number.isFinite(v)) throw new Error(`--${k}: not a number: ${String(o[k])}`);
  return v;
};
const outDir = String(o.out);
const ckptDir = String(o.ckpt);
const seed = num('seed');
const steps = num('steps');
const batch = num('batch');
const ctx = num('ctx');
const maxMs = num('maxMinutes') * 60_000;
const evalEvery = num('evalEvery');

await initBackend();
const tok = BpeTokenizer.load(path.join(outDir, 'tokenizer.json'));
const corpus = tokenizeCorpus(tok, loadTextSources());
console.log(`corpus: ${corpus.train.length} train tokens, ${corpus.val.length} val tokens`);

const config: LlamaConfig = {
  vocabSize: tok.vocabSize,
  dim: num('dim'),
  hiddenDim: num('hidden'),
  nLayers: num('layers'),
  nHeads: num('heads'),
  nKvHeads: num('kvHeads'),
  maxSeqLen: ctx,
  normEps: 1e-5,
  ropeTheta: 10000,
  tieEmbeddings: true,
};
const resume = o.resume === true && existsSync(path.join(ckptDir, 'model.safetensors'));
const model = resume ? await loadModel(ckptDir) : LlamaModel.create(config, seed);
const opt = new AdamW(model.trainableVariables(), { weightDecay: num('weightDecay'), beta2: 0.95, clipNorm: 1 });
let start = 0;
if (resume) {
  const st = await readSafetensors(path.join(ckptDir, 'optimizer.safetensors'));
  start = Number(st.metadata.step);
  opt.loadStateDict(st.tensors, start);
  console.log(`resumed at step ${start}`);
}
console.log(`model: ${model.numParams()} parameters`);
mkdirSync(outDir, { recursive: true });
mkdirSync(ckptDir, { recursive: true });
const logFile = path.join(outDir, 'pretrain-log.jsonl');
if (!resume) writeFileSync(logFile, '');

/** Mean loss over fixed validation windows. */
function validate(): number {
  const rng = new Rng(seed + 999);
  let sum = 0;
  const n = 8;
  for (let i = 0; i < n; i++) {
    const { x, y } = randomWindows(corpus.val, batch, ctx, rng);
    sum += tf.tidy(() => model.loss(tf.tensor2d(x, [batch, ctx], 'int32'), tf.tensor2d(y, [batch, ctx], 'int32')).dataSync()[0]!);
  }
  return sum / n;
}

async function checkpoint(step: number): Promise<void> {
  await saveModel(ckptDir, model, { step: String(step) });
  const st = opt.stateDict();
  await writeSafetensors(path.join(ckptDir, 'optimizer.safetensors'), st.tensors, { step: String(st.step) });
}

const t0 = performance.now();
let trainMs = 0;
let tokens = 0;
let window: number[] = [];
let step = start;
let stoppedEarly = false;
for (; step < steps; step++) {
  if (performance.now() - t0 > maxMs) {
    stoppedEarly = true;
    break;
  }
  const lr = cosineLr(step, steps, num('lr'), num('warmup'));
  const { x, y } = randomWindows(corpus.train, batch, ctx, new Rng(seed * 1_000_003 + step));
  const s0 = performance.now();
  const xs = tf.tensor2d(x, [batch, ctx], 'int32');
  const ys = tf.tensor2d(y, [batch, ctx], 'int32');
  const r = opt.step(() => model.loss(xs, ys, undefined, true), lr);
  xs.dispose();
  ys.dispose();
  trainMs += performance.now() - s0;
  tokens += batch * ctx;
  window.push(r.loss);
  if ((step + 1) % 10 === 0 || step + 1 === steps) {
    const rec: Record<string, number> = {
      step: step + 1,
      loss: window.reduce((a, b) => a + b, 0) / window.length,
      lr,
      gradNorm: r.gradNorm,
      tokens: (step + 1) * batch * ctx,
      seconds: (performance.now() - t0) / 1000,
      tokensPerSec: tokens / (trainMs / 1000),
    };
    window = [];
    if ((step + 1) % evalEvery === 0 || step + 1 === steps) {
      rec.valLoss = validate();
      await checkpoint(step + 1);
    }
    appendFileSync(logFile, JSON.stringify(rec) + '\n');
    console.log(JSON.stringify(rec), 'tensors', tf.memory().numTensors);
  }
}

const valLoss = validate();
const eot = tok.specialId(EOT);
const prompts = ['Once upon a time', 'ROMEO:'];
const samples = prompts.map((p) => p + tok.decode(model.generate(tok.encode(p), 60, { temperature: 0.8, topK: 40, seed, stopId: eot })));
await saveModel(outDir, model, { seed: String(seed), steps: String(step) });
const summary = {
  seed,
  steps: step,
  plannedSteps: steps,
  stoppedEarly,
  batch,
  ctx,
  lr: num('lr'),
  warmup: num('warmup'),
  weightDecay: num('weightDecay'),
  parameters: model.numParams(),
  trainTokens: corpus.train.length,
  valTokens: corpus.val.length,
  tokensSeen: step * batch * ctx,
  finalValLoss: valLoss,
  tokensPerSec: tokens / (trainMs / 1000),
  wallSeconds: (performance.now() - t0) / 1000,
  resumedAt: resume ? start : null,
  samples,
};
writeFileSync(path.join(outDir, 'pretrain.json'), JSON.stringify(summary, null, 2) + '\n');
console.log(JSON.stringify(summary, null, 2));
