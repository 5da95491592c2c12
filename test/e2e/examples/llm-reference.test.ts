/**
 * The tfjs Llama forward pass against an independent numpy implementation of
 * llama2.c (scripts/reference/llama_ref.py) on Karpathy's real stories260K weights.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { initBackend, tf } from '../../../examples/llm/src/backend.ts';
import { readLlama2c } from '../../../examples/llm/src/llama2c.ts';
import { LlamaModel } from '../../../examples/llm/src/model.ts';
import { dataDir, repoRoot } from '../../../examples/llm/src/paths.ts';
import { PYTHON } from '../../helpers/python.ts';

const MODEL = path.join(dataDir, 'llm/stories260K.bin');
const hasNumpy = existsSync(PYTHON) && spawnSync(PYTHON, ['-c', 'import numpy'], { stdio: 'ignore' }).status === 0;

// Never skipped: like the other Python-backed tests, a missing numpy is a failure (.ci/run installs python3-numpy).
test('stories260K: tfjs logits match the numpy llama2.c reference to 1e-4', async () => {
  if (!hasNumpy) assert.fail(`${PYTHON} cannot import numpy: apt-get install -y python3-numpy`);
  assert.ok(existsSync(MODEL), `${MODEL} is missing`);
  await initBackend();
  const { config, weights } = readLlama2c(MODEL);
  assert.deepEqual(
    [config.dim, config.hiddenDim, config.nLayers, config.nHeads, config.nKvHeads, config.vocabSize],
    [64, 172, 5, 8, 4, 512],
  );
  const model = LlamaModel.fromTensorDict(config, weights);
  const ids = [1, 403, 261, 378, 7, 511, 0, 42, 42, 300, 299, 298, 13, 65, 66, 67, 1, 2, 3, 500];
  const out = execFileSync(PYTHON, [path.join(repoRoot, 'scripts/reference/llama_ref.py'), MODEL, '--tokens', ids.join(',')], {
    encoding: 'utf8',
  });
  const ref = (JSON.parse(out) as { logits: number[][] }).logits;
  const ours = tf.tidy(() => model.logits(tf.tensor2d([ids], [1, ids.length], 'int32'))).arraySync()[0]!;
  let maxDiff = 0;
  for (let t = 0; t < ids.length; t++) for (let v = 0; v < 512; v++) maxDiff = Math.max(maxDiff, Math.abs(ours[t]![v]! - ref[t]![v]!));
  console.log(`stories260K max |logit diff| over ${ids.length} positions × 512: ${maxDiff.toExponential(2)}`);
  assert.ok(maxDiff < 1e-4, `max abs diff ${maxDiff}`);
  // The logits are not trivially equal (e.g. all zero): positions differ.
  assert.ok(Math.abs(ref[0]![0]! - ref[5]![0]!) > 1e-3);
  // Without the q/k permutation the interleaved-vs-halves RoPE mismatch would show up.
  const unpermuted = readLlama2c(MODEL);
  const raw = new Float32Array(readRawWq(MODEL, config.dim));
  unpermuted.weights.set('model.layers.0.self_attn.q_proj.weight', { dtype: 'F32', shape: [config.dim, config.dim], data: raw });
  const wrong = LlamaModel.fromTensorDict(config, unpermuted.weights);
  const bad = tf.tidy(() => wrong.logits(tf.tensor2d([ids], [1, ids.length], 'int32'))).arraySync()[0]!;
  assert.ok(Math.abs(bad[5]![0]! - ref[5]![0]!) > 1e-3, 'unpermuted q weights should change the logits');
  model.dispose();
  wrong.dispose();
});

/** Layer 0's wq straight from the file (after header, embedding and rms_att). */
function readRawWq(file: string, dim: number): Float32Array {
  const buf = readFileSync(file);
  const f = new Float32Array(buf.buffer.slice(buf.byteOffset + 28, buf.byteOffset + buf.byteLength));
  const off = 512 * dim + 5 * dim;
  return f.slice(off, off + dim * dim);
}
