/**
 * Quantization as a transform of the tensor stream: a float tensor's pieces are re-encoded as
 * they pass (16-bit: element by element; blockwise: a block at a time, at most one block carried
 * over between pieces), so a model of any size quantizes and dequantizes in bounded memory.
 *
 * What was done travels in the stream's own metadata (`flotilla.quantized`: tensor → original
 * dtype, shape, format, block size), so a receiver dequantizes whatever arrives without knowing
 * the sender's filters (a job's, or a site's own privacy policy). Integer, bool, empty and
 * excluded tensors pass unchanged.
 */
import { z } from 'zod';
import { type DType, isFloatDType } from '../core/dtypes.ts';
import type { TensorInfo } from '../core/safetensors-header.ts';
import { byteLengthOf, numel } from '../core/tensor.ts';
import type { StreamHeader, TensorPiece, TensorStream } from '../core/tensor-stream.ts';
import { describeZodError } from '../util/zod-error.ts';
import {
  type BlockFormat,
  type QuantFormat,
  QuantizeError,
  codeBytes,
  decodeBlock,
  encodeBlock,
  encodedSize,
  fromFloat32,
  toFloat32,
} from './codecs.ts';

export const QUANTIZED_KEY = 'flotilla.quantized';

const FloatDType = z.enum(['F64', 'F32', 'F16', 'BF16']);
const Entry = z.strictObject({
  f: z.enum(['float16', 'bfloat16', 'int8', 'nf4', 'fp4']),
  d: FloatDType,
  s: z.array(z.number().int().min(0)),
  b: z
    .number()
    .int()
    .min(2)
    .max(2 ** 24)
    .optional(),
});
type Entry = z.infer<typeof Entry>;
const Entries = z.record(z.string(), Entry);

export interface QuantizeOptions {
  format: QuantFormat;
  /** elements per block (blockwise formats) */
  blockSize: number;
  /** tensors left as they are (excluded by name) */
  skip?: (name: string) => boolean;
}

function readEntries(metadata: Readonly<Record<string, string>>): Record<string, Entry> {
  const raw = metadata[QUANTIZED_KEY];
  if (raw === undefined) return {};
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    throw new QuantizeError(`metadata ${QUANTIZED_KEY} is not JSON`);
  }
  const r = Entries.safeParse(json);
  if (!r.success) throw new QuantizeError(`metadata ${QUANTIZED_KEY}: ${describeZodError(r.error)}`);
  return r.data;
}

const isBlock = (f: QuantFormat): f is BlockFormat => f === 'int8' || f === 'nf4' || f === 'fp4';

/** The quantized stream: its header is known at once, its pieces are encoded as the input's arrive. */
export function quantizeStream(input: TensorStream, o: QuantizeOptions): TensorStream {
  const previous = readEntries(input.header.metadata);
  const entries: Record<string, Entry> = { ...previous };
  const plan: (Entry | null)[] = [];
  const tensors: TensorInfo[] = input.header.tensors.map((t) => {
    const n = numel(t.shape);
    const target: DType | null = o.format === 'float16' ? 'F16' : o.format === 'bfloat16' ? 'BF16' : null;
    if (!isFloatDType(t.dtype) || n === 0 || o.skip?.(t.name) || t.dtype === target) {
      plan.push(null);
      return t;
    }
    // a tensor quantized already (a 16-bit format before a 4-bit one): record its first dtype and shape
    const before = previous[t.name];
    const e: Entry = {
      f: o.format,
      d: before?.d ?? (t.dtype as Entry['d']),
      s: before?.s ?? [...t.shape],
      ...(isBlock(o.format) && { b: o.blockSize }),
    };
    entries[t.name] = e;
    plan.push(e);
    return target
      ? { name: t.name, dtype: target, shape: t.shape }
      : { name: t.name, dtype: 'U8', shape: [encodedSize(o.format as BlockFormat, n, o.blockSize)] };
  });
  const metadata = Object.keys(entries).length
    ? { ...input.header.metadata, [QUANTIZED_KEY]: JSON.stringify(entries) }
    : input.header.metadata;
  const header: StreamHeader = { tensors, metadata };
  return {
    header,
    async *pieces() {
      let enc: BlockEncoder | null = null;
      let outOffset = 0;
      for await (const p of input.pieces()) {
        const e = plan[p.index];
        const out = tensors[p.index]!;
        if (!e) {
          yield p;
          continue;
        }
        if (p.offset === 0) outOffset = 0;
        const total = byteLengthOf(out.dtype, out.shape);
        let bytes: Uint8Array;
        try {
          if (!isBlock(e.f)) bytes = fromFloat32(out.dtype, toFloat32(p.dtype, p.bytes));
          else {
            if (p.offset === 0 || !enc) enc = new BlockEncoder(e.f, o.blockSize);
            bytes = enc.push(toFloat32(p.dtype, p.bytes), p.offset + p.bytes.byteLength === p.tensorBytes);
          }
        } catch (err) {
          throw new QuantizeError(`tensor "${p.name}": ${(err as Error).message}`);
        }
        if (bytes.byteLength === 0) continue;
        yield { index: p.index, name: p.name, dtype: out.dtype, shape: out.shape, offset: outOffset, bytes, tensorBytes: total };
        outOffset += bytes.byteLength;
      }
    },
  };
}

