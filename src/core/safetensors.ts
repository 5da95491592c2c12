/**
 * Streaming safetensors files. The writer takes the tensor list up front (the
 * header comes first in the file) and then tensor bytes one piece at a time;
 * the reader parses only the header at open and reads any single tensor at its
 * offset, so neither ever needs the whole model in memory.
 */
import { randomBytes } from 'node:crypto';
import { type FileHandle, mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Writable } from 'node:stream';
import { viewAs } from './dtypes.ts';
import { SafetensorsError, type SafetensorsHeader, type TensorEntry, type TensorInfo, buildHeader, parseHeader, readHeaderLength } from './safetensors-header.ts';
import { DEFAULT_CHUNK_BYTES, type TensorPiece, type TensorStream, splitTensor } from './tensor-stream.ts';
import { type TensorDict, tensorBytes } from './tensor.ts';

export { SafetensorsError };

type Sink = { write(b: Uint8Array): Promise<void>; finish(): Promise<void>; abort(): Promise<void> };

function fileSink(fh: FileHandle, tmp: string, path: string): Sink {
  return {
    async write(b) {
      let off = 0;
      while (off < b.byteLength) {
        const { bytesWritten } = await fh.write(b, off, b.byteLength - off);
        off += bytesWritten;
      }
    },
    async finish() {
      await fh.sync();
      await fh.close();
      await rename(tmp, path);
    },
    async abort() {
      await fh.close().catch(() => undefined);
      await rm(tmp, { force: true });
    },
  };
}

function streamSink(w: Writable): Sink {
  return {
    write: (b) =>
      new Promise<void>((resolve, reject) => {
        const ok = w.write(b, (err) => (err ? reject(err) : undefined));
        if (ok) resolve();
        else w.once('drain', resolve);
      }),
    finish: () => new Promise<void>((resolve) => w.end(resolve)),
    abort: async () => {
      w.destroy(new Error('safetensors write aborted'));
    },
  };
}

/** Writes tensors in header order, piece by piece. */
export class SafetensorsWriter {
  private index = 0;
  private written = 0;
  private closed = false;

  private constructor(private readonly sink: Sink, readonly header: SafetensorsHeader) {}

  /**
   * Opens a file (written to a temp name and renamed at close, so a crash never
   * leaves a half file) or a Writable.
   */
  static async open(target: string | Writable, tensors: readonly TensorInfo[], metadata: Record<string, string> = {}): Promise<SafetensorsWriter> {
    const { bytes, header } = buildHeader(tensors, metadata);
    let sink: Sink;
    if (typeof target === 'string') {
      await mkdir(dirname(target), { recursive: true });
      const tmp = `${target}.tmp-${randomBytes(6).toString('hex')}`;
      sink = fileSink(await open(tmp, 'w'), tmp, target);
    } else {
      sink = streamSink(target);
    }
    const w = new SafetensorsWriter(sink, header);
    await sink.write(bytes).catch(async (e: Error) => {
      await sink.abort();
      throw e;
    });
    return w;
  }

  private get current(): TensorEntry | undefined {
    return this.header.tensors[this.index];
  }

  /** Writes the next bytes of tensor `name`, which must be the tensor being written now. */
  async write(name: string, bytes: Uint8Array): Promise<void> {
    if (this.closed) throw new SafetensorsError('write after close');
    // skip over zero-byte tensors declared before this one
    while (this.current && this.current.end - this.current.begin === this.written && this.current.name !== name) this.advance();
    const t = this.current;
    if (!t) throw new SafetensorsError(`tensor "${name}" written after all declared tensors`);
    if (t.name !== name) throw new SafetensorsError(`tensor "${name}" written out of order: expected "${t.name}" next`);
    const size = t.end - t.begin;
    if (this.written + bytes.byteLength > size) throw new SafetensorsError(`tensor "${name}": ${this.written + bytes.byteLength} bytes written, header declares ${size}`);
    if (bytes.byteLength > 0) await this.sink.write(bytes);
    this.written += bytes.byteLength;
    if (this.written === size) this.advance();
  }

