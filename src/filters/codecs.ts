/**
 * The number formats of message quantization, one block at a time: 16-bit floats (float16,
 * bfloat16) element by element, and blockwise formats with one float32 scale (the block's absmax)
 * per block: 8-bit (int8, round(x / absmax · 127)) and 4-bit (NF4, the normal-float levels of
 * QLoRA, Dettmers et al. 2023; FP4, E2M1 levels {0, 0.5, 1, 1.5, 2, 3, 4, 6} / 6).
 *
 * A blockwise tensor travels as U8 bytes, each block a record: absmax (f32, little-endian), then
 * the block's codes (8-bit: one byte each; 4-bit: two per byte, the first in the low nibble). The
 * scale sits in front of its codes so both ends stream: no side needs more than one block.
 */
import { type DType, viewAs } from '../core/dtypes.ts';

export type BlockFormat = 'int8' | 'nf4' | 'fp4';
export type HalfFormat = 'float16' | 'bfloat16';
export type QuantFormat = HalfFormat | BlockFormat;

export class QuantizeError extends Error {
  override readonly name = 'QuantizeError';
}

/** NF4 levels (bitsandbytes' `create_normal_map`, as used by QLoRA), ascending. */
export const NF4_LEVELS = Float32Array.from([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
  0.7229568362236023, 1.0,
]);
/** FP4 (E2M1) levels over 6, ascending; zero twice (−0, +0) so there are 16 codes. */
export const FP4_LEVELS = Float32Array.from([-6, -4, -3, -2, -1.5, -1, -0.5, -0, 0, 0.5, 1, 1.5, 2, 3, 4, 6].map((v) => v / 6));

function midpoints(levels: Float32Array): Float64Array {
  const m = new Float64Array(15);
  for (let i = 0; i < 15; i++) m[i] = (levels[i]! + levels[i + 1]!) / 2;
  return m;
}
const NF4_MIDS = midpoints(NF4_LEVELS);
const FP4_MIDS = midpoints(FP4_LEVELS);

/** The largest error of a 4-bit code relative to the block's absmax: half the widest gap between levels. */
export function maxRelativeError(format: BlockFormat): number {
  if (format === 'int8') return 0.5 / 127;
  const levels = format === 'nf4' ? NF4_LEVELS : FP4_LEVELS;
  let gap = 0;
  for (let i = 0; i < 15; i++) gap = Math.max(gap, levels[i + 1]! - levels[i]!);
  return gap / 2;
}

export function bitsOf(format: QuantFormat): 16 | 8 | 4 {
  return format === 'float16' || format === 'bfloat16' ? 16 : format === 'int8' ? 8 : 4;
}

/** Bytes of the codes of a block of `len` elements (without its 4-byte scale). */
export function codeBytes(format: BlockFormat, len: number): number {
  return format === 'int8' ? len : Math.ceil(len / 2);
}

/** Bytes a tensor of n elements takes in a blockwise format. */
export function encodedSize(format: BlockFormat, n: number, blockSize: number): number {
  if (n === 0) return 0;
  const blocks = Math.ceil(n / blockSize);
  const last = n - (blocks - 1) * blockSize;
  return blocks * 4 + (blocks - 1) * codeBytes(format, blockSize) + codeBytes(format, last);
}

// ---- 16-bit conversions, whole arrays -----------------------------------------------------------

const F16_TABLE = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    t[h] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
  }
  return t;
})();

/** float32 bits → half bits, round to nearest even (the same rounding as dtypes.f32ToF16, on a whole array). */
export function f32ToF16Array(src: Float32Array, dst: Uint16Array): void {
  const x32 = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < x32.length; i++) {
    const x = x32[i]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      dst[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    const e = exp - 112; // exp - 127 + 15
    if (e >= 31) {
      dst[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        dst[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      let r = mant >>> shift;
      const rem = mant & ((1 << shift) - 1);
      const half = 1 << (shift - 1);
      if (rem > half || (rem === half && r & 1)) r++;
      dst[i] = sign | r;
      continue;
    }
    let r = (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && r & 1)) r++;
    dst[i] = sign | r;
  }
}

export function f16ToF32Array(src: Uint16Array, dst: Float32Array): void {
  for (let i = 0; i < src.length; i++) dst[i] = F16_TABLE[src[i]!]!;
}

/** float32 → bfloat16 bits, round to nearest even, NaN kept NaN. */
export function f32ToBf16Array(src: Float32Array, dst: Uint16Array): void {
  const x32 = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < x32.length; i++) {
    const x = x32[i]!;
    if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) dst[i] = ((x >>> 16) | 0x40) & 0xffff;
    else dst[i] = ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
  }
}

export function bf16ToF32Array(src: Uint16Array, dst: Float32Array): void {
  const d32 = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) d32[i] = src[i]! << 16;
}

