/**
 * A model is a stream of tensors (docs/architecture.md): a header that names
 * every tensor first, then pieces of tensor bytes in header order. Every
 * producer (memory, file, socket) and consumer (trainer, aggregator, file)
 * meets at this type, so nothing in the server path needs the whole model.
 *
 * The byte encoding of a stream is exactly a safetensors file, so a model on
 * the wire and a model on disk are the same bytes.
 */
import { type DType, dtypeSize, viewAs } from './dtypes.ts';
import {
  SafetensorsError,
  type SafetensorsHeader,
  type TensorInfo,
  buildHeader,
  parseHeader,
  readHeaderLength,
} from './safetensors-header.ts';
import { type Tensor, type TensorDict, byteLengthOf, tensorBytes } from './tensor.ts';

export interface StreamHeader {
  readonly tensors: readonly TensorInfo[];
  readonly metadata: Readonly<Record<string, string>>;
}

/** Part of one tensor's bytes. Pieces of a tensor arrive in order and are element-aligned. */
export interface TensorPiece {
  /** position of the tensor in the header */
  readonly index: number;
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** byte offset of `bytes` within the tensor */
  readonly offset: number;
  /**
   * the piece's bytes, which stay as they are: a producer never writes again into a buffer it
   * yielded, so consumers may hold on to it (a Channel keeps it until acknowledged, a file
   * writer until the disk has it)
   */
  readonly bytes: Uint8Array;
  /** total bytes of the tensor */
  readonly tensorBytes: number;
}

/** Readable once. */
export interface TensorStream {
  readonly header: StreamHeader;
  pieces(): AsyncIterable<TensorPiece>;
}

export const DEFAULT_CHUNK_BYTES = 1 << 20;

function alignedChunk(chunkBytes: number, dtype: DType): number {
  const s = dtypeSize(dtype);
  return Math.max(s, Math.floor(chunkBytes / s) * s);
}

/** Splits one tensor's bytes into element-aligned pieces of at most chunkBytes. */
export function* splitTensor(
  index: number,
  name: string,
  t: Pick<Tensor, 'dtype' | 'shape'>,
  bytes: Uint8Array,
  chunkBytes: number,
  base = 0,
  total = bytes.byteLength,
): Generator<TensorPiece> {
  const step = alignedChunk(chunkBytes, t.dtype);
  if (bytes.byteLength === 0 && base === 0) {
    yield { index, name, dtype: t.dtype, shape: t.shape, offset: 0, bytes, tensorBytes: total };
    return;
  }
  for (let o = 0; o < bytes.byteLength; o += step) {
    yield {
      index,
      name,
      dtype: t.dtype,
      shape: t.shape,
      offset: base + o,
      bytes: bytes.subarray(o, Math.min(o + step, bytes.byteLength)),
      tensorBytes: total,
    };
  }
}

/** An in-memory dict as a stream (pieces are views, no copy). */
export function dictToStream(dict: TensorDict, opts: { chunkBytes?: number; metadata?: Record<string, string> } = {}): TensorStream {
  const chunk = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  const entries = [...dict];
  return {
    header: { tensors: entries.map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape })), metadata: opts.metadata ?? {} },
    async *pieces() {
      for (let i = 0; i < entries.length; i++) {
        const [name, t] = entries[i]!;
        yield* splitTensor(i, name, t, tensorBytes(t), chunk);
      }
    },
  };
}

/**
 * Tensors up to this size get their whole buffer when their first byte arrives; larger ones grow
 * (doubling, capped at the declared size) as bytes arrive, so a header declaring gigabytes that
 * never come cannot make this side reserve them.
 */
const EAGER_TENSOR_BYTES = 64 << 20;

/** Materializes a stream (for trainers that want arrays). Checks every tensor arrives whole. */
export async function streamToDict(stream: TensorStream): Promise<TensorDict> {
  const out: TensorDict = new Map();
  const declared = stream.header.tensors.map((t) => byteLengthOf(t.dtype, t.shape));
  // allocated on each tensor's first piece, never from the header alone
  const buffers: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(declared.length);
  const filled = new Array<number>(declared.length).fill(0);
  for await (const p of stream.pieces()) {
    const total = declared[p.index];
    if (total === undefined || p.offset !== filled[p.index])
      throw new Error(`tensor stream out of order at "${p.name}" offset ${p.offset}`);
    const end = p.offset + p.bytes.byteLength;
    if (end > total) throw new Error(`tensor "${p.name}": ${end} bytes, its header declares ${total}`);
    let buf = buffers[p.index];
    if (!buf || buf.byteLength < end) {
      const grown = new Uint8Array(
        total <= EAGER_TENSOR_BYTES ? total : Math.min(total, Math.max(EAGER_TENSOR_BYTES, end, 2 * (buf?.byteLength ?? 0))),
      );
      if (buf) grown.set(buf.subarray(0, p.offset));
      buf = buffers[p.index] = grown;
    }
    buf.set(p.bytes, p.offset);
    filled[p.index] = end;
  }
  stream.header.tensors.forEach((t, i) => {
    if (filled[i] !== declared[i]) throw new Error(`tensor "${t.name}" incomplete: ${filled[i]} of ${declared[i]} bytes`);
    const buf = buffers[i] ?? new Uint8Array(0);
    out.set(t.name, { dtype: t.dtype, shape: [...t.shape], data: viewAs(t.dtype, buf) });
  });
  return out;
}

