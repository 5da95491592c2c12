/**
 * The Llama model's building blocks and LoRA on a tiny random model: custom
 * gradients agree with tfjs's own, LoRA training changes only the adapters,
 * adapters are named and shaped like PEFT's, weights survive safetensors and
 * 16-bit I/O, and the tensor count stays flat across steps.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { initBackend, tf } from '../../../examples/llm/src/backend.ts';
import type { LlamaConfig } from '../../../examples/llm/src/config.ts';
import { Finetuner } from '../../../examples/llm/src/finetune.ts';
import type { Example } from '../../../examples/llm/src/instruct.ts';
import { loadAdapters, loadModel, saveAdapters, saveModel } from '../../../examples/llm/src/io.ts';
import { ATTN_MODULES, LlamaModel, MLP_MODULES, PEFT_PREFIX } from '../../../examples/llm/src/model.ts';
import { embedding, mm } from '../../../examples/llm/src/ops.ts';
import { Rng } from '../../../examples/llm/src/rng.ts';
import type { TensorDict } from '../../../src/core/tensor.ts';

const CFG: LlamaConfig = {
  vocabSize: 64,
  dim: 32,
  hiddenDim: 48,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  maxSeqLen: 32,
  normEps: 1e-5,
  ropeTheta: 10000,
  tieEmbeddings: true,
};
const LORA = { rank: 4, alpha: 8, dropout: 0.1, targets: [...ATTN_MODULES, ...MLP_MODULES] };
let dir: string;

before(async () => {
  await initBackend();
  dir = mkdtempSync(path.join(tmpdir(), 'llm-lora-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function examples(n: number, seed: number): Example[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const len = 10 + rng.int(20);
    // a learnable pattern: each token is the previous + 1 (mod vocab)
    const start = rng.int(CFG.vocabSize);
    return { ids: Int32Array.from({ length: len }, (_, i) => (start + i) % CFG.vocabSize), promptLen: 4 };
  });
}

function logitsOf(m: LlamaModel, ids: number[]): Float32Array {
  return tf.tidy(() => m.logits(tf.tensor2d([ids], [1, ids.length], 'int32')).dataSync() as Float32Array);
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

function dictEqual(a: TensorDict, b: TensorDict): boolean {
  if (a.size !== b.size) return false;
  for (const [k, t] of a) {
    const u = b.get(k);
    if (!u || maxDiff(t.data as Float32Array, u.data as Float32Array) !== 0) return false;
  }
  return true;
}

test('custom matmul and embedding gradients equal tfjs reference gradients (duplicate ids summed)', () => {
  const rng = new Rng(3);
  const shapes: [number[], number[]][] = [
    [
      [5, 7],
      [7, 3],
    ],
    [
      [2, 3, 5, 4],
      [2, 3, 4, 6],
    ],
  ];
  for (const [sa, sb] of shapes) {
    const a = tf.tensor(
      rng.normalArray(
        sa.reduce((x, y) => x * y, 1),
        1,
      ),
      sa,
    );
    const b = tf.tensor(
      rng.normalArray(
        sb.reduce((x, y) => x * y, 1),
        1,
      ),
      sb,
    );
    const ours = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.sin(mm(x, y))))([a, b]);
    const ref = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.sin(tf.matMul(x, y))))([a, b]);
    for (let i = 0; i < 2; i++) assert.ok(maxDiff(ours[i]!.dataSync(), ref[i]!.dataSync()) < 1e-4);
  }
  const table = tf.tensor2d(rng.normalArray(10 * 4, 1), [10, 4]);
  const ids = tf.tensor2d(
    [
      [1, 3, 3],
      [9, 1, 3],
    ],
    [2, 3],
    'int32',
  );
  const w = tf.tensor(rng.normalArray(2 * 3 * 4, 1), [2, 3, 4]);
  const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(embedding(t as tf.Tensor2D, ids), w)))(table);
  const gRef = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.reshape(tf.matMul(tf.oneHot(tf.reshape(ids, [-1]), 10), t), [2, 3, 4]), w)))(
    table,
  );
  assert.ok(maxDiff(g.dataSync(), gRef.dataSync()) < 1e-5);
  assert.ok(Math.abs(g.dataSync()[3 * 4]!) > 0, 'row of a repeated id gets a gradient');
});

test('LoRA: zero-initialised adapters leave the output unchanged; training changes only adapters', () => {
  const m = LlamaModel.create(CFG, 1);
  const ids = [1, 2, 3, 4, 5, 6, 7, 8];
  const before = logitsOf(m, ids);
  const base0 = m.toTensorDict();
  m.addLora(LORA, 2);
  assert.equal(maxDiff(before, logitsOf(m, ids)), 0);

  const ad = m.adapterDict();
  assert.equal(ad.size, 2 * CFG.nLayers * 7);
  const q = ad.get(`${PEFT_PREFIX}model.layers.0.self_attn.q_proj.lora_A.weight`);
  const down = ad.get(`${PEFT_PREFIX}model.layers.1.mlp.down_proj.lora_B.weight`);
  assert.deepEqual(q?.shape, [4, CFG.dim]); // [r, in]
  assert.deepEqual(down?.shape, [CFG.dim, 4]); // [out, r]
  assert.ok(m.trainableVariables().length === ad.size);

  const ft = new Finetuner(m, { lr: 1e-2 });
  const data = examples(16, 5);
  const losses: number[] = [];
  let n0 = 0;
  for (let s = 0; s < 12; s++) {
    losses.push(ft.step(data.slice((s % 4) * 4, (s % 4) * 4 + 4)).loss);
    if (s === 0) n0 = tf.memory().numTensors; // after the first step has cached its RoPE tables and mask
  }
  assert.equal(tf.memory().numTensors, n0, 'no tensors leak across steps');
  assert.ok(dictEqual(base0, m.toTensorDict()), 'base weights are bit-identical after LoRA training');
  const ad2 = m.adapterDict();
  assert.ok(!dictEqual(ad, ad2), 'adapters changed');
  assert.ok(maxDiff(before, logitsOf(m, ids)) > 1e-4, 'output changed');
  assert.ok(losses.at(-1)! < losses[0]!, `loss fell: ${losses[0]} → ${losses.at(-1)}`);

  // Merging adds B·A·alpha/r into the base weights: same function, no adapters.
  const withLora = logitsOf(m, ids);
  m.mergeLora();
  assert.equal(m.trainableVariables().length, base0.size);
  assert.ok(maxDiff(withLora, logitsOf(m, ids)) < 1e-4);
  ft.dispose();
  m.dispose();
});

test('SFT trains every weight', () => {
  const m = LlamaModel.create(CFG, 4);
  const w0 = m.toTensorDict();
  const ft = new Finetuner(m, { lr: 1e-3 });
  ft.step(examples(4, 6));
  const w1 = m.toTensorDict();
  for (const [k, t] of w0) assert.ok(maxDiff(t.data as Float32Array, w1.get(k)!.data as Float32Array) > 0, `${k} changed`);
  ft.dispose();
  m.dispose();
});

test('model and adapters round-trip through safetensors; BF16/F16 are converted at the boundary', async () => {
  const m = LlamaModel.create({ ...CFG, tieEmbeddings: false }, 7);
  m.addLora(LORA, 8);
  const ft = new Finetuner(m, { lr: 1e-2 });
  ft.step(examples(4, 9));
  const ids = [3, 1, 4, 1, 5, 9, 2, 6];
  const ref = logitsOf(m, ids);
  await saveModel(path.join(dir, 'm'), m);
  await saveAdapters(path.join(dir, 'a'), m);
  const back = await loadModel(path.join(dir, 'm'));
  assert.ok(back.toTensorDict().has('lm_head.weight'));
  await loadAdapters(path.join(dir, 'a'), back);
  assert.equal(maxDiff(ref, logitsOf(back, ids)), 0);

  for (const dtype of ['BF16', 'F16'] as const) {
    const half = m.toTensorDict(dtype);
    assert.equal([...half.values()][0]!.dtype, dtype);
    const h = LlamaModel.fromTensorDict(m.config, half);
    h.addLora(LORA, 8);
    h.loadAdapterDict(m.adapterDict(dtype));
    const d = maxDiff(ref, logitsOf(h, ids));
    assert.ok(d > 0 && d < 0.05, `${dtype} logits within rounding: ${d}`);
    h.dispose();
  }
  assert.throws(() => back.loadTensorDict(new Map()), /missing tensor "model\.embed_tokens\.weight"/);
  ft.dispose();
  m.dispose();
  back.dispose();
});

test('generation is deterministic for a seed and greedy at temperature 0', () => {
  const m = LlamaModel.create(CFG, 11);
  const a = m.generate([1, 2, 3], 6, { seed: 5 });
  assert.deepEqual(m.generate([1, 2, 3], 6, { seed: 5 }), a);
  assert.equal(a.length, 6);
  const g = m.generate([1, 2, 3], 1, { temperature: 0 });
  const last = logitsOf(m, [1, 2, 3]).slice(2 * CFG.vocabSize);
  assert.equal(g[0], last.indexOf(Math.max(...last)));
  m.dispose();
});
