/**
 * The arithmetic both FedAvg aggregators share: a running weighted sum per
 * element, kept at least as precise as the tensor's dtype, and the rule that
 * turns the sum back into the tensor's dtype (docs/aggregation.md).
 *
 *   F32, F16, BF16, I32, I16, I8, U8, BOOL  one float64 per element
 *   F64, I64                                two float64 per element (double-double,
 *                                           about 106 bits: exact products w·x and
 *                                           sums; int64 values are split exactly)
 *
 * Finishing: floats are rounded to nearest (ties to even) from the float64 or
 * double-double mean; integers take the weighted mean rounded to nearest, ties
 * to even, clamped to the dtype's range (never wraps); BOOL is a weighted vote
 * (true when the trues hold at least half the weight). So a single result, or
 * results that all agree, come back bit for bit.
 */
import { type DType, type TypedArray, f64ToBf16, f64ToF16, floatReader, roundClamp, INT_RANGE } from '../core/dtypes.ts';

/** How many float64 an element's accumulator takes: 2 (double-double) for F64 and I64 tensors, else 1. */
export function accWidth(globalDtype: DType): 1 | 2 {
  return globalDtype === 'F64' || globalDtype === 'I64' ? 2 : 1;
}

// ---- error-free transformations (Dekker / Knuth), no FMA in JavaScript ----

const SPLITTER = 134217729; // 2^27 + 1
let outHi = 0;
let outLo = 0;

/** outHi + outLo = a · b exactly (barring overflow). */
function twoProd(a: number, b: number): void {
  const p = a * b;
  if (!(Math.abs(a) < 1e300 && Math.abs(b) < 1e300)) {
    // splitting would overflow (or a is not finite): the rounded product is the best there is
    outHi = p;
    outLo = 0;
    return;
  }
  let t = SPLITTER * a;
  const ah = t - (t - a);
  const al = a - ah;
  t = SPLITTER * b;
  const bh = t - (t - b);
  const bl = b - bh;
  outHi = p;
  outLo = ah * bh - p + ah * bl + al * bh + al * bl;
}

/** outHi + outLo = a + b exactly. */
function twoSum(a: number, b: number): void {
  const s = a + b;
  const bb = s - a;
  outHi = s;
  outLo = a - (s - bb) + (b - bb);
}

/** The element `i` of `data` as an exact pair (outHi + outLo). */
function readPair(dtype: DType, data: TypedArray, words: Int32Array | null, i: number, read: (i: number) => number): void {
  if (dtype === 'I64') {
    // hi word · 2^32 and the unsigned low word are both exact doubles
    twoSum(words![2 * i + 1]! * 4294967296, words![2 * i]! >>> 0);
    return;
  }
  outHi = read(i);
  outLo = 0;
}

function wordsOf(dtype: DType, data: TypedArray): Int32Array | null {
  return dtype === 'I64' ? new Int32Array(data.buffer, data.byteOffset, data.length * 2) : null;
}

/** A tensor's storage and dtype, starting at element `offset` of the accumulator's tensor. */
export interface Elements {
  dtype: DType;
  data: TypedArray;
}

/**
 * acc[at + j] += w · (x[j] + g[j]) for j < x.length (g only for DIFF results), with `width` float64 per
 * element of acc. `g` is the global model's elements aligned with x (its own dtype).
 */
export function foldInto(acc: Float64Array, at: number, width: 1 | 2, x: Elements, w: number, g: Elements | null): void {
  const m = x.data.length;
  if (width === 1) {
    if (x.dtype === 'F32' && (!g || g.dtype === 'F32')) {
      // the common case, without a call per element
      const xs = x.data as Float32Array;
      if (g) {
        const gs = g.data as Float32Array;
        for (let j = 0; j < m; j++) acc[at + j]! += w * (xs[j]! + gs[j]!);
      } else for (let j = 0; j < m; j++) acc[at + j]! += w * xs[j]!;
      return;
    }
    const rx = floatReader(x.dtype, x.data);
    if (g) {
      const rg = floatReader(g.dtype, g.data);
      for (let j = 0; j < m; j++) acc[at + j]! += w * (rx(j) + rg(j));
    } else for (let j = 0; j < m; j++) acc[at + j]! += w * rx(j);
    return;
  }
  const rx = floatReader(x.dtype, x.data);
  const xw = wordsOf(x.dtype, x.data);
  const rg = g ? floatReader(g.dtype, g.data) : null;
  const gw = g ? wordsOf(g.dtype, g.data) : null;
  for (let j = 0; j < m; j++) {
    const k = 2 * (at + j);
    readPair(x.dtype, x.data, xw, j, rx);
    let a = outHi;
    let b = outLo;
    if (g) {
      const xl = b;
      readPair(g.dtype, g.data, gw, j, rg!);
      const gl = outLo;
      twoSum(a, outHi);
      a = outHi;
      b = outLo + xl + gl;
    }
    // (a + b) · w: a·w exactly, b·w rounded (b is already below a's last bit)
    twoProd(a, w);
    const p = outHi;
    const e = outLo + b * w;
    twoSum(acc[k]!, p);
    const hi = outHi;
    const lo = acc[k + 1]! + outLo + e;
    // renormalize so the low word stays below the high word's last bit
    if (lo === 0) {
      // no low part (this also keeps the sign of a zero: -0 + -0 is -0)
      acc[k] = hi;
      acc[k + 1] = 0;
      continue;
    }
    const s = hi + lo;
    if (!Number.isFinite(s)) {
      // infinities and NaN: the plain sum says it all
      acc[k] = acc[k]! + p;
      acc[k + 1] = 0;
      continue;
    }
    acc[k] = s;
    acc[k + 1] = lo - (s - hi);
  }
}

