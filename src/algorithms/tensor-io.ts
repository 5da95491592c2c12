/**
 * Tensor-at-a-time access to a model in memory or in a safetensors file, so the
 * algorithms of this folder (server optimizers, robust aggregation) are written
 * once and use memory for one tensor (or one chunk of one) at a time whether the
 * model lives in a `TensorDict` or on disk (`offload`).
 */
import { allocate, dtypeSize, viewAs } from '../core/dtypes.ts';
import { SafetensorsFile, SafetensorsWriter } from '../core/safetensors.ts';
import type { TensorInfo } from '../core/safetensors-header.ts';
import { type Tensor, type TensorDict, numel } from '../core/tensor.ts';

export interface TensorReader {
  readonly tensors: readonly TensorInfo[];
  readonly metadata: Readonly<Record<string, string>>;
  has(name: string): boolean;
  read(name: string): Promise<Tensor>;
  /** elements [start, start + count) of tensor `name`, as a typed array of its dtype */
  readElements(name: string, start: number, count: number): Promise<Tensor['data']>;
  close(): Promise<void>;
}

export interface TensorSink {
  /** the next elements of tensor `name`: tensors in the order the sink was opened with, each in order */
  write(name: string, data: Tensor['data']): Promise<void>;
  close(): Promise<void>;
  abort(): Promise<void>;
}

export function dictReader(dict: TensorDict, metadata: Record<string, string> = {}): TensorReader {
  const get = (name: string): Tensor => {
    const t = dict.get(name);
    if (!t) throw new Error(`no tensor named "${name}"`);
    return t;
  };
  return {
    tensors: [...dict].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape })),
    metadata,
    has: (name) => dict.has(name),
    read: async (name) => get(name),
    readElements: async (name, start, count) => {
      const t = get(name);
      return (t.data as Float32Array).subarray(start, start + count);
    },
    close: async () => undefined,
  };
}

export async function fileReader(path: string): Promise<TensorReader> {
  const f = await SafetensorsFile.open(path);
  const infos = f.header.tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape }));
  const byName = new Map(infos.map((t) => [t.name, t]));
  return {
    tensors: infos,
    metadata: f.metadata,
    has: (name) => byName.has(name),
    read: (name) => f.readTensor(name),
    readElements: async (name, start, count) => {
      const t = byName.get(name);
      if (!t) throw new Error(`${path}: no tensor named "${name}"`);
      const size = dtypeSize(t.dtype);
      return viewAs(t.dtype, await f.readRange(name, start * size, count * size));
    },
    close: () => f.close(),
  };
}

/** Collects tensors into a TensorDict (complete once closed). */
export function dictSink(tensors: readonly TensorInfo[]): TensorSink & { readonly dict: TensorDict } {
  const dict: TensorDict = new Map();
  const filled = new Map<string, number>();
  for (const t of tensors) {
    dict.set(t.name, { dtype: t.dtype, shape: [...t.shape], data: allocate(t.dtype, numel(t.shape)) });
    filled.set(t.name, 0);
  }
  return {
    dict,
    write: async (name, data) => {
      const t = dict.get(name);
      if (!t) throw new Error(`no tensor named "${name}" in this sink`);
      const at = filled.get(name)!;
      if (at + data.length > t.data.length)
        throw new Error(`tensor "${name}": ${at + data.length} elements written, shape holds ${t.data.length}`);
      (t.data as Float32Array).set(data as Float32Array, at);
      filled.set(name, at + data.length);
    },
    close: async () => {
      for (const [name, t] of dict)
        if (filled.get(name) !== t.data.length)
          throw new Error(`tensor "${name}" incomplete: ${filled.get(name)} of ${t.data.length} elements written`);
    },
    abort: async () => dict.clear(),
  };
}

/** Writes tensors to a safetensors file, atomically (nothing under `path` until close succeeds). */
export async function fileSink(
  path: string,
  tensors: readonly TensorInfo[],
  metadata: Readonly<Record<string, string>> = {},
  durable = true,
): Promise<TensorSink> {
  const w = await SafetensorsWriter.open(path, tensors, metadata, { durable });
  return {
    write: async (name, data) => {
      if (data.length > 0) await w.write(name, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    },
    close: () => w.close(),
    abort: () => w.abort(),
  };
}

/** Runs `fn` on a sink and closes it, or aborts it (no partial file) when `fn` throws. */
export async function writeAll(sink: TensorSink, fn: (sink: TensorSink) => Promise<void>): Promise<void> {
  try {
    await fn(sink);
    await sink.close();
  } catch (e) {
    await sink.abort();
    throw e;
  }
}

/** Element ranges [start, start + count) covering a tensor of n elements, `chunk` at a time. */
export function* chunks(n: number, chunk: number): Generator<[number, number]> {
  for (let i = 0; i < n; i += chunk) yield [i, Math.min(chunk, n - i)];
}
