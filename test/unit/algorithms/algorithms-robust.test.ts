// Robust aggregation (median, trimmed mean, Krum / Multi-Krum) against a direct computation over
// the updates, with results staged on disk; client sampling; SCAFFOLD's control-variate math.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { RobustAggregator, type RobustRuleInput } from '../../../src/algorithms/robust.ts';
import { sampleSites, SamplingSchema } from '../../../src/algorithms/sampling.ts';
import { clientControlUpdate, serverControlUpdate } from '../../../src/algorithms/scaffold.ts';
import { dictReader, fileReader } from '../../../src/algorithms/tensor-io.ts';
import { readSafetensors, writeSafetensors } from '../../../src/core/safetensors.ts';
import { dictToStream } from '../../../src/core/tensor-stream.ts';
import { type TensorDict, f32 } from '../../../src/core/tensor.ts';

const f = Math.fround;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length;
  return m % 2 ? s[(m - 1) / 2]! : (s[m / 2 - 1]! + s[m / 2]!) / 2;
}
function trimmed(xs: number[], beta: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const k = Math.floor(beta * s.length);
  const kept = s.slice(k, s.length - k);
  return kept.reduce((a, b) => a + b, 0) / kept.length;
}
function krum(updates: number[][], fByz: number, select: number, weights: number[]): number[] {
  const n = updates.length;
  const d = (a: number[], b: number[]): number => a.reduce((s, x, i) => s + (x - b[i]!) ** 2, 0);
  const scores = updates.map((u, i) =>
    updates
      .filter((_, j) => j !== i)
      .map((w) => d(u, w))
      .sort((a, b) => a - b)
      .slice(0, n - fByz - 2)
      .reduce((a, b) => a + b, 0),
  );
  const chosen = scores
    .map((s, i) => [s, i] as const)
    .sort((a, b) => a[0] - b[0] || a[1] - b[1])
    .slice(0, select)
    .map(([, i]) => i);
  const wsum = chosen.reduce((a, i) => a + weights[i]!, 0);
  return updates[0]!.map((_, k) => chosen.reduce((a, i) => a + weights[i]! * updates[i]![k]!, 0) / wsum);
}