/** A total weight, exact as a double-double (a weight like 1e-6 has no exact sum in float64). */
export interface Weight {
  hi: number;
  lo: number;
}

/** The exact sum of `weights` (finite, ≥ 0) as a double-double. */
export function totalWeight(weights: readonly number[]): Weight {
  let hi = 0;
  let lo = 0;
  for (const w of weights) {
    twoSum(hi, w);
    lo += outLo;
    const s = outHi + lo;
    lo -= s - outHi;
    hi = s;
  }
  return { hi, lo };
}

/** The double-double quotient (hi + lo) / (w.hi + w.lo), as outHi + outLo (normalized). */
function ddDiv(hi: number, lo: number, w: Weight): void {
  const q1 = hi / w.hi;
  if (!Number.isFinite(q1)) {
    outHi = q1;
    outLo = 0;
    return;
  }
  twoProd(q1, w.hi);
  const r = hi - outHi - outLo + lo - q1 * w.lo;
  const q2 = r / w.hi;
  if (q2 === 0) {
    // exact (and a zero keeps its sign)
    outHi = q1;
    outLo = 0;
    return;
  }
  const s = q1 + q2;
  outHi = s;
  outLo = q2 - (s - q1);
}

/** The integer nearest outHi + outLo (ties to even), clamped to [min, max]. */
function pairToBigInt(min: bigint, max: bigint): bigint {
  if (Number.isNaN(outHi)) return 0n;
  if (outHi >= 9.3e18) return max;
  if (outHi <= -9.3e18) return min;
  const h = Math.floor(outHi);
  const f = outHi - h + outLo;
  const t = Math.floor(f);
  const r = f - t;
  let n = BigInt(h) + BigInt(t);
  if (r > 0.5 || (r === 0.5 && (n & 1n) === 1n)) n += 1n;
  return n < min ? min : n > max ? max : n;
}

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

/**
 * Writes out[o + j] for j < m: the mean acc[at + j] / weight in `dtype` (weight > 0), by the rule above.
 */
export function finishInto(
  acc: Float64Array,
  at: number,
  width: 1 | 2,
  weight: Weight,
  dtype: DType,
  out: TypedArray,
  o: number,
  m: number,
): void {
  const w = weight.hi + weight.lo;
  if (width === 2) {
    for (let j = 0; j < m; j++) {
      const k = 2 * (at + j);
      ddDiv(acc[k]!, acc[k + 1]!, weight);
      if (dtype === 'F64') (out as Float64Array)[o + j] = outHi;
      else (out as BigInt64Array)[o + j] = pairToBigInt(I64_MIN, I64_MAX);
    }
    return;
  }
  switch (dtype) {
    case 'F32': {
      // a float64 product by 1/w is far below float32's last bit, so rounding to float32 is unaffected
      const inv = 1 / w;
      const d = out as Float32Array;
      for (let j = 0; j < m; j++) d[o + j] = acc[at + j]! * inv;
      return;
    }
    case 'F16':
    case 'BF16': {
      const inv = 1 / w;
      const enc = dtype === 'F16' ? f64ToF16 : f64ToBf16;
      const d = out as Uint16Array;
      for (let j = 0; j < m; j++) d[o + j] = enc(acc[at + j]! * inv);
      return;
    }
    case 'BOOL': {
      const d = out as Uint8Array;
      for (let j = 0; j < m; j++) d[o + j] = acc[at + j]! / w >= 0.5 ? 1 : 0;
      return;
    }
    case 'I32':
    case 'I16':
    case 'I8':
    case 'U8': {
      const [min, max] = INT_RANGE[dtype];
      const d = out as Int32Array;
      for (let j = 0; j < m; j++) d[o + j] = roundClamp(acc[at + j]! / w, min, max);
      return;
    }
    default:
      throw new Error(`${dtype} tensors are accumulated in double-double`);
  }
}
