/**
 * Compares this model's logits on stories260K with the numpy llama2.c
 * reference (scripts/reference/llama_ref.py); used by the experiment report.
 * The test (test/e2e/examples/llm-reference.test.ts) does the same check on its own.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { initBackend, tf } from './backend.ts';
import { readLlama2c } from './llama2c.ts';
import { LlamaModel } from './model.ts';
import { dataDir, repoRoot } from './paths.ts';

/** An interpreter with numpy: FLOTILLA_PYTHON, else Debian's. */
export const PYTHON = process.env.FLOTILLA_PYTHON || '/usr/bin/python3';
export const STORIES260K = path.join(dataDir, 'llm/stories260K.bin');

export function hasNumpy(): boolean {
  return spawnSync(PYTHON, ['-c', 'import numpy'], { stdio: 'ignore' }).status === 0;
}

/** Max |logit difference| over all positions and vocabulary entries for `ids`. */
export async function referenceMaxDiff(ids: readonly number[]): Promise<number> {
  await initBackend();
  const { config, weights } = readLlama2c(STORIES260K);
  const model = LlamaModel.fromTensorDict(config, weights);
  const out = execFileSync(PYTHON, [path.join(repoRoot, 'scripts/reference/llama_ref.py'), STORIES260K, '--tokens', ids.join(',')], {
    encoding: 'utf8',
  });
  const ref = (JSON.parse(out) as { logits: number[][] }).logits;
  const ours = tf.tidy(() => model.logits(tf.tensor2d([[...ids]], [1, ids.length], 'int32'))).arraySync()[0]!;
  model.dispose();
  let d = 0;
  ours.forEach((row, t) => row.forEach((v, j) => (d = Math.max(d, Math.abs(v - ref[t]![j]!)))));
  return d;
}
