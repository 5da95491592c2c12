/**
 * Rényi-DP accounting (Mironov 2017, "Rényi Differential Privacy"; the sampled Gaussian mechanism
 * of Mironov, Talwar and Zhang 2019) at integer orders, as TF-Privacy's rdp_accountant computes it:
 * RDP(α) of `steps` compositions of the Gaussian mechanism with noise multiplier σ, each step
 * sampled with probability q, and the (ε, δ) it gives, ε = min over α of RDP(α) + log(1/δ)/(α − 1)
 * (Mironov 2017, Proposition 3). test/e2e/filters/filters-dp.test.ts checks it against TF-Privacy's published
 * test values.
 */

/** Integer orders (q < 1 needs integer orders here), 2..256. */
export const RDP_ORDERS: readonly number[] = [
  2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 20, 22, 24, 28, 32, 40, 48, 56, 64, 80, 96, 128, 160, 192, 256,
];

function logAdd(a: number, b: number): number {
  const m = Math.max(a, b);
  return m === -Infinity ? -Infinity : m + Math.log(Math.exp(a - m) + Math.exp(b - m));
}

function logGamma(x: number): number {
  // Lanczos approximation (g = 7, n = 9): |error| < 1e-13 for the orders used here
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905,
    -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  x -= 1;
  let a = c[0]!;
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i]! / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** log A_α of the sampled Gaussian mechanism for an integer α (Mironov, Talwar, Zhang 2019, §3.3). */
function logA(q: number, sigma: number, alpha: number): number {
  let s = -Infinity;
  for (let k = 0; k <= alpha; k++) {
    const logBinom = logGamma(alpha + 1) - logGamma(k + 1) - logGamma(alpha - k + 1);
    s = logAdd(s, logBinom + k * Math.log(q) + (alpha - k) * Math.log(1 - q) + (k * k - k) / (2 * sigma * sigma));
  }
  return s;
}

/** RDP at each order of `steps` sampled Gaussian mechanisms (rate q, noise multiplier σ). */
export function computeRdp(q: number, sigma: number, steps: number, orders: readonly number[] = RDP_ORDERS): number[] {
  if (!(q >= 0 && q <= 1)) throw new RangeError(`sampling rate must be in [0, 1], got ${q}`);
  if (!(sigma > 0)) throw new RangeError(`noise multiplier must be > 0, got ${sigma}`);
  return orders.map((a) => {
    if (q === 0) return 0;
    if (q === 1) return (steps * a) / (2 * sigma * sigma);
    if (!Number.isInteger(a) || a < 2) throw new RangeError(`order ${a}: sampled Gaussian RDP is computed at integer orders ≥ 2`);
    return (steps * logA(q, sigma, a)) / (a - 1);
  });
}

/** (ε, δ) from RDP: ε = min_α RDP(α) + log(1/δ)/(α − 1), with the order that attains it. */
export function epsilonFromRdp(orders: readonly number[], rdp: readonly number[], delta: number): { epsilon: number; order: number } {
  if (!(delta > 0 && delta < 1)) throw new RangeError(`delta must be in (0, 1), got ${delta}`);
  let best = { epsilon: Infinity, order: NaN };
  orders.forEach((a, i) => {
    const e = rdp[i]! - Math.log(delta) / (a - 1);
    if (e < best.epsilon) best = { epsilon: e, order: a };
  });
  return best;
}

/** ε after `releases` Gaussian releases with noise multiplier σ (every release counted: q = 1). */
export function gaussianEpsilon(sigma: number, releases: number, delta: number): number {
  if (releases === 0) return 0;
  return epsilonFromRdp(RDP_ORDERS, computeRdp(1, sigma, releases), delta).epsilon;
}

/** The smallest noise multiplier (to 0.1 %) whose ε after `releases` releases is at most `epsilon`. */
export function noiseForEpsilon(epsilon: number, releases: number, delta: number): number {
  if (!(epsilon > 0)) throw new RangeError(`epsilon must be > 0, got ${epsilon}`);
  let lo = 1e-3;
  let hi = 1e6;
  if (gaussianEpsilon(hi, releases, delta) > epsilon)
    throw new RangeError(`ε = ${epsilon} after ${releases} releases needs a noise multiplier above ${hi}`);
  while (hi / lo > 1.001) {
    const mid = Math.sqrt(lo * hi);
    if (gaussianEpsilon(mid, releases, delta) > epsilon) lo = mid;
    else hi = mid;
  }
  return hi;
}