/** Encodes a tensor's values block by block as they come, carrying the last partial block. */
class BlockEncoder {
  private readonly carry: Float32Array;
  private carried = 0;
  constructor(
    private readonly format: BlockFormat,
    private readonly block: number,
  ) {
    this.carry = new Float32Array(block);
  }
  push(v: Float32Array, last: boolean): Uint8Array {
    const B = this.block;
    const full = Math.floor((this.carried + v.length) / B);
    const rest = (this.carried + v.length) % B;
    const records = full + (last && rest > 0 ? 1 : 0);
    const size = records === 0 ? 0 : full * (4 + codeBytes(this.format, B)) + (last && rest > 0 ? 4 + codeBytes(this.format, rest) : 0);
    const out = new Uint8Array(size);
    let o = 0;
    let i = 0;
    if (this.carried > 0) {
      const take = Math.min(B - this.carried, v.length);
      this.carry.set(v.subarray(0, take), this.carried);
      this.carried += take;
      i = take;
      if (this.carried === B) {
        o += encodeBlock(this.format, this.carry, 0, B, out, o);
        this.carried = 0;
      }
    }
    for (; i + B <= v.length; i += B) o += encodeBlock(this.format, v, i, B, out, o);
    if (i < v.length) {
      this.carry.set(v.subarray(i), this.carried);
      this.carried += v.length - i;
    }
    if (last && this.carried > 0) {
      o += encodeBlock(this.format, this.carry, 0, this.carried, out, o);
      this.carried = 0;
    }
    return out;
  }
}

/** Decodes records as their bytes come, carrying a partial record; knows each record's size from the tensor's length. */
class BlockDecoder {
  private readonly carry: Uint8Array;
  private carried = 0;
  private decoded = 0;
  constructor(
    private readonly format: BlockFormat,
    private readonly block: number,
    private readonly n: number,
  ) {
    this.carry = new Uint8Array(4 + codeBytes(format, block));
  }
  private recordAt(element: number): { len: number; bytes: number } {
    const len = Math.min(this.block, this.n - element);
    return { len, bytes: 4 + codeBytes(this.format, len) };
  }
  push(bytes: Uint8Array): Float32Array {
    // how many elements these bytes complete
    let count = 0;
    let e = this.decoded;
    let avail = this.carried + bytes.byteLength;
    while (e < this.n) {
      const r = this.recordAt(e);
      if (avail < r.bytes) break;
      avail -= r.bytes;
      count += r.len;
      e += r.len;
    }
    const out = new Float32Array(count);
    let d = 0;
    let i = 0;
    if (this.carried > 0) {
      const r = this.recordAt(this.decoded);
      const take = Math.min(r.bytes - this.carried, bytes.byteLength);
      this.carry.set(bytes.subarray(0, take), this.carried);
      this.carried += take;
      i = take;
      if (this.carried < r.bytes) return out;
      decodeBlock(this.format, this.carry, 0, r.len, out, d);
      d += r.len;
      this.decoded += r.len;
      this.carried = 0;
    }
    while (this.decoded < this.n) {
      const r = this.recordAt(this.decoded);
      if (bytes.byteLength - i < r.bytes) break;
      i += decodeBlock(this.format, bytes, i, r.len, out, d);
      d += r.len;
      this.decoded += r.len;
    }
    if (i < bytes.byteLength) {
      if (this.decoded >= this.n) throw new QuantizeError('more bytes than the quantized tensor holds');
      this.carry.set(bytes.subarray(i), 0);
      this.carried = bytes.byteLength - i;
    }
    return out;
  }
}

