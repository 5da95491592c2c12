/**
 * safetensors across languages: files written by src/core/safetensors.ts are
 * read by python/flotilla/safetensors.py with identical values, and the
 * reverse, for every dtype; each side's writer reproduces the other's bytes.
 * Python side: python/tests/tools/st_tool.py (describe / copy / generate / check). PyPI's
 * safetensors (pinned in examples/llm/python/requirements.txt, installed by .ci/run) is the
 * independent reader: neither of our implementations checks only itself.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../../src/core/dtypes.ts';
import { readSafetensors, writeSafetensors } from '../../../src/core/safetensors.ts';
import { type Tensor, type TensorDict, f32, tensor } from '../../../src/core/tensor.ts';
import { PYTHON } from '../../helpers/python.ts';

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const TOOL = path.join(repoRoot, 'python/tests/tools/st_tool.py');

type Value = number | string;
interface Description {
  metadata: Record<string, string>;
  tensors: { name: string; dtype: string; shape: number[]; values: Value[] }[];
}

function python(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(PYTHON, [TOOL, ...args], { encoding: 'utf8', env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' } });
  if (r.error) assert.fail(`cannot run ${PYTHON}: ${r.error.message}`);
  if (/No module named 'numpy'/.test(r.stderr)) assert.fail(`${PYTHON} has no numpy: apt-get install -y python3-numpy`);
  return r;
}

function pythonJson(...args: string[]): Description {
  const r = python(...args);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Description;
}

/** Decodes values the way st_tool.py prints them: floats as numbers or "nan"/"inf"/"-inf"/"-0", 64-bit ints as strings. */
function decode(t: Tensor): Value[] {
  const d = t.data;
  const float = (v: number): Value =>
    Number.isNaN(v) ? 'nan' : v === Infinity ? 'inf' : v === -Infinity ? '-inf' : Object.is(v, -0) ? '-0' : v;
  switch (t.dtype) {
    case 'F16':
      return [...(d as Uint16Array)].map((h) => float(f16ToF32(h)));
    case 'BF16':
      return [...(d as Uint16Array)].map((h) => float(bf16ToF32(h)));
    case 'F32':
    case 'F64':
      return [...(d as Float64Array)].map(float);
    case 'I64':
      return [...(d as BigInt64Array)].map((v) => v.toString());
    default:
      return [...(d as Int32Array)];
  }
}

function describeDict(tensors: TensorDict, metadata: Record<string, string>): Description {
  return { metadata, tensors: [...tensors].map(([name, t]) => ({ name, dtype: t.dtype, shape: [...t.shape], values: decode(t) })) };
}

/** Every dtype, with the edge values each one has. */
function tsTensors(): TensorDict {
  return new Map<string, Tensor>([
    ['f64', tensor('F64', [2, 3], Float64Array.from([Math.E, -0, -Infinity, NaN, Number.MIN_VALUE, Number.MAX_VALUE]))],
    ['f32', f32([4], [0.1, -1e-45, 3.4028234663852886e38, NaN])],
    ['f16', tensor('F16', [5], Uint16Array.from([0.333, -65504, 2 ** -24, -Infinity, 0].map(f32ToF16)))],
    ['bf16', tensor('BF16', [2, 2], Uint16Array.from([1.0078125, -(2 ** 100), NaN, -0].map(f32ToBf16)))],
    ['i64', tensor('I64', [3], BigInt64Array.from([-(2n ** 63n), 2n ** 63n - 1n, 9007199254740993n]))],
    ['i32', tensor('I32', [2], Int32Array.from([-(2 ** 31), 2 ** 31 - 1]))],
    ['i16', tensor('I16', [1, 3], Int16Array.from([-32768, 32767, -1]))],
    ['i8', tensor('I8', [2], Int8Array.from([-128, 127]))],
    ['u8', tensor('U8', [2, 2], Uint8Array.from([0, 7, 128, 255]))],
    ['bool', tensor('BOOL', [3], Uint8Array.from([1, 0, 1]))],
    ['layers.0.attn/q_proj ü', f32([], [-2.5])],
    ['empty', tensor('I64', [0], new BigInt64Array(0))],
  ]);
}

