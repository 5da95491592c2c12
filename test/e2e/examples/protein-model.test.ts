import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs';
import type { TensorDict } from '../../../src/core/tensor.ts';
import { Mlp, type MlpConfig, classWeights, initBackend, initialWeights, makeDataset } from '../../../examples/protein/src/model.ts';
import { Rng } from '../../../examples/protein/src/prng.ts';
import { accuracy, f1Scores, majorityRate, score } from '../../../examples/protein/src/metrics.ts';

const cfg: MlpConfig = { inputDim: 8, hidden: [16], classes: 3, dropout: 0.2 };

/** three Gaussian blobs in 8 dimensions */
function blobs(n: number, seed: number) {
  const r = new Rng(seed);
  const rows: Float32Array[] = [];
  const y: number[] = [];
  for (let i = 0; i < n; i++) {
    const c = i % 3;
    rows.push(Float32Array.from({ length: 8 }, (_, j) => (j % 3 === c ? 2 : 0) + r.normal()));
    y.push(c);
  }
  return makeDataset(rows, y, 8);
}

function distance(a: TensorDict, b: TensorDict): number {
  let s = 0;
  for (const [k, t] of a) {
    const x = t.data as Float32Array;
    const y = b.get(k)!.data as Float32Array;
    for (let i = 0; i < x.length; i++) s += (x[i]! - y[i]!) ** 2;
  }
  return Math.sqrt(s);
}

describe('MLP on the tfjs wasm backend', () => {
  before(() => initBackend());
  const data = blobs(300, 1);
  const opts = { epochs: 3, batchSize: 32, lr: 0.01, weightDecay: 0, seed: 5 };

  it('exchanges weights as an F32 TensorDict with named, shaped tensors', () => {
    const w = initialWeights(cfg, 1);
    assert.deepEqual([...w.keys()], ['dense0/kernel', 'dense0/bias', 'dense1/kernel', 'dense1/bias']);
    assert.deepEqual(w.get('dense0/kernel')!.shape, [8, 16]);
    assert.ok([...w.values()].every((t) => t.dtype === 'F32'));
    const m = new Mlp(cfg, w);
    assert.deepEqual(m.getWeights(), w);
    assert.throws(() => m.setWeights(new Map([...w].filter(([k]) => k !== 'dense1/bias'))), /no tensor "dense1\/bias"/);
    assert.throws(() => new Mlp({ ...cfg, inputDim: 9 }, w), /dense0\/kernel" has shape \[8, 16\], expected \[9, 16\]/);
    m.dispose();
  });

  it('learns separable blobs and is deterministic for a seed', async () => {
    const a = new Mlp(cfg, initialWeights(cfg, 1));
    const b = new Mlp(cfg, initialWeights(cfg, 1));
    const before = accuracy(data.y, a.evaluate(data).pred);
    const ra = await a.train(data, opts);
    await b.train(data, opts);
    assert.equal(ra.steps, 3 * Math.ceil(300 / 32));
    assert.deepEqual(a.getWeights(), b.getWeights());
    const fresh = blobs(150, 2);
    const after = accuracy(fresh.y, a.evaluate(fresh).pred);
    assert.ok(after > 0.85 && after > before, `accuracy ${before} → ${after}`);
    a.dispose();
    b.dispose();
  });

  it('FedProx keeps the local model closer to the global one', async () => {
    const anchor = initialWeights(cfg, 3);
    const drift = async (mu: number): Promise<number> => {
      const m = new Mlp(cfg, anchor);
      await m.train(data, { ...opts, proxMu: mu, proxAnchor: anchor });
      const d = distance(m.getWeights(), anchor);
      m.dispose();
      return d;
    };
    const [d0, d1] = [await drift(0), await drift(1)];
    assert.ok(d1 < 0.8 * d0, `drift with mu=1 ${d1} vs mu=0 ${d0}`);
    const m = new Mlp(cfg, anchor);
    await assert.rejects(m.train(data, { ...opts, proxMu: 0.1 }), /needs proxAnchor/);
    m.dispose();
  });

  it('leaves no tensors behind (many rounds in one process)', async () => {
    const base = tf.memory().numTensors;
    const anchor = initialWeights(cfg, 4);
    const m = new Mlp(cfg, anchor);
    for (let round = 0; round < 3; round++) {
      m.setWeights(anchor);
      await m.train(data, { ...opts, epochs: 1, proxMu: 0.1, proxAnchor: anchor, classWeights: classWeights(data.y, 3) });
      m.evaluate(data);
      m.getWeights();
    }
    assert.throws(() => m.setWeights(new Map()), /no tensor/);
    m.dispose();
    assert.equal(tf.memory().numTensors, base);
  });

  it('balanced class weights, capped, zero for absent classes', () => {
    const w = classWeights(Int32Array.from([0, 0, 0, 1]), 3);
    assert.deepEqual([...w], [Math.fround(4 / 6), 2, 0]); // n / (present classes · n_c)
    assert.equal(classWeights(Int32Array.from([...new Array<number>(1000).fill(0), 1]), 2)[1], 10);
  });
});

describe('metrics', () => {
  it('accuracy, confusion matrix, macro-F1 and majority rate', () => {
    const s = score([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 4);
    assert.equal(s.accuracy, 3 / 5);
    assert.deepEqual(s.confusion[0], [1, 1, 0, 0]);
    // F1: class 0 = 2·1/(2+2) = .5, class 1 = 2·2/(2+3) = .8, class 2 = 0; class 3 absent from both → left out
    assert.ok(Math.abs(s.macroF1 - (0.5 + 0.8 + 0) / 3) < 1e-12);
    assert.ok(Number.isNaN(f1Scores(s.confusion).perClass[3]!));
    assert.equal(majorityRate([2, 2, 1], [2, 0, 2, 2], 3), 0.75);
    assert.throws(() => accuracy([0, 1], [0]), /2 labels but 1 predictions/);
  });
});
