/**
 * Generated data (nothing is downloaded): a 3-class problem in 8 dimensions.
 * One fixed "teacher" (seeded) labels points; each site draws its inputs from
 * a differently shifted Gaussian, so sites see different parts of the space
 * and different class mixes (non-IID), as real federated data would.
 */
export interface Dataset {
  x: Float32Array; // [n, FEATURES]
  y: Int32Array; // [n]
  n: number;
}

export const FEATURES = 8;
export const CLASSES = 3;

/** Mulberry32: small, fast, seedable. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(r: () => number): number {
  const u = Math.max(r(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r());
}

const teacher = (() => {
  const r = rng(1234);
  const w = Array.from({ length: CLASSES }, () => Array.from({ length: FEATURES }, () => gaussian(r)));
  return (x: ArrayLike<number>, o: number): number => {
    let best = 0;
    let bestScore = -Infinity;
    for (let c = 0; c < CLASSES; c++) {
      let s = 0;
      for (let f = 0; f < FEATURES; f++)
        s += w[c]![f]! * Math.tanh(x[o + f]!) + 0.3 * w[c]![(f + 1) % FEATURES]! * x[o + f]! * x[o + ((f + 3) % FEATURES)]!;
      if (s > bestScore) {
        bestScore = s;
        best = c;
      }
    }
    return best;
  };
})();

/** The data of site `index` (0-based): `n` samples, shifted by the site. */
export function siteData(index: number, n: number, split: 'train' | 'val'): Dataset {
  const r = rng(1000 + index * 17 + (split === 'val' ? 7 : 0));
  const x = new Float32Array(n * FEATURES);
  const y = new Int32Array(n);
  const shift = Array.from({ length: FEATURES }, (_, f) => (f % 3 === index % 3 ? 1.0 : -0.3) * (1 + (index % 2)));
  for (let i = 0; i < n; i++) {
    for (let f = 0; f < FEATURES; f++) x[i * FEATURES + f] = gaussian(r) + shift[f]!;
    y[i] = teacher(x, i * FEATURES);
  }
  return { x, y, n };
}
