/**
 * Element types, named exactly as in the safetensors format so that headers
 * need no translation. 16-bit floats are kept as raw bits (Uint16Array):
 * JavaScript has no native f16/bf16 arrays in Node 20, and converting at the
 * I/O boundary only would silently double memory.
 */
export const DTYPES = ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL'] as const;
export type DType = (typeof DTYPES)[number];

export type TypedArray = Float64Array | Float32Array | Uint16Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array;

/** Array type that stores each dtype. */
export interface DTypeArrayMap {
  F64: Float64Array;
  F32: Float32Array;
  F16: Uint16Array;
  BF16: Uint16Array;
  I64: BigInt64Array;
  I32: Int32Array;
  I16: Int16Array;
  I8: Int8Array;
  U8: Uint8Array;
  BOOL: Uint8Array;
}

const SIZES: Record<DType, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

export function isDType(s: string): s is DType {
  return (DTYPES as readonly string[]).includes(s);
}

export function dtypeSize(d: DType): number {
  return SIZES[d];
}

/** Floating types. Integer and bool tensors are aggregated by their own rule (src/aggregators/exact-sum.ts, docs/aggregation.md). */
export function isFloatDType(d: DType): boolean {
  return d === 'F64' || d === 'F32' || d === 'F16' || d === 'BF16';
}

/** A typed-array view over `bytes` (no copy when aligned; copies otherwise). */
export function viewAs<D extends DType>(dtype: D, bytes: Uint8Array): DTypeArrayMap[D] {
  const size = SIZES[dtype];
  if (bytes.byteLength % size !== 0) {
    throw new Error(`byte length ${bytes.byteLength} is not a multiple of ${dtype} element size ${size}`);
  }
  // new Uint8Array(bytes) copies; bytes.slice() would not when bytes is a Node Buffer (Buffer#slice is a view)
  const src = bytes.byteOffset % size === 0 ? bytes : new Uint8Array(bytes);
  const n = src.byteLength / size;
  const b = src.buffer;
  const o = src.byteOffset;
  switch (dtype) {
    case 'F64':
      return new Float64Array(b, o, n) as DTypeArrayMap[D];
    case 'F32':
      return new Float32Array(b, o, n) as DTypeArrayMap[D];
    case 'F16':
    case 'BF16':
      return new Uint16Array(b, o, n) as DTypeArrayMap[D];
    case 'I64':
      return new BigInt64Array(b, o, n) as DTypeArrayMap[D];
    case 'I32':
      return new Int32Array(b, o, n) as DTypeArrayMap[D];
    case 'I16':
      return new Int16Array(b, o, n) as DTypeArrayMap[D];
    case 'I8':
      return new Int8Array(b, o, n) as DTypeArrayMap[D];
    case 'U8':
    case 'BOOL':
      return new Uint8Array(b, o, n) as DTypeArrayMap[D];
  }
  throw new Error(`unknown dtype ${String(dtype)}`);
}

export function allocate<D extends DType>(dtype: D, length: number): DTypeArrayMap[D] {
  return viewAs(dtype, new Uint8Array(length * SIZES[dtype]));
}

// ---- 16-bit float conversions -------------------------------------------------

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE half (raw bits) → number. */
export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** number → IEEE half raw bits, round to nearest even, overflow to infinity. */
export function f32ToF16(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let r = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  let r = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) r++;
  return sign | r;
}

/** bfloat16 raw bits → number (exact). */
export function bf16ToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0]!;
}

/** number → bfloat16 raw bits, round to nearest even; NaN stays NaN. */
export function f32ToBf16(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x40) & 0xffff;
  const lsb = (x >>> 16) & 1;
  return ((x + 0x7fff + lsb) >>> 16) & 0xffff;
}

/** number → float32 with round-to-odd: rounding that to 16 bits afterwards is the same as rounding the number once. */
function toF32Odd(v: number): number {
  f32[0] = v;
  if (f32[0] === v || Number.isNaN(v)) return f32[0];
  const x = u32[0]!;
  if ((x & 1) === 0) u32[0] = Math.abs(v) > Math.abs(f32[0]) ? x + 1 : x - 1;
  return f32[0];
}

/** float64 → IEEE half raw bits, rounded once to nearest (ties to even). */
export function f64ToF16(v: number): number {
  return f32ToF16(toF32Odd(v));
}

/** float64 → bfloat16 raw bits, rounded once to nearest (ties to even). */
export function f64ToBf16(v: number): number {
  return f32ToBf16(toF32Odd(v));
}

/** The range of each integer dtype held in a JavaScript number. */
export const INT_RANGE = { I32: [-2147483648, 2147483647], I16: [-32768, 32767], I8: [-128, 127], U8: [0, 255] } as const;

/** The integer nearest v (ties to even), clamped to [min, max]; NaN → 0. */
export function roundClamp(v: number, min: number, max: number): number {
  if (!(v > min)) return Number.isNaN(v) ? 0 : min;
  if (v >= max) return max;
  let r = Math.round(v);
  if (r - v === 0.5 && r % 2 !== 0) r -= 1;
  return r;
}

const I64_LIMIT = 2 ** 63;

/** The int64 nearest v (ties to even), clamped to the int64 range; NaN → 0. */
export function roundClampI64(v: number): bigint {
  if (Number.isNaN(v)) return 0n;
  if (v >= I64_LIMIT) return 2n ** 63n - 1n;
  if (v <= -I64_LIMIT) return -(2n ** 63n);
  return BigInt(roundClamp(v, -I64_LIMIT, I64_LIMIT));
}

/** Reads element i of any tensor's storage as a number (int64 beyond 2^53 rounded). */
export function floatReader(dtype: DType, data: TypedArray): (i: number) => number {
  switch (dtype) {
    case 'F16':
      return (i) => f16ToF32((data as Uint16Array)[i]!);
    case 'BF16':
      return (i) => bf16ToF32((data as Uint16Array)[i]!);
    case 'I64':
      return (i) => Number((data as BigInt64Array)[i]!);
    default:
      return (i) => (data as Float32Array)[i]!;
  }
}

/**
 * Writes a number into element i of a tensor's storage: floats rounded to nearest, integers to
 * the nearest integer (ties to even) clamped to the dtype's range (never wrapped), BOOL true from 0.5.
 */
export function floatWriter(dtype: DType, data: TypedArray): (i: number, v: number) => void {
  switch (dtype) {
    case 'F16':
      return (i, v) => {
        (data as Uint16Array)[i] = f64ToF16(v);
      };
    case 'BF16':
      return (i, v) => {
        (data as Uint16Array)[i] = f64ToBf16(v);
      };
    case 'I64':
      return (i, v) => {
        (data as BigInt64Array)[i] = roundClampI64(v);
      };
    case 'I32':
    case 'I16':
    case 'I8':
    case 'U8': {
      const [min, max] = INT_RANGE[dtype];
      return (i, v) => {
        (data as Int32Array)[i] = roundClamp(v, min, max);
      };
    }
    case 'BOOL':
      return (i, v) => {
        (data as Uint8Array)[i] = v >= 0.5 ? 1 : 0;
      };
    default:
      return (i, v) => {
        (data as Float32Array)[i] = v;
      };
  }
}
