/**
 * Client-side pieces of FedProx and SCAFFOLD for tfjs trainers. FedProx's μ
 * arrives in the task's meta (`fedprox_mu`, read with `proxMuOf` from
 * src/algorithms/fedprox.ts); SCAFFOLD's c − cᵢ is computed from the task's
 * `scaffold.c.*` tensors and the site's own cᵢ (src/algorithms/scaffold.ts).
 */
import * as tf from '@tensorflow/tfjs';

/** FedProx's μ/2·Σ‖w − w_global‖² over the variables (add it to the loss inside the optimizer's closure). */
export function proximalTerm(vars: readonly tf.Variable[], anchors: readonly tf.Tensor[], mu: number): tf.Scalar {
  if (vars.length !== anchors.length) throw new Error(`proximalTerm: ${vars.length} variables but ${anchors.length} anchors`);
  return tf.tidy(() => {
    let sum: tf.Scalar = tf.scalar(0);
    vars.forEach((v, k) => (sum = tf.add(sum, tf.sum(tf.square(tf.sub(v, anchors[k]!))))));
    return tf.mul(mu / 2, sum);
  });
}

/** SCAFFOLD's correction after each optimizer step: w ← w − lr·(c − cᵢ) (as NVFlare's PTScaffoldHelper). */
export function scaffoldCorrect(vars: readonly tf.Variable[], corrections: readonly tf.Tensor[], lr: number): void {
  if (vars.length !== corrections.length)
    throw new Error(`scaffoldCorrect: ${vars.length} variables but ${corrections.length} corrections`);
  tf.tidy(() => vars.forEach((v, k) => v.assign(tf.sub(v, tf.mul(lr, corrections[k]!)))));
}
