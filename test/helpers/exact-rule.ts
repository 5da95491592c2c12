/**
 * The exact reference for aggregation (docs/aggregation.md), shared by the property tests and the
 * PyTorch round trip: sums as BigInt (floats scaled by 2^1074, so every finite double is an
 * integer), and the check that a result is what the rule says.
 */
import assert from 'node:assert/strict';
import { type DType, bf16ToF32, f16ToF32 } from '../../src/core/dtypes.ts';

/** An element's storage value: a number, the bits of a 16-bit float, or an int64. */
export type Value = number | bigint;

const INT_BOUNDS: Partial<Record<DType, [bigint, bigint]>> = {
  I64: [-(2n ** 63n), 2n ** 63n - 1n],
  I32: [-(2n ** 31n), 2n ** 31n - 1n],
  I16: [-32768n, 32767n],
  I8: [-128n, 127n],
  U8: [0n, 255n],
  BOOL: [0n, 1n],
};

const MAX_FINITE: Partial<Record<DType, number>> = {
  F64: Number.MAX_VALUE,
  F32: 3.4028234663852886e38,
  F16: 65504,
  BF16: 3.3895313892515355e38,
};

/** x · 2^1074 as an exact integer (every finite double is a multiple of 2^-1074). */
export function scaled(x: number): bigint {
  const dv = new DataView(new ArrayBuffer(8));
  dv.setFloat64(0, x);
  const bits = dv.getBigUint64(0);
  const exp = (bits >> 52n) & 0x7ffn;
  const mant = bits & ((1n << 52n) - 1n);
  const v = exp === 0n ? mant : (mant | (1n << 52n)) << (exp - 1n);
  return bits >> 63n ? -v : v;
}

export const asNumber = (d: DType, v: Value): number =>
  d === 'F16' ? f16ToF32(v as number) : d === 'BF16' ? bf16ToF32(v as number) : Number(v);
export const isFloat = (d: DType): boolean => d === 'F64' || d === 'F32' || d === 'F16' || d === 'BF16';
/** An element's value as an exact integer: floats scaled by 2^1074, integers as they are. */
export const exactOf = (d: DType, v: Value): bigint => (isFloat(d) ? scaled(asNumber(d, v)) : BigInt(v));

/** The neighbours below and above of a float of dtype d given by its storage value, as numbers (±Infinity past the end). */
function neighbours(d: DType, raw: Value): [number, number] {
  const x = asNumber(d, raw);
  const width = d === 'F64' ? 64 : d === 'F32' ? 32 : 16;
  const sign = 1n << BigInt(width - 1);
  let bits: bigint;
  if (d === 'F64') bits = new BigUint64Array(new Float64Array([x]).buffer)[0]!;
  else if (d === 'F32') bits = BigInt(new Uint32Array(new Float32Array([x]).buffer)[0]!);
  else bits = BigInt(raw);
  const decode = (b: bigint): number => {
    if (d === 'F64') return new Float64Array(new BigUint64Array([b]).buffer)[0]!;
    if (d === 'F32') return new Float32Array(new Uint32Array([Number(b)]).buffer)[0]!;
    return d === 'F16' ? f16ToF32(Number(b)) : bf16ToF32(Number(b));
  };
  // the bit patterns of one sign are ordered by magnitude
  if (x === 0) return [decode(sign + 1n), decode(1n)];
  return x > 0 ? [decode(bits - 1n), decode(bits + 1n)] : [decode(bits + 1n), decode(bits - 1n)];
}

/** Asserts `got` (storage value of dtype d) is what the rule says for exact sum S and total weight W (> 0). */
export function assertRule(d: DType, got: Value, S: bigint, W: bigint, what: string): void {
  if (!isFloat(d)) {
    const [min, max] = INT_BOUNDS[d]!;
    let want: bigint;
    if (d === 'BOOL') want = 2n * S >= W ? 1n : 0n;
    else {
      // nearest integer to S/W, ties to even
      const q = S >= 0n ? S / W : -((-S + W - 1n) / W); // floor
      const r2 = 2n * (S - q * W);
      want = r2 > W || (r2 === W && (q & 1n) === 1n) ? q + 1n : q;
      want = want < min ? min : want > max ? max : want;
    }
    assert.equal(BigInt(got), want, `${what}: ${got} vs ${want} (S=${S}, W=${W})`);
    return;
  }
  const g = asNumber(d, got);
  const slack0 = (S < 0n ? -S : S) >> (d === 'F64' ? 100n : 45n);
  if (!Number.isFinite(g)) {
    // overflow: the mean is at least halfway from the largest finite value to the next power of two
    const max = MAX_FINITE[d]!;
    const [prev] = neighbours(d, d === 'F16' || d === 'BF16' ? (d === 'F16' ? 0x7bff : 0x7f7f) : max);
    const twoMid = 3n * scaled(max) - scaled(prev);
    assert.ok(
      !Number.isNaN(g) && (g > 0 ? 2n * S >= twoMid * W - 2n * slack0 : -2n * S >= twoMid * W - 2n * slack0),
      `${what}: ${g} for a mean that fits ${d}`,
    );
    return;
  }
  const [down, up] = neighbours(d, got);
  // S/W must lie between the midpoints to the neighbours (± a relative 2^-45 for the float64 sum of 32-bit and smaller floats)
  const slack = (S < 0n ? -S : S) >> (d === 'F64' ? 100n : 45n);
  const G = scaled(g) * 2n;
  const lo = Number.isFinite(down) ? G + (scaled(down) - scaled(g)) : null; // 2·midpoint
  const hi = Number.isFinite(up) ? G + (scaled(up) - scaled(g)) : null;
  const twoS = 2n * S;
  assert.ok(lo === null || twoS >= lo * W - 2n * slack, `${what}: ${g} is above the nearest value to the mean (${d})`);
  assert.ok(hi === null || twoS <= hi * W + 2n * slack, `${what}: ${g} is below the nearest value to the mean (${d})`);
}
