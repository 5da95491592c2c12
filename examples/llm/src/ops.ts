/**
 * Differentiable building blocks with hand-written backward passes, for two
 * reasons specific to tfjs-wasm:
 *  - its BatchMatMul with transposeA/transposeB is ~10× slower than a plain
 *    product (measured 1.7 vs 14 GFLOP/s), and tf.matMul's default gradient
 *    uses exactly those; so every product here transposes explicitly;
 *  - the gradient of tf.gather needs UnsortedSegmentSum, which wasm lacks.
 */
import { tf } from './backend.ts';

/** tfjs does not export the type customGrad takes; our functions have fixed arity, hence the casts. */
type CustomGradFn = Parameters<typeof tf.customGrad>[0];

/** Swaps the last two axes. */
export function swapLast(x: tf.Tensor): tf.Tensor {
  const perm = [...Array(x.rank).keys()];
  perm[x.rank - 1] = x.rank - 2;
  perm[x.rank - 2] = x.rank - 1;
  return tf.transpose(x, perm);
}

/**
 * Plain product; batched operands are split into 2-D products, because wasm's
 * BatchMatMul takes the fast XNNPACK path only for a single matrix pair
 * (measured: attention's batched products ran at ~1 GFLOP/s, 2-D ones at ~14).
 */
function product(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  if (a.rank === 2) return tf.matMul(a, b);
  const batch = a.shape.slice(0, -2);
  const [m, k] = a.shape.slice(-2) as [number, number];
  const n = b.shape[b.rank - 1]!;
  return tf.tidy(() => {
    const as = tf.unstack(tf.reshape(a, [-1, m, k]));
    const bs = tf.unstack(tf.reshape(b, [-1, k, n]));
    return tf.reshape(tf.stack(as.map((x, i) => tf.matMul(x as tf.Tensor2D, bs[i] as tf.Tensor2D))), [...batch, m, n]);
  });
}

const mmBoth = tf.customGrad(((a: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
  save([a, b]);
  return {
    value: product(a, b),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [sa, sb] = saved as [tf.Tensor, tf.Tensor];
      return [product(dy, swapLast(sb)), product(swapLast(sa), dy)];
    },
  };
}) as unknown as CustomGradFn);

/** a @ b (same batch dims, no broadcasting) with gradients for both operands. */
export function mm(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  return mmBoth(a, b);
}

/**
 * a @ w where w is constant (a frozen weight): only a gets a gradient, so
 * LoRA training skips the weight-gradient products entirely.
 */
export function mmConst(a: tf.Tensor, w: tf.Tensor): tf.Tensor {
  const f = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
    // Saved (not closed over): tensors made in the forward pass are disposed before backward runs.
    save([w]);
    return {
      value: product(x, w),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => product(dy, swapLast(saved[0]!)),
    };
  }) as unknown as CustomGradFn);
  return f(a);
}

/**
 * Row lookup table[ids] for int32 ids of any shape → [...ids.shape, d].
 * Backward: scatterND, which sums duplicate ids (checked in the tests).
 */
export function embedding(table: tf.Tensor2D, ids: tf.Tensor): tf.Tensor {
  const [v, d] = table.shape;
  const flat = tf.reshape(ids, [-1]);
  const f = tf.customGrad(((t: tf.Tensor, save: tf.GradSaveFunc) => {
    save([flat]);
    return {
      value: tf.gather(t, flat),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.scatterND(tf.reshape(saved[0]!, [-1, 1]), tf.reshape(dy, [-1, d]), [v, d]),
    };
  }) as unknown as CustomGradFn);
  return tf.reshape(f(table), [...ids.shape, d]);
}

/** RMSNorm over the last axis: x / sqrt(mean(x²) + eps) * weight. */
export function rmsNorm(x: tf.Tensor, weight: tf.Tensor, eps: number): tf.Tensor {
  const ms = tf.mean(tf.square(x), -1, true);
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, eps))), weight);
}

export function silu(x: tf.Tensor): tf.Tensor {
  return tf.mul(x, tf.sigmoid(x));
}
