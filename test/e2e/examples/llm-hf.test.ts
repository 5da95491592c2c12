/**
 * The example's base model in Hugging Face `transformers` (examples/llm/python/hf_llama.py): the same
 * safetensors file loaded into LlamaForCausalLM gives the tfjs model's logits, also with LoRA adapters
 * saved by the TypeScript side and loaded by `peft`; PyPI's `safetensors` reads our writer's files.
 * Needs the pinned packages of examples/llm/python/requirements.txt in $FLOTILLA_PYTHON (.ci/run).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { writeSafetensors } from 'flotilla/core';
import type { TensorDict } from 'flotilla/core';
import { initBackend, tf } from '../../../examples/llm/src/backend.ts';
import { BpeTokenizer } from '../../../examples/llm/src/bpe.ts';
import { loadModel, saveAdapters } from '../../../examples/llm/src/io.ts';
import type { LlamaModel } from '../../../examples/llm/src/model.ts';
import { baseDir, exampleDir } from '../../../examples/llm/src/paths.ts';
import { Rng } from '../../../examples/llm/src/rng.ts';
import { DEFAULT_LORA } from '../../../examples/llm/src/trainers.ts';
import { PYTHON } from '../../helpers/python.ts';

const PY_DIR = path.join(exampleDir, 'python');
const tmp = mkdtempSync(path.join(tmpdir(), 'llm-hf-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function requireHf(): void {
  const r = spawnSync(PYTHON, ['-c', 'import transformers, peft, safetensors'], { encoding: 'utf8' });
  if (r.status !== 0)
    assert.fail(`${PYTHON} cannot import transformers/peft/safetensors: pip install -r examples/llm/python/requirements.txt\n${r.stderr}`);
}

function hfLogits(ids: readonly number[], adapters?: string): number[][] {
  const args = [path.join(PY_DIR, 'hf_logits.py'), '--base', baseDir, '--tokens', ids.join(',')];
  if (adapters) args.push('--adapters', adapters);
  const out = execFileSync(PYTHON, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  return (JSON.parse(out) as { logits: number[][] }).logits;
}

function tfLogits(model: LlamaModel, ids: readonly number[]): number[][] {
  return tf.tidy(() => model.logits(tf.tensor2d([[...ids]], [1, ids.length], 'int32'))).arraySync()[0]!;
}

function maxDiff(a: number[][], b: number[][]): number {
  assert.equal(a.length, b.length);
  let d = 0;
  a.forEach((row, t) => {
    assert.equal(row.length, b[t]!.length);
    row.forEach((v, j) => (d = Math.max(d, Math.abs(v - b[t]![j]!))));
  });
  return d;
}

const ids = (() => {
  const tok = BpeTokenizer.load(path.join(baseDir, 'tokenizer.json'));
  const text = '### Instruction:\nGive three tips for staying healthy.\n\n### Response:\n1. Eat a balanced diet and drink water.';
  return tok.encode(text);
})();

test('base model: transformers LlamaForCausalLM logits equal the tfjs logits (max |Δ| ≤ 1e-4)', async () => {
  requireHf();
  await initBackend();
  const model = await loadModel(baseDir);
  try {
    const ours = tfLogits(model, ids);
    const ref = hfLogits(ids);
    const d = maxDiff(ours, ref);
    console.log(
      `base model, ${ids.length} positions × ${model.config.vocabSize}: max |logit Δ| tfjs vs transformers = ${d.toExponential(2)}`,
    );
    assert.ok(d <= 1e-4, `max |Δ| ${d}`);
    assert.ok(Math.abs(ref[0]![0]! - ref[ids.length - 1]![0]!) > 1e-3, 'logits vary with position');
  } finally {
    model.dispose();
  }
});

test('LoRA: adapters saved by the TypeScript side, loaded by peft, give the same logits', async () => {
  requireHf();
  await initBackend();
  const model = await loadModel(baseDir);
  try {
    model.addLora(DEFAULT_LORA, 3);
    // B = 0 after init would make the adapters a no-op: give every tensor random values
    const rng = new Rng(7);
    const dict: TensorDict = new Map();
    for (const [name, t] of model.adapterDict()) {
      dict.set(name, { ...t, data: Float32Array.from(rng.normalArray(t.data.length, 0.05)) });
    }
    model.loadAdapterDict(dict);
    const dir = path.join(tmp, 'adapters');
    await saveAdapters(dir, model);
    const ours = tfLogits(model, ids);
    const ref = hfLogits(ids, dir);
    const base = hfLogits(ids);
    const d = maxDiff(ours, ref);
    console.log(`LoRA r=${DEFAULT_LORA.rank}, all 7 projections: max |logit Δ| tfjs vs peft = ${d.toExponential(2)}`);
    assert.ok(d <= 1e-4, `max |Δ| ${d}`);
    assert.ok(maxDiff(ref, base) > 1e-2, 'the adapters change the logits');
  } finally {
    model.dispose();
  }
});

test('PyPI safetensors reads files written by src/core/safetensors.ts (every dtype, metadata)', async () => {
  requireHf();
  const file = path.join(tmp, 'mixed.safetensors');
  const dict: TensorDict = new Map([
    ['f32', { dtype: 'F32', shape: [2, 3], data: Float32Array.from([1.5, -2, 3.25, 1e-30, -0, 65504]) }],
    ['f64', { dtype: 'F64', shape: [2], data: Float64Array.from([Math.PI, -1e300]) }],
    ['f16', { dtype: 'F16', shape: [2], data: Uint16Array.from([0x3c00, 0xc000]) }],
    ['bf16', { dtype: 'BF16', shape: [2], data: Uint16Array.from([0x3f80, 0x4049]) }],
    ['i64', { dtype: 'I64', shape: [2], data: BigInt64Array.from([123456789n, -(2n ** 40n)]) }],
    ['i32', { dtype: 'I32', shape: [1], data: Int32Array.from([2147483647]) }],
    ['bool', { dtype: 'BOOL', shape: [3], data: Uint8Array.from([1, 0, 1]) }],
  ]);
  await writeSafetensors(file, dict, { format: 'pt', note: 'from node' });
  const script = [
    'import json, sys, torch',
    'from safetensors import safe_open',
    'out = {}',
    'with safe_open(sys.argv[1], framework="pt") as f:',
    '    out["metadata"] = f.metadata()',
    '    for k in f.keys():',
    '        t = f.get_tensor(k)',
    '        v = t.to(torch.float64) if t.is_floating_point() else t',
    '        out[k] = {"dtype": str(t.dtype), "shape": list(t.shape), "values": [str(x) for x in v.flatten().tolist()]}',
    'print(json.dumps(out))',
  ].join('\n');
  const got = JSON.parse(execFileSync(PYTHON, ['-c', script, file], { encoding: 'utf8' })) as Record<
    string,
    { dtype: string; shape: number[]; values: string[] }
  > & { metadata: Record<string, string> };
  assert.deepEqual(got.metadata, { format: 'pt', note: 'from node' });
  const expect: Record<string, [string, number[], string[]]> = {
    f32: ['torch.float32', [2, 3], ['1.5', '-2.0', '3.25', String(Math.fround(1e-30)), '-0.0', '65504.0']],
    f64: ['torch.float64', [2], [String(Math.PI), '-1e+300']],
    f16: ['torch.float16', [2], ['1.0', '-2.0']],
    bf16: ['torch.bfloat16', [2], ['1.0', '3.140625']],
    i64: ['torch.int64', [2], ['123456789', String(-(2 ** 40))]],
    i32: ['torch.int32', [1], ['2147483647']],
    bool: ['torch.bool', [3], ['True', 'False', 'True']],
  };
  for (const [k, [dtype, shape, values]] of Object.entries(expect)) {
    assert.equal(got[k]?.dtype, dtype, k);
    assert.deepEqual(got[k]?.shape, shape, k);
    assert.deepEqual(
      got[k]?.values.map((v) => (v.endsWith('e-30') ? String(Number(v)) : v)),
      values,
      k,
    );
  }
});
