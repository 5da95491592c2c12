/**
 * Synthetic models for bench/streaming: a tensor layout of any size and its
 * bytes generated on the fly from a seed, so a 16 GB model costs no memory and
 * generating it costs about a memcpy.
 *
 * Content is defined per 1 MiB block of the data section, independent of how
 * the stream is cut: block k is a seeded 1 MiB template whose first 8 bytes
 * are stamped with k. Any reordering, loss or duplication of a block therefore
 * changes the end-to-end hash, and every mode and chunk size yields the same
 * bytes (the same hash) for the same size and seed.
 */
import type { TensorInfo } from '../../src/core/safetensors-header.ts';
import type { TensorPiece, TensorStream } from '../../src/core/tensor-stream.ts';

const BLOCK = 1 << 20;
const MIB = 1 << 20;
/** most tensors are 256 MiB, like large transformer matrices */
const TENSOR_BYTES = 256 * MIB;
/** one tensor over 1 GB in models of 2 GiB and more (a chunk must split it) */
const BIG_TENSOR_BYTES = 1536 * MIB;

export function modelLayout(totalBytes: number): TensorInfo[] {
  if (totalBytes % 4 !== 0) throw new Error(`model size ${totalBytes} is not a multiple of 4 bytes (F32)`);
  const out: TensorInfo[] = [];
  let left = totalBytes;
  let i = 0;
  const add = (bytes: number): void => {
    const n = bytes / 4;
    out.push({ name: `layers.${i++}.weight`, dtype: 'F32', shape: n % 1024 === 0 ? [n / 1024, 1024] : [n] });
    left -= bytes;
  };
  if (totalBytes >= 2 * 1024 * MIB) {
    // put the big tensor in the middle, not first, so the stream starts like a real model
    const before = Math.floor((totalBytes - BIG_TENSOR_BYTES) / 2 / TENSOR_BYTES);
    for (let k = 0; k < before; k++) add(TENSOR_BYTES);
    add(BIG_TENSOR_BYTES);
  }
  while (left >= TENSOR_BYTES) add(TENSOR_BYTES);
  if (left > 0) add(left);
  return out;
}

export function layoutBytes(tensors: readonly TensorInfo[]): number {
  return tensors.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1) * 4, 0);
}

/** Seeded 1 MiB template (xorshift32: cheap, and not compressible). */
function template(seed: number): Uint8Array {
  const words = new Uint32Array(BLOCK / 4);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  return new Uint8Array(words.buffer);
}

/** Fills `dst` with data-section bytes [at, at + dst.length) of the model with this seed. */
export class ModelBytes {
  private readonly tpl: Uint8Array;
  private readonly stamp = new Uint8Array(8);
  private readonly stampView = new DataView(this.stamp.buffer);
  constructor(readonly seed: number) {
    this.tpl = template(seed);
  }
  fill(dst: Uint8Array, at: number): void {
    let pos = 0;
    while (pos < dst.byteLength) {
      const g = at + pos;
      const inBlock = g % BLOCK;
      const len = Math.min(BLOCK - inBlock, dst.byteLength - pos);
      dst.set(this.tpl.subarray(inBlock, inBlock + len), pos);
      if (inBlock < 8) {
        const k = Math.floor(g / BLOCK);
        this.stampView.setUint32(0, k >>> 0, true);
        this.stampView.setUint32(4, Math.floor(k / 2 ** 32) ^ this.seed, true);
        const s = this.stamp.subarray(inBlock, Math.min(8, inBlock + len));
        dst.set(s, pos);
      }
      pos += len;
    }
  }
}

/**
 * The model as a tensor stream: pieces of at most chunkBytes, each a fresh
 * buffer (a consumer may keep it, as the channel does until it is acknowledged).
 */
export function syntheticStream(tensors: readonly TensorInfo[], seed: number, chunkBytes: number): TensorStream {
  const gen = new ModelBytes(seed);
  const step = chunkBytes - (chunkBytes % 4);
  return {
    header: { tensors, metadata: META(seed) },
    async *pieces(): AsyncGenerator<TensorPiece> {
      let at = 0;
      for (let i = 0; i < tensors.length; i++) {
        const t = tensors[i]!;
        const total = t.shape.reduce((a, b) => a * b, 1) * 4;
        for (let off = 0; off < total; off += step) {
          const bytes = new Uint8Array(Math.min(step, total - off));
          gen.fill(bytes, at + off);
          yield { index: i, name: t.name, dtype: t.dtype, shape: t.shape, offset: off, bytes, tensorBytes: total };
        }
        at += total;
      }
    },
  };
}

export const GB = 1e9;

export const META = (seed: number): Record<string, string> => ({ generator: 'bench/streaming', seed: String(seed) });