/** A stream's bytes in safetensors format: header first, then tensor data in order. */
/** Size of a stream encoded by encodeStream (header and data), known before any byte is read: for progress and ETA. */
export function encodedBytes(header: StreamHeader): number {
  const built = buildHeader(header.tensors, header.metadata);
  return built.bytes.byteLength + built.header.dataBytes;
}

export async function* encodeStream(stream: TensorStream): AsyncGenerator<Uint8Array> {
  const { bytes } = buildHeader(stream.header.tensors, stream.header.metadata);
  yield bytes;
  for await (const p of stream.pieces()) if (p.bytes.byteLength > 0) yield p.bytes;
}

/** Pulls exactly-sized slices out of a chunked byte source without concatenating everything. */
class ByteReader {
  private buf: Uint8Array = new Uint8Array(0);
  private readonly it: AsyncIterator<Uint8Array>;
  constructor(src: AsyncIterable<Uint8Array>) {
    this.it = src[Symbol.asyncIterator]();
  }
  /** Exactly n bytes; copies only when they span source chunks, and then only those n bytes. */
  async take(n: number): Promise<Uint8Array> {
    if (this.buf.byteLength >= n) {
      const out = this.buf.subarray(0, n);
      this.buf = this.buf.subarray(n);
      return out;
    }
    const out = new Uint8Array(n);
    let have = this.buf.byteLength;
    out.set(this.buf, 0);
    this.buf = new Uint8Array(0);
    while (have < n) {
      const r = await this.it.next();
      if (r.done) throw new SafetensorsError(`stream ended early: needed ${n} bytes, had ${have}`);
      const part = r.value.subarray(0, n - have);
      out.set(part, have);
      have += part.byteLength;
      this.buf = r.value.subarray(part.byteLength);
    }
    return out;
  }
  /** Puts bytes back in front (they were read too far). */
  unshift(bytes: Uint8Array): void {
    this.buf = this.buf.byteLength === 0 ? bytes : concat(bytes, this.buf);
  }
  /** Up to max bytes, at least one (whatever the source chunk holds). */
  async takeSome(max: number): Promise<Uint8Array> {
    if (this.buf.byteLength === 0) {
      const r = await this.it.next();
      if (r.done) throw new SafetensorsError('stream ended before all tensor data arrived');
      this.buf = r.value;
    }
    const out = this.buf.subarray(0, Math.min(max, this.buf.byteLength));
    this.buf = this.buf.subarray(out.byteLength);
    return out;
  }
  async expectEnd(): Promise<void> {
    if (this.buf.byteLength > 0) throw new SafetensorsError(`${this.buf.byteLength} unexpected bytes after the last tensor`);
    const r = await this.it.next();
    if (!r.done && r.value.byteLength > 0) throw new SafetensorsError('unexpected bytes after the last tensor');
    if (!r.done) await this.expectEnd();
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const c = new Uint8Array(a.byteLength + b.byteLength);
  c.set(a, 0);
  c.set(b, a.byteLength);
  return c;
}

export interface DecodeLimits {
  /** refuse a stream declaring more than this many data bytes */
  maxBytes?: number;
  chunkBytes?: number;
}

/**
 * Parses safetensors bytes arriving in chunks into a tensor stream: reads and
 * validates the header up front, then yields element-aligned pieces as bytes
 * arrive. Memory held: one source chunk plus at most one element carried over.
 */
export async function decodeStream(
  src: AsyncIterable<Uint8Array>,
  limits: DecodeLimits = {},
): Promise<TensorStream & { layout: SafetensorsHeader }> {
  const reader = new ByteReader(src);
  const len = readHeaderLength(await reader.take(8));
  const layout = parseHeader(await reader.take(len));
  if (limits.maxBytes !== undefined && layout.dataBytes > limits.maxBytes) {
    throw new SafetensorsError(`stream declares ${layout.dataBytes} data bytes, over the limit of ${limits.maxBytes}`);
  }
  const chunk = limits.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  let consumed = false;
  return {
    layout,
    header: { tensors: layout.tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape })), metadata: layout.metadata },
    async *pieces() {
      if (consumed) throw new Error('a tensor stream can be read only once');
      consumed = true;
      for (let i = 0; i < layout.tensors.length; i++) {
        const t = layout.tensors[i]!;
        const total = t.end - t.begin;
        const step = alignedChunk(chunk, t.dtype);
        const size = dtypeSize(t.dtype);
        if (total === 0)
          yield { index: i, name: t.name, dtype: t.dtype, shape: t.shape, offset: 0, bytes: new Uint8Array(0), tensorBytes: 0 };
        let off = 0;
        while (off < total) {
          let piece = await reader.takeSome(Math.min(step, total - off));
          const rem = piece.byteLength % size;
          if (rem !== 0) {
            // an element straddles two source chunks: yield the whole elements, re-read the split one
            reader.unshift(piece.subarray(piece.byteLength - rem));
            piece = piece.byteLength > rem ? piece.subarray(0, piece.byteLength - rem) : await reader.take(size);
          }
          yield { index: i, name: t.name, dtype: t.dtype, shape: t.shape, offset: off, bytes: piece, tensorBytes: total };
          off += piece.byteLength;
        }
      }
      await reader.expectEnd();
    },
  };
}