  private advance(): void {
    this.index++;
    this.written = 0;
  }

  /** Finishes the file; fails (and removes the temp file) if any declared tensor is incomplete. */
  async close(): Promise<void> {
    if (this.closed) return;
    while (this.current && this.current.end - this.current.begin === 0) this.advance();
    const t = this.current;
    if (t) {
      await this.abort();
      throw new SafetensorsError(`tensor "${t.name}" incomplete at close: ${this.written} of ${t.end - t.begin} bytes written`);
    }
    this.closed = true;
    await this.sink.finish();
  }

  async abort(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.sink.abort();
  }
}

export async function writeStreamToFile(target: string | Writable, stream: TensorStream): Promise<void> {
  const w = await SafetensorsWriter.open(target, stream.header.tensors, { ...stream.header.metadata });
  try {
    for await (const p of stream.pieces()) await w.write(p.name, p.bytes);
  } catch (e) {
    await w.abort();
    throw e;
  }
  await w.close();
}

export async function writeSafetensors(target: string | Writable, dict: TensorDict, metadata: Record<string, string> = {}): Promise<void> {
  const w = await SafetensorsWriter.open(target, [...dict].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape })), metadata);
  try {
    for (const [name, t] of dict) await w.write(name, tensorBytes(t));
  } catch (e) {
    await w.abort();
    throw e;
  }
  await w.close();
}

/** An open safetensors file: header parsed and validated, tensors read on demand. */
export class SafetensorsFile {
  /** bytes read from disk so far (header included) */
  bytesRead = 0;
  private constructor(private readonly fh: FileHandle, readonly path: string, readonly header: SafetensorsHeader) {}

  static async open(path: string): Promise<SafetensorsFile> {
    const size = (await stat(path)).size;
    const fh = await open(path, 'r');
    try {
      const prefix = new Uint8Array(8);
      const { bytesRead } = await fh.read(prefix, 0, 8, 0);
      const len = readHeaderLength(prefix.subarray(0, bytesRead), size);
      const json = new Uint8Array(len);
      await fh.read(json, 0, len, 8);
      const header = parseHeader(json, size);
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

  names(): string[] {
    return this.header.tensors.map((t) => t.name);
  }

  private entry(name: string): TensorEntry {
    const t = this.header.tensors.find((x) => x.name === name);
    if (!t) throw new SafetensorsError(`${this.path}: no tensor named "${name}"`);
    return t;
  }

  private async readAt(position: number, length: number): Promise<Uint8Array> {
    const buf = new Uint8Array(length);
    let off = 0;
    while (off < length) {
      const { bytesRead } = await this.fh.read(buf, off, length - off, position + off);
      if (bytesRead === 0) throw new SafetensorsError(`${this.path}: file ended early at byte ${position + off}`);
      off += bytesRead;
    }
    this.bytesRead += length;
    return buf;
  }

  /** Reads one tensor, and only its bytes. */
  async readTensor(name: string): Promise<import('./tensor.ts').Tensor> {
    const t = this.entry(name);
    const bytes = await this.readAt(this.header.dataStart + t.begin, t.end - t.begin);
    return { dtype: t.dtype, shape: [...t.shape], data: viewAs(t.dtype, bytes) };
  }

  /** The file as a tensor stream, read from disk one piece at a time. */
  stream(opts: { chunkBytes?: number } = {}): TensorStream {
    const chunk = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    const tensors = this.header.tensors;
    const self = this;
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
          // reads are a multiple of 8 bytes, so every piece stays element-aligned
          const step = Math.max(8, chunk - (chunk % 8));
          for (let off = 0; off < total; ) {
            const n = Math.min(step, total - off);
            const bytes = await self.readAt(self.header.dataStart + t.begin + off, n);
            yield* splitTensor(i, t.name, t, bytes, chunk, off, total);
            off += n;
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

export async function readSafetensors(path: string): Promise<{ tensors: TensorDict; metadata: Record<string, string> }> {
  const f = await SafetensorsFile.open(path);
  try {
    return { tensors: await f.readAll(), metadata: { ...f.metadata } };
  } finally {
    await f.close();
  }
}
