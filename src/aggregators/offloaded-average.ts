/**
 * FedAvg's running weighted sum with the global model and the accumulator on
 * disk (`--offload`): server memory no longer depends on model size, only on
 * the chunk size.
 *
 * Each result is staged whole as it arrives (result-stage.ts: a small shared
 * memory budget, then a scratch file of that result) and folded into the
 * accumulator file (float64, or double-double for F64/I64 tensors, as in
 * exact-sum.ts; piece by piece) once its stream has ended, so a result that
 * breaks off counts for nothing. Results of a round are read concurrently as
 * they arrive; only the folds take turns. Disk: the accumulator plus, per
 * result in flight, the part of it outside the memory budget (up to one model).
 */
import { randomBytes } from 'node:crypto';
import { type FileHandle, mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { dtypeSize, allocate, viewAs } from '../core/dtypes.ts';
import type { ParamsType } from '../core/fl-model.ts';
import { SafetensorsFile, SafetensorsWriter } from '../core/safetensors.ts';
import type { TensorEntry, TensorInfo } from '../core/safetensors-header.ts';
import type { TensorStream } from '../core/tensor-stream.ts';
import { numel } from '../core/tensor.ts';
import { accWidth, finishInto, foldInto, totalWeight } from './exact-sum.ts';
import { FifoLock } from './fifo-lock.ts';
import { ResultStage, StageBudget, type StagedPiece } from './result-stage.ts';
import { AggregationError, checkResultHeader } from './weighted-average.ts';

const CHUNK_ELEMS = 1 << 18; // 2 MiB of float64 accumulator per step
/** memory the staged results in flight may hold together: small, memory must not grow with the model */
const STAGE_MEMORY_BYTES = 16 << 20;

interface Slot {
  entry: TensorEntry;
  n: number;
  /** float64 per element of the accumulator (2: double-double) */
  width: 1 | 2;
  /** byte offset of this tensor in the accumulator file */
  accStart: number;
  /** weights of the results folded into this tensor */
  weights: number[];
}

export class OffloadedAverage {
  private readonly slots = new Map<string, Slot>();
  private contributions = 0;
  private total = 0;
  private done = false;
  private readonly lock = new FifoLock();
  private readonly budget = new StageBudget(STAGE_MEMORY_BYTES);

  private constructor(
    private readonly global: SafetensorsFile,
    private readonly acc: FileHandle,
    private readonly dir: string,
    private readonly accPath: string,
  ) {
    let start = 0;
    for (const e of global.header.tensors) {
      const n = numel(e.shape);
      const width = accWidth(e.dtype);
      this.slots.set(e.name, { entry: e, n, width, accStart: start, weights: [] });
      start += n * width * 8;
    }
  }

  /** `globalPath`: the current global model (safetensors); `dir`: where the accumulator and temporary files go. */
  static async open(globalPath: string, dir: string): Promise<OffloadedAverage> {
    await mkdir(dir, { recursive: true });
    const global = await SafetensorsFile.open(globalPath);
    const accPath = join(dir, `accumulator-${randomBytes(4).toString('hex')}.f64`);
    // a sparse file of zeros: untouched tensors cost no disk
    const acc = await open(accPath, 'w+');
    return new OffloadedAverage(global, acc, dir, accPath);
  }

  get count(): number {
    return this.contributions;
  }

  get totalWeight(): number {
    return this.total;
  }

  async add(stream: TensorStream, weight: number, paramsType: ParamsType): Promise<void> {
    if (this.done) throw new AggregationError('add() after result()');
    checkResultHeader(stream.header, (name) => this.slots.get(name)?.entry, weight);
    // Each result is staged whole (memory within a small budget, then its own scratch file) and
    // folded under a lock once its stream has ended: concurrent results are read as they arrive and
    // take turns only for the fold, and a result that breaks off is dropped with its stage.
    const stage = new ResultStage(this.budget, async () => this.dir);
    const diff = paramsType === 'DIFF';
    try {
      let current = -1;
      let filled = 0;
      for await (const p of stream.pieces()) {
        const info = stream.header.tensors[p.index]!;
        if (p.index !== current) {
          if (current >= 0 && filled !== tensorBytes(stream.header.tensors[current]!)) {
            throw new AggregationError(
              `tensor "${stream.header.tensors[current]!.name}" ended after ${filled} of ${tensorBytes(stream.header.tensors[current]!)} bytes`,
            );
          }
          current = p.index;
          filled = 0;
        }
        if (p.offset !== filled) throw new AggregationError(`tensor "${info.name}": piece at byte ${p.offset}, expected ${filled}`);
        await stage.put(p.index, p.offset, p.bytes);
        filled += p.bytes.byteLength;
      }
      if (current >= 0 && filled !== tensorBytes(stream.header.tensors[current]!)) {
        throw new AggregationError(`result ended inside tensor "${stream.header.tensors[current]!.name}"`);
      }
      if (weight > 0) await this.lock.run(() => this.foldStaged(stage.replay(), stream.header.tensors, weight, diff));
    } finally {
      await stage.close();
    }
    this.contributions++;
    this.total += weight;
  }

  /** Folds a staged result's pieces (in stream order) into the accumulator, then counts it for the tensors it completed. */
  private async foldStaged(pieces: AsyncIterable<StagedPiece>, tensors: readonly TensorInfo[], w: number, diff: boolean): Promise<void> {
    const completed: Slot[] = [];
    for await (const p of pieces) {
      const info = tensors[p.index]!;
      const s = this.slots.get(info.name)!;
      const size = dtypeSize(info.dtype);
      const gsize = dtypeSize(s.entry.dtype);
      const xs = viewAs(info.dtype, p.bytes);
      const first = p.offset / size;
      // the accumulator in steps of CHUNK_ELEMS elements
      for (let j = 0; j < xs.length; j += CHUNK_ELEMS) {
        const m = Math.min(CHUNK_ELEMS, xs.length - j);
        const i = first + j;
        const acc = new Float64Array(m * s.width);
        const accBytes = new Uint8Array(acc.buffer);
        const gs = diff ? viewAs(s.entry.dtype, await this.global.readRange(info.name, i * gsize, m * gsize)) : null;
        const pos = s.accStart + i * s.width * 8;
        if (s.weights.length > 0) await readInto(this.acc, accBytes, accBytes.byteLength, pos);
        else acc.fill(-0); // -0 + x is x, signed zeros included
        foldInto(acc, 0, s.width, { dtype: info.dtype, data: xs.subarray(j, j + m) }, w, gs && { dtype: s.entry.dtype, data: gs });
        await writeFrom(this.acc, accBytes, accBytes.byteLength, pos);
      }
      if (first + xs.length === s.n) completed.push(s);
    }
    // weights last: `s.weights.length > 0` above means "the accumulator holds an earlier result"
    for (const s of completed) s.weights.push(w);
  }

  /** Writes the new global model to `outPath` (a safetensors file, written atomically) and releases the accumulator. */
  async writeResult(outPath: string, metadata: Record<string, string> = {}): Promise<void> {
    if (this.done) throw new AggregationError('result was already written');
    this.done = true;
    const tensors = this.global.header.tensors;
    const w = await SafetensorsWriter.open(outPath, tensors, { ...this.global.metadata, ...metadata });
    try {
      for (const e of tensors) {
        const s = this.slots.get(e.name)!;
        const size = dtypeSize(e.dtype);
        const weight = totalWeight(s.weights);
        const acc = new Float64Array(Math.min(CHUNK_ELEMS, s.n) * s.width);
        const accBytes = new Uint8Array(acc.buffer);
        for (let i = 0; i < s.n; i += CHUNK_ELEMS) {
          const m = Math.min(CHUNK_ELEMS, s.n - i);
          if (s.weights.length === 0) {
            await w.write(e.name, await this.global.readRange(e.name, i * size, m * size));
            continue;
          }
          await readInto(this.acc, accBytes, m * s.width * 8, s.accStart + i * s.width * 8);
          const out = allocate(e.dtype, m);
          finishInto(acc, 0, s.width, weight, e.dtype, out, 0, m);
          await w.write(e.name, new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
        }
      }
      await w.close();
    } catch (e) {
      await w.abort();
      throw e;
    } finally {
      await this.close();
    }
  }

  async close(): Promise<void> {
    await this.acc.close().catch(() => undefined);
    await rm(this.accPath, { force: true });
    await this.global.close().catch(() => undefined);
  }
}

function tensorBytes(t: TensorInfo): number {
  return numel(t.shape) * dtypeSize(t.dtype);
}

async function readInto(fh: FileHandle, buf: Uint8Array, length: number, position: number): Promise<void> {
  let off = 0;
  while (off < length) {
    const { bytesRead } = await fh.read(buf, off, length - off, position + off);
    if (bytesRead === 0) {
      buf.fill(0, off, length); // past the end of the sparse file: zeros
      return;
    }
    off += bytesRead;
  }
}

async function writeFrom(fh: FileHandle, buf: Uint8Array, length: number, position: number): Promise<void> {
  let off = 0;
  while (off < length) {
    const { bytesWritten } = await fh.write(buf, off, length - off, position + off);
    off += bytesWritten;
  }
}
