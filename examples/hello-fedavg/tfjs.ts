/**
 * tfjs with the WebAssembly backend (about 5× the pure-JS CPU backend here;
 * tfjs-node's native binary cannot be installed in this environment).
 * The tfjs trainer's glue: tensors in, tensors out.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import type { TensorDict } from 'flotilla/core';

let ready: Promise<typeof tf> | null = null;

export function loadTf(): Promise<typeof tf> {
  ready ??= (async () => {
    await tf.setBackend('wasm');
    await tf.ready();
    return tf;
  })();
  return ready;
}

/** Copies F32 tensors of a TensorDict into same-named tfjs variables (shapes must match). */
export function assignVariables(vars: ReadonlyMap<string, tf.Variable>, params: TensorDict): void {
  for (const [name, v] of vars) {
    const t = params.get(name);
    if (!t) continue;
    if (t.dtype !== 'F32') throw new Error(`tensor "${name}" is ${t.dtype}; this trainer expects F32`);
    if (t.shape.join(',') !== v.shape.join(','))
      throw new Error(`tensor "${name}" has shape [${t.shape.join(', ')}], the model expects [${v.shape.join(', ')}]`);
    tf.tidy(() => v.assign(tf.tensor(t.data as Float32Array, v.shape, 'float32')));
  }
}

/** Reads tfjs variables back into a TensorDict of F32 tensors. */
export function readVariables(vars: ReadonlyMap<string, tf.Variable>): TensorDict {
  const out: TensorDict = new Map();
  for (const [name, v] of vars) out.set(name, { dtype: 'F32', shape: [...v.shape], data: v.dataSync() });
  return out;
}
