import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { OffloadedAverage } from '../../../src/aggregators/offloaded-average.ts';
import { AggregationError, WeightedAverage } from '../../../src/aggregators/weighted-average.ts';
import { writeSafetensors } from '../../../src/core/safetensors.ts';
import { f16ToF32, f32ToF16 } from '../../../src/core/dtypes.ts';
import { dictToStream } from '../../../src/core/tensor-stream.ts';
import { type TensorDict, f32, tensor } from '../../../src/core/tensor.ts';
import { applyResult } from '../../../src/core/apply-result.ts';

const SHAPES: Record<string, number[]> = { a: [3, 4], b: [7], c: [2, 2, 2] };

function model(values: (name: string, i: number) => number): TensorDict {
  return new Map(
    Object.entries(SHAPES).map(([n, s]) => [
      n,
      f32(
        s,
        Array.from({ length: s.reduce((x, y) => x * y, 1) }, (_, i) => values(n, i)),
      ),
    ]),
  );
}

const arbModel = fc.record(
  Object.fromEntries(
    Object.entries(SHAPES).map(([n, s]) => [
      n,
      fc.array(fc.float({ min: -100, max: 100, noNaN: true, noDefaultInfinity: true }), {
        minLength: s.reduce((x, y) => x * y, 1),
        maxLength: s.reduce((x, y) => x * y, 1),
      }),
    ]),
  ),
) as fc.Arbitrary<Record<string, number[]>>;

test('property: streaming weighted average equals the direct float64 computation (FULL and DIFF mixed)', async () => {
  await fc.assert(
    fc.asyncProperty(
      arbModel,
      fc.array(
        fc.record({
          values: arbModel,
          weight: fc.integer({ min: 0, max: 1000 }),
          diff: fc.boolean(),
          chunk: fc.integer({ min: 4, max: 64 }),
        }),
        { minLength: 1, maxLength: 6 },
      ),
      async (global, clients) => {
        fc.pre(clients.some((c) => c.weight > 0));
        const g = model((n, i) => global[n]![i]!);
        const agg = new WeightedAverage(g);
        for (const c of clients)
          await agg.add(
            dictToStream(
              model((n, i) => c.values[n]![i]!),
              { chunkBytes: c.chunk },
            ),
            c.weight,
            c.diff ? 'DIFF' : 'FULL',
          );
        const out = agg.result();
        const W = clients.reduce((s, c) => s + c.weight, 0);
        for (const [n, s] of Object.entries(SHAPES)) {
          const got = out.get(n)!.data as Float32Array;
          for (let i = 0; i < got.length; i++) {
            // what each client's result stands for, in float32 like the tensors themselves
            const direct =
              clients.reduce((acc, c) => acc + c.weight * (Math.fround(c.values[n]![i]!) + (c.diff ? Math.fround(global[n]![i]!) : 0)), 0) /
              W;
            assert.ok(Math.abs(got[i]! - direct) <= 1e-3 + 1e-5 * Math.abs(direct), `${n}[${i}] ${got[i]} vs ${direct} (shape ${s})`);
          }
        }
        assert.equal(agg.count, clients.length);
        assert.equal(agg.totalWeight, W);
      },
    ),
    { numRuns: 150 },
  );
});

test("tensors a client leaves out keep the others' average, or the global value when nobody sent them", async () => {
  const g = model(() => 5);
  const agg = new WeightedAverage(g);
  await agg.add(dictToStream(new Map([['a', f32([3, 4], new Array(12).fill(1))]])), 1, 'FULL');
  await agg.add(
    dictToStream(
      new Map([
        ['a', f32([3, 4], new Array(12).fill(4))],
        ['b', f32([7], new Array(7).fill(2))],
      ]),
    ),
    3,
    'FULL',
  );
  const out = agg.result();
  assert.equal((out.get('a')!.data as Float32Array)[0], (1 * 1 + 3 * 4) / 4);
  assert.equal((out.get('b')!.data as Float32Array)[0], 2);
  assert.equal((out.get('c')!.data as Float32Array)[0], 5);
});

for (const kind of ['in memory', 'offloaded'] as const)
  test(`results with unknown tensors, wrong shapes or a BOOL for a float are rejected before they touch the sum (${kind})`, async () => {
    const g = model(() => 1);
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-agg-reject-'));
    try {
      await writeSafetensors(join(dir, 'g.safetensors'), g);
      const agg = kind === 'in memory' ? new WeightedAverage(g) : await OffloadedAverage.open(join(dir, 'g.safetensors'), dir);
      await assert.rejects(
        agg.add(dictToStream(new Map([['zzz', f32([1], [1])]])), 1, 'FULL'),
        (e: Error) => e instanceof AggregationError && /"zzz"/.test(e.message),
      );
      await assert.rejects(
        agg.add(dictToStream(new Map([['a', f32([4, 3], new Array(12).fill(9))]])), 1, 'FULL'),
        /shape \[4, 3\] differs from global \[3, 4\]/,
      );
      await assert.rejects(
        agg.add(dictToStream(new Map([['b', tensor('BOOL', [7], new Uint8Array(7).fill(1))]])), 1, 'FULL'),
        /tensor "b": BOOL result for a F32 tensor/,
      );
      await assert.rejects(agg.add(dictToStream(model(() => 1)), Number.NaN, 'FULL'), /weight/);
      assert.equal(agg.count, 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

test('F16 global model: averages are computed in float and stored as half precision', async () => {
  const half = (v: number[]) => tensor('F16', [v.length], Uint16Array.from(v.map(f32ToF16)));
  const g: TensorDict = new Map([['h', half([0, 0, 0])]]);
  const agg = new WeightedAverage(g);
  await agg.add(dictToStream(new Map([['h', half([1, 2, 3])]])), 1, 'FULL');
  await agg.add(dictToStream(new Map([['h', f32([3], [3, 4, 5])]])), 1, 'FULL');
  const out = agg.result().get('h')!;
  assert.equal(out.dtype, 'F16');
  assert.deepEqual([...(out.data as Uint16Array)].map(f16ToF32), [2, 3, 4]);
});

test('applyResult: DIFF adds to the base, FULL replaces, missing tensors keep the base', () => {
  const base = model(() => 10);
  const diff = applyResult(base, new Map([['a', f32([3, 4], new Array(12).fill(0.5))]]), 'DIFF');
  assert.equal((diff.get('a')!.data as Float32Array)[3], 10.5);
  assert.equal((diff.get('b')!.data as Float32Array)[0], 10);
  const full = applyResult(base, new Map([['b', f32([7], new Array(7).fill(-1))]]), 'FULL');
  assert.equal((full.get('b')!.data as Float32Array)[6], -1);
  assert.throws(() => applyResult(base, new Map([['nope', f32([1], [1])]]), 'FULL'), /"nope"/);
});
