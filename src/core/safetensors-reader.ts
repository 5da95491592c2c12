/**
 * The safetensors reader: parses only the header at open and reads any single tensor at its
 * offset, so it never needs the whole model in memory.
 */
import { type FileHandle, open } from 'node:fs/promises';
import { viewAs } from './dtypes.ts';
import { SafetensorsError, type SafetensorsHeader, type TensorEntry, parseHeader, readHeaderLength } from './safetensors-header.ts';
import { DEFAULT_CHUNK_BYTES, type TensorPiece, type TensorStream, splitTensor } from './tensor-stream.ts';
import { type Tensor, type TensorDict } from './tensor.ts';

/** An open safetensors file: header parsed and validated, tensors read on demand. */
export class SafetensorsFile {
  /** bytes read from disk so far, header included (lets tests and benchmarks see what a read cost) */
  bytesRead = 0;
  private readonly byName: ReadonlyMap<string, TensorEntry>;

  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    readonly header: SafetensorsHeader,
  ) {
    this.byName = new Map(header.tensors.map((t) => [t.name, t]));
  }

  /** Reads the 8-byte prefix and the header only; every malformed header or size mismatch fails here. */
  static async open(path: string): Promise<SafetensorsFile> {
    const fh = await open(path, 'r');
    try {
      const size = (await fh.stat()).size;
      const prefix = await readFully(fh, 0, Math.min(8, size));
      const len = readHeaderLength(prefix, size);
      const header = parseHeader(await readFully(fh, 8, len), size);
      const f = new SafetensorsFile(fh, path, header);
      f.bytesRead = 8 + len;
      return f;
    } catch (e) {
      await fh.close();
      if (e instanceof SafetensorsError) throw new SafetensorsError(`${path}: ${e.message}`);
      throw e;
    }
  }

  get metadata(): Readonly<Record<string, string>> {
    return this.header.metadata;
  }

  /** Tensor names in file (data offset) order. */
  names(): string[] {
    return this.header.tensors.map((t) => t.name);
  }

  private entry(name: string): TensorEntry {
    const t = this.byName.get(name);
    if (!t) throw new SafetensorsError(`${this.path}: no tensor named "${name}"`);
    return t;
  }

  private async readAt(position: number, length: number): Promise<Uint8Array> {
    const buf = await readFully(this.fh, position, length).catch((e: unknown) => {
      throw e instanceof SafetensorsError ? new SafetensorsError(`${this.path}: ${e.message}`) : e;
    });
    this.bytesRead += length;
    return buf;
  }

  /** Reads `length` bytes of tensor `name` from byte `offset` within it (models larger than memory read a slice at a time). */
  async readRange(name: string, offset: number, length: number): Promise<Uint8Array> {
    const t = this.entry(name);
    if (offset < 0 || length < 0 || offset + length > t.end - t.begin) {
      throw new SafetensorsError(
        `${this.path}: range [${offset}, ${offset + length}) is outside tensor "${name}" (${t.end - t.begin} bytes)`,
      );
    }
    return this.readAt(this.header.dataStart + t.begin + offset, length);
  }

  /** Reads one tensor, and only its bytes. */
  async readTensor(name: string): Promise<Tensor> {
    const t = this.entry(name);
    const bytes = await this.readAt(this.header.dataStart + t.begin, t.end - t.begin);
    return { dtype: t.dtype, shape: [...t.shape], data: viewAs(t.dtype, bytes) };
  }

  /** The file as a tensor stream, read from disk one piece (at most chunkBytes, element-aligned) at a time. */
  stream(opts: { chunkBytes?: number } = {}): TensorStream {
    const chunk = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    const tensors = this.header.tensors;
    const readAt = (pos: number, n: number): Promise<Uint8Array> => this.readAt(this.header.dataStart + pos, n);
    return {
      header: { tensors: tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape })), metadata: this.header.metadata },
      async *pieces(): AsyncGenerator<TensorPiece> {
        for (let i = 0; i < tensors.length; i++) {
          const t = tensors[i]!;
          const total = t.end - t.begin;
          if (total === 0) {
            yield* splitTensor(i, t.name, t, new Uint8Array(0), chunk);
            continue;
          }
          // reads are a multiple of 8 bytes (every element size divides 8), so pieces stay element-aligned
          const step = Math.max(8, chunk - (chunk % 8));
          // one read ahead: the disk works on the next piece while the consumer (a socket, say) takes this one
          let next: Promise<Uint8Array> | null = readAt(t.begin, Math.min(step, total));
          try {
            for (let off = 0; off < total;) {
              const n = Math.min(step, total - off);
              const bytes = await next!;
              next = off + n < total ? readAt(t.begin + off + n, Math.min(step, total - off - n)) : null;
              yield* splitTensor(i, t.name, t, bytes, chunk, off, total);
              off += n;
            }
          } finally {
            // a consumer that stops early leaves one read in flight: its failure (the file closed) is nobody's
            void next?.catch(() => undefined);
          }
        }
      },
    };
  }

  async readAll(): Promise<TensorDict> {
    const out: TensorDict = new Map();
    for (const t of this.header.tensors) out.set(t.name, await this.readTensor(t.name));
    return out;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** Positioned read of exactly `length` bytes (a single read may return fewer). */
async function readFully(fh: FileHandle, position: number, length: number): Promise<Uint8Array> {
  // not zero-filled: every byte is read over (or the read throws), and zeroing 1 MiB per chunk
  // costs as much as reading it from the page cache. A plain Uint8Array (not a Buffer), so
  // slice() copies as callers expect.
  const buf = new Uint8Array(Buffer.allocUnsafeSlow(length).buffer, 0, length);
  let off = 0;
  while (off < length) {
    const { bytesRead } = await fh.read(buf, off, length - off, position + off);
    if (bytesRead === 0) throw new SafetensorsError(`file ended early at byte ${position + off} (changed while open?)`);
    off += bytesRead;
  }
  return buf;
}

export async function readSafetensors(path: string): Promise<{ tensors: TensorDict; metadata: Record<string, string> }> {
  const f = await SafetensorsFile.open(path);
  try {
    return { tensors: await f.readAll(), metadata: { ...f.metadata } };
  } finally {
    await f.close();
  }
}
