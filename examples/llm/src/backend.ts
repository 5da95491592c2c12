/**
 * One place that selects the tfjs backend. The wasm backend is ~10× faster
 * than tfjs's pure-JS cpu backend here and needs no native build; it is
 * single-threaded in Node, so parallelism comes from processes/workers.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';

let ready: Promise<void> | undefined;

export function initBackend(): Promise<void> {
  ready ??= (async () => {
    const ok = await tf.setBackend('wasm');
    if (!ok || tf.getBackend() !== 'wasm') throw new Error('could not initialise the tfjs wasm backend');
    await tf.ready();
  })();
  return ready;
}

export { tf };
