/**
 * AdamW with global-norm gradient clipping and a per-step learning rate.
 * Written here rather than using tf.train.adam because that one fixes the
 * learning rate at construction and has neither decoupled weight decay nor clipping.
 */
import type { TensorDict } from 'flotilla/core';
import { tf } from './backend.ts';
import { fromTf, toTf } from './convert.ts';

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** decoupled decay, applied to matrices only (not norms) */
  weightDecay?: number;
  /** clip the global gradient norm to this; 0 = off */
  clipNorm?: number;
}

export class AdamW {
  private readonly m: tf.Variable[];
  private readonly v: tf.Variable[];
  private t = 0;
  private readonly o: Required<AdamWOptions>;

  constructor(
    private readonly vars: readonly tf.Variable[],
    opts: AdamWOptions = {},
  ) {
    this.o = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, clipNorm: 1, ...opts };
    this.m = vars.map((x) => tf.variable(tf.zerosLike(x), false));
    this.v = vars.map((x) => tf.variable(tf.zerosLike(x), false));
  }

  /** One step on `lossFn` (built from the variables); returns the loss and the pre-clip gradient norm. */
  step(lossFn: () => tf.Scalar, lr: number): { loss: number; gradNorm: number } {
    const { value, grads } = tf.variableGrads(lossFn, [...this.vars]);
    this.t++;
    const { beta1: b1, beta2: b2, eps, weightDecay: wd, clipNorm } = this.o;
    const gs = this.vars.map((x) => {
      const g = grads[x.name];
      if (!g) throw new Error(`no gradient for variable ${x.name}`);
      return g;
    });
    const normT = tf.tidy(() => tf.sqrt(tf.addN(gs.map((g) => tf.sum(tf.square(g))))));
    const gradNorm = normT.dataSync()[0]!;
    normT.dispose();
    const scale = clipNorm > 0 && gradNorm > clipNorm ? clipNorm / gradNorm : 1;
    const c1 = 1 - b1 ** this.t;
    const c2 = 1 - b2 ** this.t;
    tf.tidy(() => {
      this.vars.forEach((x, i) => {
        const g = scale === 1 ? gs[i]! : tf.mul(gs[i]!, scale);
        const m = this.m[i]!;
        const v = this.v[i]!;
        m.assign(tf.add(tf.mul(m, b1), tf.mul(g, 1 - b1)));
        v.assign(tf.add(tf.mul(v, b2), tf.mul(tf.square(g), 1 - b2)));
        let upd = tf.div(tf.div(m, c1), tf.add(tf.sqrt(tf.div(v, c2)), eps));
        if (wd > 0 && x.rank >= 2) upd = tf.add(upd, tf.mul(x, wd));
        x.assign(tf.sub(x, tf.mul(upd, lr)));
      });
    });
    const loss = value.dataSync()[0]!;
    value.dispose();
    for (const g of gs) g.dispose();
    return { loss, gradNorm };
  }

  get steps(): number {
    return this.t;
  }

  /** Moments as m.<i>/v.<i> in variable order, and the step count (for checkpoints). */
  stateDict(): { tensors: TensorDict; step: number } {
    const tensors: TensorDict = new Map();
    this.m.forEach((x, i) => tensors.set(`m.${i}`, fromTf(x)));
    this.v.forEach((x, i) => tensors.set(`v.${i}`, fromTf(x)));
    return { tensors, step: this.t };
  }

  loadStateDict(tensors: TensorDict, step: number): void {
    for (const [prefix, vars] of [
      ['m', this.m],
      ['v', this.v],
    ] as const) {
      vars.forEach((x, i) => {
        const t = tensors.get(`${prefix}.${i}`);
        if (!t) throw new Error(`optimizer state: missing "${prefix}.${i}"`);
        const y = toTf(`${prefix}.${i}`, t);
        x.assign(y);
        y.dispose();
      });
    }
    this.t = step;
  }

  dispose(): void {
    for (const x of [...this.m, ...this.v]) x.dispose();
  }
}

/** Linear warm-up then cosine decay to `minRatio`·peak. */
export function cosineLr(step: number, total: number, peak: number, warmup: number, minRatio = 0.1): number {
  if (step < warmup) return (peak * (step + 1)) / warmup;
  const p = Math.min(1, (step - warmup) / Math.max(1, total - warmup));
  return peak * (minRatio + (1 - minRatio) * 0.5 * (1 + Math.cos(Math.PI * p)));
}