/** A float tensor's bytes as float32 values (a view for F32, a converted copy otherwise). */
export function toFloat32(dtype: DType, bytes: Uint8Array): Float32Array {
  switch (dtype) {
    case 'F32':
      return viewAs('F32', bytes);
    case 'F64':
      return Float32Array.from(viewAs('F64', bytes));
    case 'F16': {
      const src = viewAs('F16', bytes);
      const out = new Float32Array(src.length);
      f16ToF32Array(src, out);
      return out;
    }
    case 'BF16': {
      const src = viewAs('BF16', bytes);
      const out = new Float32Array(src.length);
      bf16ToF32Array(src, out);
      return out;
    }
    default:
      throw new QuantizeError(`${dtype} is not a floating type`);
  }
}

/** float32 values as a tensor of `dtype`'s bytes (new memory). */
export function fromFloat32(dtype: DType, v: Float32Array): Uint8Array {
  switch (dtype) {
    case 'F32':
      return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    case 'F64': {
      const out = Float64Array.from(v);
      return new Uint8Array(out.buffer);
    }
    case 'F16':
    case 'BF16': {
      const out = new Uint16Array(v.length);
      (dtype === 'F16' ? f32ToF16Array : f32ToBf16Array)(v, out);
      return new Uint8Array(out.buffer);
    }
    default:
      throw new QuantizeError(`${dtype} is not a floating type`);
  }
}

// ---- blocks --------------------------------------------------------------------------------------

const SCALE = new Float32Array(1);
const SCALE_BYTES = new Uint8Array(SCALE.buffer);

/**
 * Encodes `len` values from src[start] as one record at out[o]; returns the bytes written.
 * Throws on a non-finite value: it would poison the aggregate, and no scale can represent it.
 */
export function encodeBlock(format: BlockFormat, src: Float32Array, start: number, len: number, out: Uint8Array, o: number): number {
  let absmax = 0;
  let bad = false;
  const end = start + len;
  for (let i = start; i < end; i++) {
    const x = src[i]!;
    const a = x < 0 ? -x : x;
    if (a > absmax) absmax = a;
    else if (!(a <= absmax)) bad = true;
  }
  if (bad || absmax === Infinity) throw new QuantizeError('a non-finite value (NaN or ±Infinity) cannot be quantized');
  // absmax is a float32 already (a value of src), so the scale read back is exactly the one used here
  SCALE[0] = absmax;
  out[o] = SCALE_BYTES[0]!;
  out[o + 1] = SCALE_BYTES[1]!;
  out[o + 2] = SCALE_BYTES[2]!;
  out[o + 3] = SCALE_BYTES[3]!;
  const inv = absmax === 0 ? 0 : 1 / absmax;
  let p = o + 4;
  if (format === 'int8') {
    const k = 127 * inv;
    for (let i = start; i < end; i++) out[p++] = Math.round(src[i]! * k) & 255;
    return 4 + len;
  }
  const M = format === 'nf4' ? NF4_MIDS : FP4_MIDS;
  const m7 = M[7]!;
  let i = start;
  for (; i + 1 < end; i += 2) {
    out[p++] = code4(src[i]! * inv, M, m7) | (code4(src[i + 1]! * inv, M, m7) << 4);
  }
  if (i < end) out[p++] = code4(src[i]! * inv, M, m7);
  return p - o;
}

/** The index of the level nearest v (levels ascending, M their 15 midpoints): four comparisons. */
function code4(v: number, M: Float64Array, m7: number): number {
  let c = v > m7 ? 8 : 0;
  c += v > M[c + 3]! ? 4 : 0;
  c += v > M[c + 1]! ? 2 : 0;
  return c + (v > M[c]! ? 1 : 0);
}

/** Decodes one record at bytes[o] into `len` values at dst[d]; returns the bytes read. */
export function decodeBlock(format: BlockFormat, bytes: Uint8Array, o: number, len: number, dst: Float32Array, d: number): number {
  SCALE_BYTES[0] = bytes[o]!;
  SCALE_BYTES[1] = bytes[o + 1]!;
  SCALE_BYTES[2] = bytes[o + 2]!;
  SCALE_BYTES[3] = bytes[o + 3]!;
  const absmax = SCALE[0]!;
  if (!Number.isFinite(absmax) || absmax < 0) throw new QuantizeError(`a block scale of ${absmax}: not a quantized block`);
  const p = o + 4;
  if (format === 'int8') {
    const k = absmax / 127;
    for (let i = 0; i < len; i++) dst[d + i] = ((bytes[p + i]! << 24) >> 24) * k;
    return 4 + len;
  }
  const L = format === 'nf4' ? NF4_LEVELS : FP4_LEVELS;
  const n = len >> 1;
  for (let j = 0; j < n; j++) {
    const b = bytes[p + j]!;
    dst[d + 2 * j] = L[b & 15]! * absmax;
    dst[d + 2 * j + 1] = L[b >> 4]! * absmax;
  }
  if (len & 1) dst[d + len - 1] = L[bytes[p + n]! & 15]! * absmax;
  return 4 + ((len + 1) >> 1);
}