/**
 * Undoes quantizeStream: tensors its metadata names come back in their original dtype and shape.
 * A stream without the metadata is returned as it is. The metadata is checked against the header
 * at once (names, dtypes, sizes), so a malformed result fails before any of it is aggregated.
 */
export function dequantizeStream(input: TensorStream): TensorStream {
  const entries = readEntries(input.header.metadata);
  const names = Object.keys(entries);
  if (names.length === 0 && !(QUANTIZED_KEY in input.header.metadata)) return input;
  const byName = new Map(input.header.tensors.map((t, i) => [t.name, i]));
  for (const name of names)
    if (!byName.has(name)) throw new QuantizeError(`${QUANTIZED_KEY} names tensor "${name}", which the stream does not carry`);
  const plan: (Entry | null)[] = [];
  const tensors = input.header.tensors.map((t) => {
    const e = entries[t.name];
    if (!e) {
      plan.push(null);
      return t;
    }
    const n = numel(e.s);
    if (isBlock(e.f)) {
      if (e.b === undefined || (e.f !== 'int8' && e.b % 2 !== 0))
        throw new QuantizeError(`tensor "${t.name}": ${e.f} without a valid block size`);
      const want = encodedSize(e.f, n, e.b);
      if (t.dtype !== 'U8' || t.shape.length !== 1 || t.shape[0] !== want)
        throw new QuantizeError(
          `tensor "${t.name}": ${e.f} of ${n} elements is ${want} U8 bytes, the stream has ${t.dtype} [${t.shape.join(', ')}]`,
        );
    } else {
      const dt = e.f === 'float16' ? 'F16' : 'BF16';
      if (t.dtype !== dt || numel(t.shape) !== n)
        throw new QuantizeError(`tensor "${t.name}": ${e.f} of ${n} elements, the stream has ${t.dtype} [${t.shape.join(', ')}]`);
    }
    plan.push(e);
    return { name: t.name, dtype: e.d, shape: e.s };
  });
  const { [QUANTIZED_KEY]: _done, ...metadata } = input.header.metadata;
  return {
    header: { tensors, metadata },
    async *pieces() {
      let dec: BlockDecoder | null = null;
      let outOffset = 0;
      for await (const p of input.pieces()) {
        const e = plan[p.index];
        if (!e) {
          yield p;
          continue;
        }
        const out = tensors[p.index]!;
        const total = byteLengthOf(out.dtype, out.shape);
        if (p.offset === 0) outOffset = 0;
        let values: Float32Array;
        try {
          if (isBlock(e.f)) {
            if (p.offset === 0 || !dec) dec = new BlockDecoder(e.f, e.b!, numel(e.s));
            values = dec.push(p.bytes);
          } else values = toFloat32(p.dtype, p.bytes);
        } catch (err) {
          throw new QuantizeError(`tensor "${p.name}": ${(err as Error).message}`);
        }
        if (values.length === 0) continue;
        // values are new memory (decoded or converted), so an F32 view of them is the piece's own
        const bytes = fromFloat32(out.dtype, values);
        const piece: TensorPiece = {
          index: p.index,
          name: p.name,
          dtype: out.dtype,
          shape: out.shape,
          offset: outOffset,
          bytes,
          tensorBytes: total,
        };
        yield piece;
        outOffset += bytes.byteLength;
      }
    },
  };
}
