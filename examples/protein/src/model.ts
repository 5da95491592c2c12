/**
 * The classifier: an MLP (dense → ReLU → dropout → … → dense) written with
 * tfjs ops on the wasm backend. Ops rather than tf.layers so that every
 * random choice (init, batch order, dropout masks) comes from our seeded
 * PRNG and the weights map one-to-one onto a TensorDict for exchange.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { type Tensor, type TensorDict, tensor } from 'flotilla/core';
import { proximalTerm, scaffoldCorrect } from '../../hello-fedavg/fedprox.ts';
import { Rng, hashSeed } from './prng.ts';

let backendReady: Promise<void> | undefined;
/** Selects the wasm backend once per process. */
export function initBackend(): Promise<void> {
  backendReady ??= (async () => {
    if (!(await tf.setBackend('wasm'))) throw new Error('tfjs wasm backend failed to initialize');
    await tf.ready();
  })();
  return backendReady;
}

export interface MlpConfig {
  inputDim: number;
  hidden: number[];
  classes: number;
  dropout: number;
}

export interface TrainOptions {
  epochs: number;
  batchSize: number;
  lr: number;
  /** L2 penalty λ/2·||W||² on kernels (biases are not penalized) */
  weightDecay: number;
  /** per-class loss weights (length = classes), e.g. from classWeights(); none = uniform */
  classWeights?: Float32Array;
  /** FedProx: adds mu/2 · ||w − anchor||² (Li et al. 2020); 0 or absent = plain training */
  proxMu?: number;
  proxAnchor?: TensorDict;
  /** SCAFFOLD: c − cᵢ per weight; after each optimizer step w ← w − lr·(c − cᵢ) */
  scaffoldCorrection?: TensorDict;
  seed: number;
  /** called after each epoch with the mean training loss */
  onEpoch?: (epoch: number, loss: number) => void | Promise<void>;
}

/** A dataset held as one [N, D] matrix; rows and labels are copied in once. */
export interface Dataset {
  x: Float32Array;
  y: Int32Array;
  n: number;
  dim: number;
}

export function makeDataset(rows: readonly Float32Array[], labels: readonly number[], dim: number): Dataset {
  if (rows.length !== labels.length) throw new Error(`dataset has ${rows.length} rows and ${labels.length} labels`);
  const x = new Float32Array(rows.length * dim);
  rows.forEach((r, i) => x.set(r, i * dim));
  return { x, y: Int32Array.from(labels), n: rows.length, dim };
}

export function subset(d: Dataset, idx: readonly number[]): Dataset {
  const x = new Float32Array(idx.length * d.dim);
  const y = new Int32Array(idx.length);
  idx.forEach((i, k) => {
    x.set(d.x.subarray(i * d.dim, (i + 1) * d.dim), k * d.dim);
    y[k] = d.y[i]!;
  });
  return { x, y, n: idx.length, dim: d.dim };
}

/**
 * "Balanced" class weights n / (k · n_c) over the classes present; absent
 * classes get weight 0 (they contribute no loss anyway). Capped at `cap` so a
 * class with two samples at a skewed site does not dominate its loss.
 */
export function classWeights(y: Int32Array, classes: number, cap = 10): Float32Array {
  const counts = new Array<number>(classes).fill(0);
  for (const v of y) counts[v]!++;
  const present = counts.filter((c) => c > 0).length;
  return Float32Array.from(counts, (c) => (c > 0 ? Math.min(cap, y.length / (present * c)) : 0));
}

/** Names of the exchanged tensors, in order: dense0/kernel, dense0/bias, dense1/kernel, ... */
function paramShapes(cfg: MlpConfig): Array<[string, number[]]> {
  const dims = [cfg.inputDim, ...cfg.hidden, cfg.classes];
  const out: Array<[string, number[]]> = [];
  for (let l = 0; l + 1 < dims.length; l++) {
    out.push([`dense${l}/kernel`, [dims[l]!, dims[l + 1]!]]);
    out.push([`dense${l}/bias`, [dims[l + 1]!]]);
  }
  return out;
}

