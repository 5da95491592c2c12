import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Rng, hashSeed } from '../../../examples/protein/src/prng.ts';
import { dirichletSplit, formatHistogram, histogram, labelSkew, lengthSplit } from '../../../examples/protein/src/split.ts';

// a fixed imbalanced label vector like DeepLoc's (10 classes, 3,000 samples)
const sizes = [870, 530, 430, 340, 300, 180, 160, 80, 70, 40];
const labels = sizes.flatMap((n, c) => new Array<number>(n).fill(c));

function assertPartition(parts: number[][], n: number): void {
  const all = parts.flat();
  assert.equal(all.length, n, 'every sample is used');
  assert.equal(new Set(all).size, n, 'no sample is used twice');
  assert.ok(all.every((i) => Number.isInteger(i) && i >= 0 && i < n));
}

describe('seeded PRNG and samplers', () => {
  it('is reproducible and seed-sensitive', () => {
    const a = Array.from(
      { length: 5 },
      (
        (r) => () =>
          r.nextU32()
      )(new Rng(42)),
    );
    const b = Array.from(
      { length: 5 },
      (
        (r) => () =>
          r.nextU32()
      )(new Rng(42)),
    );
    const c = Array.from(
      { length: 5 },
      (
        (r) => () =>
          r.nextU32()
      )(new Rng(43)),
    );
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
    assert.notEqual(hashSeed(1, 'site-1', 0), hashSeed(1, 'site-2', 0));
  });

  it('gamma(k) has mean k and variance k; dirichlet sums to 1', () => {
    const r = new Rng(7);
    for (const k of [0.1, 0.5, 2, 5]) {
      const xs = Array.from({ length: 40000 }, () => r.gamma(k));
      const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
      const v = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length;
      assert.ok(Math.abs(mean - k) < 0.04 * k + 0.005, `gamma(${k}) mean ${mean}`);
      assert.ok(Math.abs(v - k) < 0.1 * k + 0.01, `gamma(${k}) variance ${v}`);
      assert.ok(xs.every((x) => x >= 0));
    }
    const p = r.dirichlet(0.3, 6);
    assert.ok(Math.abs(p.reduce((a, b) => a + b, 0) - 1) < 1e-12);
  });
});

describe('Dirichlet label-skew split', () => {
  it('uses every sample exactly once', () => {
    for (const alpha of [0.05, 0.1, 1, 10, 1000]) {
      for (const sites of [2, 3, 5]) assertPartition(dirichletSplit(labels, { sites, alpha, seed: 3 }), labels.length);
    }
  });

  it('is reproducible from the seed and changes with it', () => {
    const a = dirichletSplit(labels, { sites: 3, alpha: 1, seed: 11 });
    assert.deepEqual(dirichletSplit(labels, { sites: 3, alpha: 1, seed: 11 }), a);
    assert.notDeepEqual(dirichletSplit(labels, { sites: 3, alpha: 1, seed: 12 }), a);
  });

  it('smaller alpha gives more label skew (mean over seeds)', () => {
    const skew = (alpha: number): number => {
      let s = 0;
      for (let seed = 0; seed < 8; seed++) s += labelSkew(labels, dirichletSplit(labels, { sites: 3, alpha, seed }));
      return s / 8;
    };
    const [s01, s1, s10, s1000] = [skew(0.1), skew(1), skew(10), skew(1000)];
    assert.ok(s01 > s1 && s1 > s10 && s10 > s1000, `skew 0.1:${s01} 1:${s1} 10:${s10} 1000:${s1000}`);
    assert.ok(s01 > 0.4, `alpha 0.1 should be strongly skewed, got ${s01}`);
    assert.ok(s1000 < 0.05, `alpha 1000 should be near IID, got ${s1000}`);
  });

  it('respects minPerSite and rejects bad arguments', () => {
    const parts = dirichletSplit(labels, { sites: 4, alpha: 0.05, seed: 5, minPerSite: 100 });
    assert.ok(parts.every((p) => p.length >= 100));
    assert.throws(() => dirichletSplit(labels, { sites: 3, alpha: 0, seed: 1 }), /alpha must be a positive number/);
    assert.throws(() => dirichletSplit(labels, { sites: 0, alpha: 1, seed: 1 }), /sites must be a positive integer/);
    assert.throws(() => dirichletSplit([0, 1], { sites: 3, alpha: 1, seed: 1 }), /cannot give 3 sites/);
  });

  it('prints a per-site class histogram', () => {
    const parts = dirichletSplit(labels, { sites: 3, alpha: 1, seed: 2 });
    const text = formatHistogram(labels, parts);
    const rows = text.split('\n');
    assert.equal(rows.length, 4);
    assert.match(rows[0]!, /Nucl.*Pero.*total/);
    parts.forEach((p, s) => {
      assert.ok(rows[s + 1]!.startsWith(`site-${s + 1}`));
      assert.ok(rows[s + 1]!.trim().endsWith(String(p.length)));
      assert.equal(
        histogram(labels, p).reduce((a, b) => a + b, 0),
        p.length,
      );
    });
  });
});

describe('length-skew split', () => {
  it('is a partition into equal chunks ordered by length', () => {
    const r = new Rng(1);
    const lengths = Array.from({ length: 1001 }, () => 40 + r.int(2000));
    const parts = lengthSplit(lengths, 3, 9);
    assertPartition(parts, lengths.length);
    assert.deepEqual(
      parts.map((p) => p.length),
      [334, 333, 334],
    );
    const max0 = Math.max(...parts[0]!.map((i) => lengths[i]!));
    const min1 = Math.min(...parts[1]!.map((i) => lengths[i]!));
    const max1 = Math.max(...parts[1]!.map((i) => lengths[i]!));
    const min2 = Math.min(...parts[2]!.map((i) => lengths[i]!));
    assert.ok(max0 <= min1 && max1 <= min2);
    assert.deepEqual(lengthSplit(lengths, 3, 9), parts);
  });
});
