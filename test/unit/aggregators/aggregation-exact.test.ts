// Both aggregators against an exact reference (BigInt), for every dtype, FULL and DIFF results:
// floats are the nearest value of their dtype to the exact weighted mean, integers the exact
// weighted mean rounded to nearest (ties to even) and clamped, BOOL a weighted vote; one result,
// or results that all agree, come back bit for bit (docs/aggregation.md).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { OffloadedAverage } from '../../../src/aggregators/offloaded-average.ts';
import { WeightedAverage } from '../../../src/aggregators/weighted-average.ts';
import { type DType, DTYPES, allocate, bf16ToF32, f16ToF32 } from '../../../src/core/dtypes.ts';
import { type Value, asNumber, assertRule, exactOf } from '../../helpers/exact-rule.ts';
import { readSafetensors, writeSafetensors } from '../../../src/core/safetensors.ts';
import { dictToStream } from '../../../src/core/tensor-stream.ts';
import type { Tensor, TensorDict } from '../../../src/core/tensor.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-exact-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const N = 5; // elements per tensor
type Model = Record<DType, Value[]>;

const notNaNBits = (dec: (b: number) => number) => fc.integer({ min: 0, max: 0xffff }).filter((b) => Number.isFinite(dec(b)));
const tinyToZero = (v: number): number => (Math.abs(v) < 1e-30 ? v * 0 : v); // keeps the sign of zero
const element: Record<DType, fc.Arbitrary<Value>> = {
  F64: fc.oneof(
    fc.double({ noNaN: true, noDefaultInfinity: true, min: -1e9, max: 1e9 }).map(tinyToZero),
    fc.integer({ min: -(2 ** 20), max: 2 ** 20 }).map((i) => i / 1024),
  ),
  F32: fc.float({ noNaN: true, noDefaultInfinity: true, min: -1e9, max: 1e9 }).map(tinyToZero),
  F16: notNaNBits(f16ToF32),
  BF16: notNaNBits(bf16ToF32).filter((b) => Math.abs(bf16ToF32(b)) < 1e30),
  I64: fc.oneof(
    fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
    fc.constantFrom(2n ** 63n - 1n, -(2n ** 63n), 123456789n, 2n ** 53n + 1n),
  ),
  I32: fc.oneof(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), fc.constantFrom(2 ** 31 - 1, -(2 ** 31))),
  I16: fc.integer({ min: -32768, max: 32767 }),
  I8: fc.integer({ min: -128, max: 127 }),
  U8: fc.integer({ min: 0, max: 255 }),
  BOOL: fc.constantFrom(0, 1),
};
const arbModel: fc.Arbitrary<Model> = fc.record(
  Object.fromEntries(DTYPES.map((d) => [d, fc.array(element[d], { minLength: N, maxLength: N })])) as Record<DType, fc.Arbitrary<Value[]>>,
);

function toDict(m: Model): TensorDict {
  return new Map(
    DTYPES.map((d): [string, Tensor] => {
      const data = allocate(d, N);
      m[d].forEach((v, i) => ((data as unknown as Value[])[i] = v));
      return [d, { dtype: d, shape: [N], data }];
    }),
  );
}

// ---- the two aggregators, same inputs ------------------------------------------------

interface Client {
  values: Model;
  weight: number;
  diff: boolean;
  chunk: number;
}