async function aggregate(
  global: number[],
  updates: number[][],
  rule: RobustRuleInput,
  weights: number[],
  diffs: boolean[] = [],
): Promise<{ out: number[]; selected: number[] | null }> {
  const dir = await mkdtemp(join(tmpdir(), 'robust-'));
  try {
    const g: TensorDict = new Map([['w', f32([global.length], global)]]);
    const agg = await RobustAggregator.open(dictReader(g), dir, rule);
    for (let i = 0; i < updates.length; i++) {
      const vals = diffs[i] ? updates[i]!.map((v, k) => f(v) - f(global[k]!)) : updates[i]!;
      await agg.add(dictToStream(new Map([['w', f32([global.length], vals)]])), weights[i]!, diffs[i] ? 'DIFF' : 'FULL');
    }
    const res = await agg.result();
    assert.deepEqual(await readdir(dir), [], 'staged results are removed');
    return { out: [...(res.get('w')!.data as Float32Array)], selected: agg.selected };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const value = fc.float({ min: -100, max: 100, noNaN: true, noDefaultInfinity: true });
const round = (n: number) =>
  fc.tuple(
    fc.array(value, { minLength: 4, maxLength: 4 }),
    fc.array(fc.array(value, { minLength: 4, maxLength: 4 }), { minLength: n, maxLength: n + 4 }),
  );

test('median and trimmed mean equal the direct per-coordinate computation, FULL and DIFF mixed (fast-check)', async () => {
  await fc.assert(
    fc.asyncProperty(round(1), fc.array(fc.boolean(), { minLength: 8, maxLength: 8 }), async ([g, us], diffs) => {
      const ups = us.map((u) => u.map(f));
      const w = ups.map(() => 1);
      const med = await aggregate(g, ups, { rule: 'median' }, w, diffs);
      const tm = await aggregate(g, ups, { rule: 'trimmed_mean', beta: 0.25 }, w, diffs);
      // a DIFF travels as float32 d = u − g and counts as g + d: the direct computation uses the same values
      const seen = ups.map((u, i) => (diffs[i] ? u.map((v, k) => f(g[k]!) + f(v - f(g[k]!))) : u));
      for (let k = 0; k < 4; k++) {
        const col = seen.map((u) => u[k]!);
        // === on purpose: the median of {0, -0} may be either zero
        assert.ok(med.out[k] === f(median(col)), `${med.out[k]} vs ${median(col)}`);
        assert.ok(
          Math.abs(tm.out[k]! - f(trimmed(col, 0.25))) <= 1e-5 * Math.max(1, Math.abs(tm.out[k]!)),
          `${tm.out[k]} vs ${trimmed(col, 0.25)}`,
        );
      }
    }),
    { numRuns: 60 },
  );
});

test('Krum and Multi-Krum pick the updates of the lowest scores and average them by weight (fast-check)', async () => {
  await fc.assert(
    fc.asyncProperty(round(5), fc.integer({ min: 1, max: 3 }), async ([g, us], select) => {
      const ups = us.map((u) => u.map(f));
      const weights = ups.map((_, i) => i + 1);
      const byz = Math.floor((ups.length - 3) / 2);
      const got = await aggregate(g, ups, { rule: 'krum', byzantine: byz, select }, weights);
      const want = krum(ups, byz, select, weights);
      for (let k = 0; k < 4; k++)
        assert.ok(Math.abs(got.out[k]! - want[k]!) <= 1e-4 * Math.max(1, Math.abs(want[k]!)), `${got.out[k]} vs ${want[k]}`);
    }),
    { numRuns: 40 },
  );
});

test('one site sending a scaled, sign-flipped update: median, trimmed mean and Krum stay near the honest updates', async () => {
  const g = [0, 0, 0];
  const honest = [
    [1, 1, 1],
    [1.1, 0.9, 1],
    [0.9, 1.1, 1.05],
    [1.05, 0.95, 0.95],
  ];
  const bad = [-100, -100, -100];
  const ups = [...honest, bad];
  const w = ups.map(() => 1);
  for (const rule of [
    { rule: 'median' },
    { rule: 'trimmed_mean', beta: 0.2 },
    { rule: 'krum', byzantine: 1, select: 2 },
  ] as RobustRuleInput[]) {
    const { out, selected } = await aggregate(g, ups, rule, w);
    for (const v of out) assert.ok(v > 0.8 && v < 1.2, `${rule.rule}: ${out}`);
    if (rule.rule === 'krum') assert.ok(!selected!.includes(4));
  }
});

test('staged on disk: a model over several chunks, read from a file, written to a file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'robust-disk-'));
  try {
    const n = 150_000;
    const gp = join(dir, 'global.safetensors');
    await writeSafetensors(
      gp,
      new Map([
        ['w', f32([n], new Float32Array(n))],
        ['b', f32([2], [5, 5])],
      ]),
    );
    const global = await fileReader(gp);
    const agg = await RobustAggregator.open(global, dir, { rule: 'median' });
    for (let s = 0; s < 3; s++)
      await agg.add(
        dictToStream(
          new Map([
            [
              'w',
              f32(
                [n],
                Array.from({ length: n }, (_, i) => (i % 7) * (s + 1)),
              ),
            ],
          ]),
        ),
        1,
        'FULL',
      );
    await agg.writeResult(join(dir, 'out.safetensors'));
    await global.close();
    const out = await readSafetensors(join(dir, 'out.safetensors'));
    const w = out.tensors.get('w')!.data as Float32Array;
    for (let i = 0; i < n; i += 997) assert.equal(w[i], (i % 7) * 2);
    // nobody sent "b": it keeps the global value
    assert.deepEqual([...(out.tensors.get('b')!.data as Float32Array)], [5, 5]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('robust aggregation refuses what it cannot compute, naming the field', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'robust-bad-'));
  try {
    const g: TensorDict = new Map([['w', f32([2], [0, 0])]]);
    const agg = await RobustAggregator.open(dictReader(g), dir, { rule: 'krum', byzantine: 1 });
    await assert.rejects(agg.add(dictToStream(new Map([['w', f32([3], [0, 0, 0])]])), 1, 'FULL'), /shape \[3\] differs from global \[2\]/);
    await assert.rejects(
      agg.add(dictToStream(new Map([['x', f32([2], [0, 0])]])), 1, 'FULL'),
      /tensor "x" that the global model does not have/,
    );
    for (let i = 0; i < 4; i++) await agg.add(dictToStream(new Map([['w', f32([2], [i, i])]])), 1, 'FULL');
    await assert.rejects(agg.result(), /krum with byzantine = 1 needs at least 5 results, got 4/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('client sampling: seeded, order-independent, fraction or count, with minimums', () => {
  const sites = Array.from({ length: 10 }, (_, i) => `site-${i + 1}`);
  const s = SamplingSchema.parse({ fraction: 0.3, seed: 7 });
  const r0 = sampleSites(sites, s, 0);
  assert.equal(r0.length, 3);
  assert.deepEqual(sampleSites([...sites].reverse(), s, 0), r0, 'independent of connection order');
  assert.deepEqual(sampleSites(sites, s, 0), r0, 'same seed and round, same sites');
  const rounds = Array.from({ length: 20 }, (_, r) => sampleSites(sites, s, r).join());
  assert.ok(new Set(rounds).size > 10, 'rounds differ');
  assert.equal(sampleSites(sites, SamplingSchema.parse({ fraction: 0.1, min: 4 }), 0).length, 4);
  assert.equal(sampleSites(sites, SamplingSchema.parse({ count: 2 }), 0, 5).length, 5, 'never below the job minClients');
  assert.equal(sampleSites(sites.slice(0, 2), SamplingSchema.parse({ count: 5 }), 0).length, 2, 'capped at the connected sites');
  assert.throws(() => sampleSites(sites.slice(0, 2), SamplingSchema.parse({ count: 1, min: 3 }), 0), /at least 3 sites, 2 are connected/);
  assert.equal(SamplingSchema.safeParse({ fraction: 0.5, count: 2 }).success, false);
  // every site is picked about equally often
  const counts = new Map<string, number>();
  for (let r = 0; r < 1000; r++) for (const x of sampleSites(sites, s, r)) counts.set(x, (counts.get(x) ?? 0) + 1);
  for (const c of counts.values()) assert.ok(c > 220 && c < 380, `picked ${c} of 1000 rounds (expected about 300)`);
});

test('SCAFFOLD control variates: client option II and the server update, element by element', () => {
  const x = new Map([['w', f32([3], [1, 2, 3])]]);
  const y = new Map([['w', f32([3], [0.5, 2.5, 3])]]);
  const c = new Map([['w', f32([3], [0.1, -0.2, 0])]]);
  const ci = new Map([['w', f32([3], [0.3, 0, -0.1])]]);
  const K = 10;
  const lr = 0.05;
  const u = clientControlUpdate({ ci, c, x, y, steps: K, lr });
  const cNew = [0.3 - 0.1 + (1 - 0.5) / (K * lr), 0 + 0.2 + (2 - 2.5) / (K * lr), -0.1 - 0 + 0];
  assert.deepEqual([...(u.ci.get('w')!.data as Float32Array)], cNew.map(f));
  assert.deepEqual(
    [...(u.delta.get('w')!.data as Float32Array)],
    cNew.map((v, i) => f(f(v) - f([0.3, 0, -0.1][i]!))),
  );
  // no cᵢ yet (first round): starts from zeros
  const first = clientControlUpdate({ ci: new Map(), c, x, y, steps: K, lr });
  assert.deepEqual(first.delta.get('w')!.data, first.ci.get('w')!.data);
  const s = serverControlUpdate(c, new Map([['w', f32([3], [1, 1, 1])]]), 0.5);
  assert.deepEqual([...(s.get('w')!.data as Float32Array)], [0.1 + 0.5, -0.2 + 0.5, 0.5].map(f));
  assert.throws(() => clientControlUpdate({ ci, c, x, y, steps: 0, lr }), /steps > 0/);
});