let dir = '';
before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'flotilla-st-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('safetensors between TypeScript and Python', () => {
  it('TypeScript → Python: identical values for every dtype; Python writes the same bytes back', async () => {
    const tensors = tsTensors();
    const metadata = { written_by: 'typescript', ключ: 'значение "q"\n' };
    const a = path.join(dir, 'ts.safetensors');
    await writeSafetensors(a, tensors, metadata);

    const seen = pythonJson('describe', a);
    assert.deepEqual(seen, describeDict(tensors, metadata));
    assert.deepEqual(
      new Set(seen.tensors.map((t) => t.dtype)),
      new Set(['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL']),
    );

    const b = path.join(dir, 'ts-via-python.safetensors');
    const r = python('copy', a, b);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(readFileSync(b).equals(readFileSync(a)), 'the Python writer reproduces the TypeScript file byte for byte');
    const back = await readSafetensors(b);
    assert.deepEqual(describeDict(back.tensors, back.metadata), describeDict(tensors, metadata));
  });

  it('Python → TypeScript: identical values for every dtype; TypeScript writes the same bytes back', async () => {
    const c = path.join(dir, 'py.safetensors');
    const written = pythonJson('generate', c);
    assert.equal(written.tensors.length, 12);

    const got = await readSafetensors(c);
    assert.deepEqual(describeDict(got.tensors, got.metadata), written);

    const e = path.join(dir, 'py-via-ts.safetensors');
    await writeSafetensors(e, got.tensors, got.metadata);
    assert.ok(readFileSync(e).equals(readFileSync(c)), 'the TypeScript writer reproduces the Python file byte for byte');
    const check = python('check', e);
    assert.equal(check.status, 0, check.stdout + check.stderr);
    assert.equal(check.stdout.trim(), 'identical');
  });

  it("PyPI's safetensors reads the TypeScript file with the same values; its save_file's file reads back the same in TypeScript", async () => {
    const tensors = tsTensors();
    const metadata = { written_by: 'typescript', ключ: 'значение "q"\n' };
    const a = path.join(dir, 'ts-for-pypi.safetensors');
    const b = path.join(dir, 'pypi.safetensors');
    await writeSafetensors(a, tensors, metadata);
    // values in decode()'s notation: floats exact (float64), "nan"/"inf"/"-inf"/"-0"; 64-bit ints as strings
    const script = [
      'import json, math, sys, torch',
      'from safetensors import safe_open',
      'from safetensors.torch import save_file',
      'DT = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",',
      '      torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}',
      'def f(v):',
      '    if math.isnan(v): return "nan"',
      '    if math.isinf(v): return "inf" if v > 0 else "-inf"',
      '    if v == 0 and math.copysign(1, v) < 0: return "-0"',
      '    return v',
      'def values(t):',
      '    if t.is_floating_point(): return [f(x) for x in t.to(torch.float64).flatten().tolist()]',
      '    if t.dtype == torch.int64: return [str(x) for x in t.flatten().tolist()]',
      '    return [int(x) for x in t.flatten().tolist()]',
      'with safe_open(sys.argv[1], framework="pt") as st:',
      '    meta = st.metadata()',
      '    tensors = {k: st.get_tensor(k) for k in st.keys()}',
      'save_file(tensors, sys.argv[2], metadata=meta)',
      'print(json.dumps({"metadata": meta, "tensors": [{"name": k, "dtype": DT[t.dtype], "shape": list(t.shape), "values": values(t)} for k, t in tensors.items()]}))',
    ].join('\n');
    const r = spawnSync(PYTHON, ['-c', script, a, b], { encoding: 'utf8' });
    if (/No module named 'safetensors'/.test(r.stderr))
      assert.fail(`${PYTHON} has no safetensors: pip install -r examples/llm/python/requirements.txt (.ci/run does)`);
    assert.equal(r.status, 0, r.stderr);
    const byName = (d: Description): Description => ({ ...d, tensors: [...d.tensors].sort((x, y) => (x.name < y.name ? -1 : 1)) });
    const expected = byName(describeDict(tensors, metadata));
    assert.deepEqual(byName(JSON.parse(r.stdout) as Description), expected);
    const back = await readSafetensors(b);
    assert.deepEqual(byName(describeDict(back.tensors, back.metadata)), expected);
  });

  it('both readers refuse the same truncated file', async () => {
    const f = path.join(dir, 'cut.safetensors');
    await writeSafetensors(f, tsTensors());
    truncateSync(f, readFileSync(f).byteLength - 1);
    await assert.rejects(readSafetensors(f), /out of range: past the end of the file/);
    const r = python('describe', f);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /SafetensorsError: data_offsets out of range: past the end of the file/);
  });
});