async function aggregate(kind: 'memory' | 'offload', global: Model, clients: Client[]): Promise<TensorDict> {
  if (kind === 'memory') {
    const agg = new WeightedAverage(toDict(global));
    for (const c of clients) await agg.add(dictToStream(toDict(c.values), { chunkBytes: c.chunk }), c.weight, c.diff ? 'DIFF' : 'FULL');
    return agg.result();
  }
  const dir = mkdtempSync(join(tmp, 'run-'));
  try {
    await writeSafetensors(join(dir, 'g.safetensors'), toDict(global));
    const agg = await OffloadedAverage.open(join(dir, 'g.safetensors'), dir);
    for (const c of clients) await agg.add(dictToStream(toDict(c.values), { chunkBytes: c.chunk }), c.weight, c.diff ? 'DIFF' : 'FULL');
    await agg.writeResult(join(dir, 'out.safetensors'));
    return (await readSafetensors(join(dir, 'out.safetensors'))).tensors;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const arbClients = fc.array(
  fc.record({
    values: arbModel,
    weight: fc.oneof(fc.constant(1), fc.integer({ min: 0, max: 1000 })),
    diff: fc.boolean(),
    chunk: fc.constantFrom(8, 16, 40),
  }),
  { minLength: 1, maxLength: 4 },
);

async function checkRule(kind: 'memory' | 'offload', runs: number): Promise<void> {
  await fc.assert(
    fc.asyncProperty(arbModel, arbClients, async (global, clients) => {
      fc.pre(clients.some((c) => c.weight > 0));
      const out = await aggregate(kind, global, clients);
      const W = BigInt(clients.reduce((s, c) => s + c.weight, 0));
      for (const d of DTYPES) {
        const got = out.get(d)!;
        assert.equal(got.dtype, d);
        for (let i = 0; i < N; i++) {
          let S = 0n;
          for (const c of clients) S += BigInt(c.weight) * (exactOf(d, c.values[d][i]!) + (c.diff ? exactOf(d, global[d][i]!) : 0n));
          assertRule(d, (got.data as unknown as Value[])[i]!, S, W, `${kind} ${d}[${i}]`);
        }
      }
    }),
    { numRuns: runs },
  );
}

test('property: WeightedAverage equals the exact rule for every dtype (FULL and DIFF, integer weights)', () => checkRule('memory', 120));
test('property: OffloadedAverage equals the exact rule for every dtype (FULL and DIFF, integer weights)', () => checkRule('offload', 40));

const sameBits = (a: Tensor, b: Tensor): boolean =>
  Buffer.from((a.data as Uint8Array).buffer, (a.data as Uint8Array).byteOffset, (a.data as Uint8Array).byteLength).equals(
    Buffer.from((b.data as Uint8Array).buffer, (b.data as Uint8Array).byteOffset, (b.data as Uint8Array).byteLength),
  );

test('property: one result, or results that all agree, come back bit for bit at any weight (both aggregators, FULL; DIFF of zeros keeps the global model)', async () => {
  const weight = fc.oneof(
    fc.constant(1),
    fc.constant(7),
    fc.integer({ min: 1, max: 1 << 20 }),
    fc.double({ min: 1e-6, max: 1e9, noNaN: true }),
  );
  await fc.assert(
    fc.asyncProperty(
      arbModel,
      arbModel,
      fc.array(weight, { minLength: 1, maxLength: 3 }),
      fc.constantFrom<'memory' | 'offload'>('memory', 'offload'),
      async (global, values, weights, kind) => {
        const full = await aggregate(
          kind,
          global,
          weights.map((w) => ({ values, weight: w, diff: false, chunk: 16 })),
        );
        const want = toDict(values);
        for (const d of DTYPES)
          assert.ok(
            sameBits(full.get(d)!, want.get(d)!),
            `${kind} ${d} at weights ${weights.join(', ')}: ${String((full.get(d)!.data as unknown as Value[])[0])}…`,
          );
        const zeros = Object.fromEntries(DTYPES.map((d) => [d, new Array<Value>(N).fill(d === 'I64' ? 0n : 0)])) as Model;
        const diff = await aggregate(
          kind,
          global,
          weights.map((w) => ({ values: zeros, weight: w, diff: true, chunk: 16 })),
        );
        const g = toDict(global);
        // a DIFF of +0 turns a -0 into +0 (-0 + 0 is +0), so compare floats by value there
        for (const d of DTYPES) {
          const a = diff.get(d)!.data as unknown as Value[];
          const b = g.get(d)!.data as unknown as Value[];
          for (let i = 0; i < N; i++) assert.ok(a[i] === b[i] || asNumber(d, a[i]!) === asNumber(d, b[i]!), `${kind} DIFF ${d}[${i}]`);
        }
      },
    ),
    { numRuns: 60 },
  );
});

test('the cases the issue found: float64 at weight 1, int64 123456789, int32 at its maximum, float32 at weight 7', async () => {
  const base = Object.fromEntries(DTYPES.map((d) => [d, new Array<Value>(N).fill(d === 'I64' ? 0n : 0)])) as Model;
  const values: Model = {
    ...base,
    F64: [Math.PI, 1 / 3, 1e-300, -2.5, 0.1],
    I64: [123456789n, 2n ** 62n + 1n, -1n, 0n, 2n ** 63n - 1n],
    I32: [2147483647, -2147483648, 0, 1, -1],
    F32: [0.1, 1 / 3, 16777217, 3.4e38, -1e-40].map(Math.fround),
  };
  for (const kind of ['memory', 'offload'] as const) {
    for (const w of [1, 7]) {
      const out = await aggregate(kind, base, [{ values, weight: w, diff: false, chunk: 16 }]);
      assert.deepEqual([...(out.get('F64')!.data as Float64Array)], values.F64, `${kind} F64 w=${w}`);
      assert.deepEqual([...(out.get('I64')!.data as BigInt64Array)], values.I64, `${kind} I64 w=${w}`);
      assert.deepEqual([...(out.get('I32')!.data as Int32Array)], values.I32, `${kind} I32 w=${w}`);
      assert.deepEqual([...(out.get('F32')!.data as Float32Array)], values.F32, `${kind} F32 w=${w}`);
    }
    // two sites disagreeing on a counter: the mean rounded to nearest, ties to even; an int32 sum that would wrap does not
    const other: Model = { ...values, I64: [123456790n, 2n ** 62n + 2n, 0n, 0n, 2n ** 63n - 1n], I32: [2147483647, -2147483647, 0, 2, -2] };
    const two = await aggregate(kind, base, [
      { values, weight: 1, diff: false, chunk: 16 },
      { values: other, weight: 1, diff: false, chunk: 16 },
    ]);
    assert.deepEqual([...(two.get('I64')!.data as BigInt64Array)], [123456790n, 2n ** 62n + 2n, 0n, 0n, 2n ** 63n - 1n], kind);
    assert.deepEqual([...(two.get('I32')!.data as Int32Array)], [2147483647, -2147483648, 0, 2, -2], kind);
    // a DIFF that would overflow int32 is clamped to its range, never wrapped
    const top = { ...base, I32: [2147483647, -2147483648, 0, 0, 0] };
    const push = await aggregate(kind, top, [{ values: { ...base, I32: [10, -10, 0, 0, 0] }, weight: 3, diff: true, chunk: 16 }]);
    assert.deepEqual([...(push.get('I32')!.data as Int32Array)].slice(0, 2), [2147483647, -2147483648], kind);
  }
});