/** Glorot-uniform kernels and zero biases from a seed, as a TensorDict (no tfjs needed). */
export function initialWeights(cfg: MlpConfig, seed: number): TensorDict {
  const rng = new Rng(seed);
  const dict: TensorDict = new Map();
  for (const [name, shape] of paramShapes(cfg)) {
    const t = tensor('F32', shape);
    if (shape.length === 2) {
      const limit = Math.sqrt(6 / (shape[0]! + shape[1]!));
      for (let i = 0; i < t.data.length; i++) t.data[i] = (2 * rng.uniform() - 1) * limit;
    }
    dict.set(name, t);
  }
  return dict;
}

export interface EvalResult {
  /** predicted class per row */
  pred: Int32Array;
  loss: number;
}

export class Mlp {
  private readonly vars: tf.Variable[];
  private readonly names: string[];
  private disposed = false;

  constructor(
    readonly cfg: MlpConfig,
    weights: TensorDict,
  ) {
    const shapes = paramShapes(cfg);
    this.names = shapes.map(([n]) => n);
    const values = shapes.map(([name, shape]) => this.checked(weights, name, shape));
    this.vars = shapes.map(([, shape], i) => {
      const t = tf.tensor(values[i]!, shape, 'float32');
      const v = tf.variable(t, true);
      t.dispose();
      return v;
    });
  }

