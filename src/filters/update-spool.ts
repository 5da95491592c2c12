/**
 * What the privacy filters need of a site's result: its update (result − the model the task
 * carried, or the result itself when it is a DIFF) with statistics over all of it (a norm, a
 * percentile) before the first value is released. Both the task's model and the update go to
 * temporary files as they pass, so a model of any size needs disk, not memory: the task's model is
 * teed to a file while the trainer reads it, the update is written on a first pass over the
 * result, then read back a chunk at a time for the release.
 */
import { randomUUID } from 'node:crypto';
import { type FileHandle, mkdir, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dtypeSize, isFloatDType } from '../core/dtypes.ts';
import type { TensorInfo } from '../core/safetensors-header.ts';
import { numel } from '../core/tensor.ts';
import type { StreamHeader, TensorPiece, TensorStream } from '../core/tensor-stream.ts';
import { toFloat32 } from './codecs.ts';

const CHUNK_ELEMENTS = 1 << 18;

async function readExactly(fh: FileHandle, into: Uint8Array, position: number): Promise<void> {
  let got = 0;
  while (got < into.byteLength) {
    const r = await fh.read(into, got, into.byteLength - got, position + got);
    if (r.bytesRead === 0) throw new Error('temporary file ended early');
    got += r.bytesRead;
  }
}

async function writeAll(fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let put = 0;
  while (put < bytes.byteLength) put += (await fh.write(bytes, put, bytes.byteLength - put, position + put)).bytesWritten;
}

/** `root`: the site's scratch folder for filters (FilterContext.scratchDir), removed with the job's scratch files; else the OS's. */
function tempDir(root: string | undefined): string {
  return join(root ?? tmpdir(), `flotilla-update-${randomUUID()}`);
}

/** The model a task brought, kept on disk as raw tensor bytes: name → where its bytes are. */
export class TaskModelSpool {
  private dir: string | null = null;
  private tensors = new Map<string, { dtype: TensorInfo['dtype']; begin: number; n: number }>();

  /** The task's stream, unchanged, written to a file as its pieces pass. The previous task's file is removed. */
  tee(input: TensorStream, root?: string): TensorStream {
    const previous = this.dir;
    const dir = (this.dir = tempDir(root));
    const layout = new Map<string, { dtype: TensorInfo['dtype']; begin: number; n: number }>();
    let pos = 0;
    const begins = input.header.tensors.map((t) => {
      const b = pos;
      pos += numel(t.shape) * dtypeSize(t.dtype);
      layout.set(t.name, { dtype: t.dtype, begin: b, n: numel(t.shape) });
      return b;
    });
    this.tensors = layout;
    return {
      header: input.header,
      async *pieces(): AsyncGenerator<TensorPiece> {
        if (previous) await rm(previous, { recursive: true, force: true });
        await mkdir(dir, { recursive: true });
        const fh = await open(join(dir, 'task.bin'), 'w');
        try {
          for await (const p of input.pieces()) {
            if (p.bytes.byteLength) await writeAll(fh, p.bytes, begins[p.index]! + p.offset);
            yield p;
          }
        } finally {
          await fh.close();
        }
      },
    };
  }

  /** The task model's values of tensor `name` for elements [from, from + count), as float32. */
  async values(fh: FileHandle, name: string, from: number, count: number): Promise<Float32Array | null> {
    const t = this.tensors.get(name);
    if (!t || !isFloatDType(t.dtype) || from + count > t.n) return null;
    const size = dtypeSize(t.dtype);
    const bytes = new Uint8Array(count * size);
    await readExactly(fh, bytes, t.begin + from * size);
    return toFloat32(t.dtype, bytes);
  }

  openFile(): Promise<FileHandle> | null {
    return this.dir ? open(join(this.dir, 'task.bin'), 'r') : null;
  }

  async dispose(): Promise<void> {
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
    this.dir = null;
  }
}

/** One chunk of the update, read back: values of tensor `index` from element `from`. */
export interface UpdateChunk {
  index: number;
  from: number;
  values: Float32Array;
}

/**
 * The update of a result as float32 tensors (its float tensors only: integer and bool tensors
 * have no update to privatize and are left out), written to a file on the first pass; `observe`
 * sees every chunk of it on that pass (for a norm, a histogram).
 */
export async function spoolUpdate(
  result: TensorStream,
  fullResult: boolean,
  task: TaskModelSpool,
  observe: (values: Float32Array) => void,
  root?: string,
): Promise<{ header: StreamHeader; chunks: () => AsyncGenerator<UpdateChunk>; dispose: () => Promise<void> }> {
  const dir = tempDir(root);
  await mkdir(dir, { recursive: true });
  const path = join(dir, 'update.bin');
  const kept = result.header.tensors.map((t, i) => ({ t, i })).filter(({ t }) => isFloatDType(t.dtype));
  const outIndex = new Map(kept.map(({ i }, k) => [i, k]));
  const begins: number[] = [];
  let pos = 0;
  for (const { t } of kept) {
    begins.push(pos);
    pos += numel(t.shape) * 4;
  }
  const fh = await open(path, 'w');
  const taskFh = fullResult ? task.openFile() : null;
  if (fullResult && !taskFh)
    throw new Error('the result is a FULL model but no task model was seen: send a DIFF, or run the filter at a site');
  const tf = await taskFh;
  try {
    for await (const p of result.pieces()) {
      const k = outIndex.get(p.index);
      if (k === undefined) continue;
      const values = toFloat32(p.dtype, p.bytes);
      const diff = new Float32Array(values.length);
      const from = p.offset / dtypeSize(p.dtype);
      if (tf) {
        const base = await task.values(tf, p.name, from, values.length);
        if (!base) throw new Error(`tensor "${p.name}" of the result is not a float tensor of the same size in the task's model`);
        for (let j = 0; j < values.length; j++) diff[j] = values[j]! - base[j]!;
      } else diff.set(values);
      observe(diff);
      await writeAll(fh, new Uint8Array(diff.buffer), begins[k]! + from * 4);
    }
  } catch (e) {
    await fh.close();
    await rm(dir, { recursive: true, force: true });
    throw e;
  } finally {
    await tf?.close();
  }
  await fh.close();
  const header: StreamHeader = {
    tensors: kept.map(({ t }) => ({ name: t.name, dtype: 'F32' as const, shape: t.shape })),
    metadata: result.header.metadata,
  };
  return {
    header,
    async *chunks() {
      const rf = await open(path, 'r');
      try {
        for (let k = 0; k < kept.length; k++) {
          const n = numel(kept[k]!.t.shape);
          for (let from = 0; from < n; from += CHUNK_ELEMENTS) {
            const count = Math.min(CHUNK_ELEMENTS, n - from);
            const bytes = new Uint8Array(count * 4);
            await readExactly(rf, bytes, begins[k]! + from * 4);
            yield { index: k, from, values: new Float32Array(bytes.buffer) };
          }
        }
      } finally {
        await rf.close();
      }
    },
    dispose: () => rm(dir, { recursive: true, force: true }),
  };
}

/** A chunk as a piece of the update stream (float32 tensors of `header`). */
export function chunkPiece(header: StreamHeader, c: UpdateChunk, values: Float32Array): TensorPiece {
  const t = header.tensors[c.index]!;
  return {
    index: c.index,
    name: t.name,
    dtype: 'F32',
    shape: t.shape,
    offset: c.from * 4,
    bytes: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
    tensorBytes: numel(t.shape) * 4,
  };
}