  private checked(weights: TensorDict, name: string, shape: number[]): Float32Array {
    const t = weights.get(name);
    if (!t) throw new Error(`model weights have no tensor "${name}" (expected ${this.names.join(', ')})`);
    if (t.dtype !== 'F32') throw new Error(`weight "${name}" has dtype ${t.dtype}, expected F32`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new Error(`weight "${name}" has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
    return t.data as Float32Array;
  }

  /** Replaces the weights in place (e.g. with a new global model). */
  setWeights(weights: TensorDict): void {
    const shapes = paramShapes(this.cfg);
    // validate everything first so a bad dict leaves the model unchanged
    const values = shapes.map(([name, shape]) => this.checked(weights, name, shape));
    tf.tidy(() => shapes.forEach(([, shape], i) => this.vars[i]!.assign(tf.tensor(values[i]!, shape, 'float32'))));
  }

  /** Copies the weights out as F32 tensors (what the trainer sends). */
  getWeights(): TensorDict {
    const dict: TensorDict = new Map();
    this.vars.forEach((v, i) => {
      const t: Tensor<'F32'> = tensor('F32', v.shape, Float32Array.from(v.dataSync() as Float32Array));
      dict.set(this.names[i]!, t);
    });
    return dict;
  }

  private logits(x: tf.Tensor2D, training: boolean, dropoutSeed: number): tf.Tensor2D {
    let h: tf.Tensor2D = x;
    const layers = this.vars.length / 2;
    for (let l = 0; l < layers; l++) {
      h = tf.add<tf.Tensor2D>(tf.matMul(h, this.vars[2 * l] as tf.Variable<tf.Rank.R2>), this.vars[2 * l + 1]!);
      if (l + 1 < layers) {
        h = tf.relu(h);
        if (training && this.cfg.dropout > 0) h = tf.dropout(h, this.cfg.dropout, undefined, dropoutSeed + l) as tf.Tensor2D;
      }
    }
    return h;
  }

  /** Minibatch Adam on `data`; returns the mean loss of the last epoch and the number of steps. */
  async train(data: Dataset, opts: TrainOptions): Promise<{ loss: number; steps: number }> {
    this.assertLive();
    const mu = opts.proxMu ?? 0;
    if (mu > 0 && !opts.proxAnchor) throw new Error('FedProx (proxMu > 0) needs proxAnchor, the global weights');
    if (opts.classWeights && opts.classWeights.length !== this.cfg.classes)
      throw new Error(`classWeights has ${opts.classWeights.length} entries, model has ${this.cfg.classes} classes`);
    const shapes = paramShapes(this.cfg);
    const anchorValues = mu > 0 ? shapes.map(([name, shape]) => this.checked(opts.proxAnchor!, name, shape)) : undefined;
    const rng = new Rng(opts.seed);
    const optimizer = tf.train.adam(opts.lr);
    const x = tf.tensor2d(data.x, [data.n, data.dim]);
    const yOneHot = tf.tidy(() => tf.oneHot(tf.tensor1d(data.y, 'int32'), this.cfg.classes));
    const cw = opts.classWeights ? tf.tensor1d(opts.classWeights) : undefined;
    const anchors = anchorValues?.map((v, k) => tf.tensor(v, shapes[k]![1], 'float32'));
    const corrections = opts.scaffoldCorrection
      ? shapes.map(([name, shape]) => tf.tensor(this.checked(opts.scaffoldCorrection!, name, shape), shape, 'float32'))
      : undefined;
    let steps = 0;
    let lastLoss = NaN;
    try {
      for (let epoch = 0; epoch < opts.epochs; epoch++) {
        const order = rng.permutation(data.n);
        let lossSum = 0;
        let batches = 0;
        for (let b = 0; b < data.n; b += opts.batchSize) {
          const idx = tf.tensor1d(order.slice(b, b + opts.batchSize), 'int32');
          const dropoutSeed = rng.nextU32();
          const loss = optimizer.minimize(
            () =>
              tf.tidy(() => {
                const xb = tf.gather<tf.Tensor2D>(x, idx);
                const yb = tf.gather(yOneHot, idx) as tf.Tensor2D;
                const perSample = tf.losses.softmaxCrossEntropy(
                  yb,
                  this.logits(xb, true, dropoutSeed),
                  undefined,
                  undefined,
                  tf.Reduction.NONE,
                );
                // class weights: w[y_i] per sample, via the one-hot row
                const w = cw ? tf.sum(tf.mul(yb, cw), 1) : tf.onesLike(perSample);
                let total: tf.Scalar = tf.div(tf.sum(tf.mul(perSample, w)), perSample.shape[0]);
                if (opts.weightDecay > 0) {
                  for (let k = 0; k < this.vars.length; k += 2)
                    total = tf.add(total, tf.mul(opts.weightDecay / 2, tf.sum(tf.square(this.vars[k]!))));
                }
                if (anchors) total = tf.add(total, proximalTerm(this.vars, anchors, mu));
                return total;
              }),
            true,
          );
          idx.dispose();
          if (corrections) scaffoldCorrect(this.vars, corrections, opts.lr);
          if (loss) {
            lossSum += loss.dataSync()[0]!;
            loss.dispose();
          }
          batches++;
          steps++;
        }
        lastLoss = lossSum / Math.max(1, batches);
        await opts.onEpoch?.(epoch, lastLoss);
        // let other sites' trainers (same thread) make progress between epochs
        await new Promise<void>((r) => setImmediate(r));
      }
    } finally {
      x.dispose();
      yOneHot.dispose();
      cw?.dispose();
      anchors?.forEach((a) => a.dispose());
      corrections?.forEach((c) => c.dispose());
      optimizer.dispose();
    }
    return { loss: lastLoss, steps };
  }

  /** Predicted classes and mean (unweighted) cross-entropy. */
  evaluate(data: Dataset, batchSize = 1024): EvalResult {
    this.assertLive();
    const pred = new Int32Array(data.n);
    let lossSum = 0;
    for (let b = 0; b < data.n; b += batchSize) {
      const n = Math.min(batchSize, data.n - b);
      const [p, l] = tf.tidy((): [tf.Tensor, tf.Tensor] => {
        const xb = tf.tensor2d(data.x.subarray(b * data.dim, (b + n) * data.dim), [n, data.dim]);
        const yb = tf.oneHot(tf.tensor1d(data.y.subarray(b, b + n), 'int32'), this.cfg.classes);
        const logits = this.logits(xb, false, 0);
        return [tf.argMax(logits, 1), tf.losses.softmaxCrossEntropy(yb, logits, undefined, undefined, tf.Reduction.SUM)];
      });
      pred.set(p.dataSync(), b);
      lossSum += l.dataSync()[0]!;
      p.dispose();
      l.dispose();
    }
    return { pred, loss: lossSum / Math.max(1, data.n) };
  }

  dispose(): void {
    if (this.disposed) return;
    this.vars.forEach((v) => v.dispose());
    this.disposed = true;
  }

  private assertLive(): void {
    if (this.disposed) throw new Error('Mlp used after dispose()');
  }
}

/** A per-(site, round) seed so that results do not depend on the order sites run in. */
export function trainSeed(base: number, site: string, round: number): number {
  return hashSeed(base, site, round);
}
