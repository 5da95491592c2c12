/**
 * FedAvg's aggregator: one running weighted sum, never N models.
 *
 * Each result is staged as its stream arrives (result-stage.ts: in memory within a shared budget,
 * the rest in a scratch file of that result) and folded into the accumulator (float64, or
 * double-double for F64/I64 tensors: exact-sum.ts) once its stream has ended, so a result that
 * breaks off counts for nothing (its stage is dropped). Memory is the global model, one
 * accumulator and the staging budget, whatever the size of the largest tensor or the number of
 * results; results are read concurrently, each at the pace of its own stream (no sender stalls).
 *
 * FULL results are averaged as they are; a DIFF result d counts as global + d,
 * so FULL and DIFF results can be mixed in one round. Tensors a client leaves
 * out (excluded variables, adapters only) keep the other clients' average, or
 * the global value when nobody sent them.
 */
import { type DType, type TypedArray, dtypeSize, viewAs, allocate } from '../core/dtypes.ts';
import type { ParamsType } from '../core/fl-model.ts';
import type { TensorStream } from '../core/tensor-stream.ts';
import { type TensorDict, numel } from '../core/tensor.ts';
import { tmpdir } from 'node:os';
import { accWidth, finishInto, foldInto, totalWeight } from './exact-sum.ts';
import { ResultStage, StageBudget } from './result-stage.ts';

/** The least memory all results in flight may hold while staged (the default is this or one model, the larger). */
export const MIN_STAGE_MEMORY_BYTES = 64 << 20;

export interface StageOptions {
  /** where staged results that outgrow the memory budget go (default: the OS temp dir); each file is removed with its result */
  stageDir?: string;
  /** memory all results in flight may hold while staged, in bytes (default: the global model's size, at least 64 MiB) */
  stageMemoryBytes?: number;
}

export class AggregationError extends Error {
  override readonly name = 'AggregationError';
}

/**
 * Checks a result's header against the global model before anything is folded: every tensor known
 * (`global` gives its shape and dtype), of the same shape, and BOOL only where the global is BOOL.
 * Shared by the in-memory and the offloaded average, so both refuse the same results.
 */
export function checkResultHeader(
  header: TensorStream['header'],
  global: (name: string) => { shape: readonly number[]; dtype: DType } | undefined,
  weight: number,
): void {
  if (!(weight >= 0) || !Number.isFinite(weight)) throw new AggregationError(`weight must be a finite number ≥ 0, got ${weight}`);
  for (const t of header.tensors) {
    const g = global(t.name);
    if (!g) throw new AggregationError(`result has tensor "${t.name}" that the global model does not have`);
    if (t.shape.length !== g.shape.length || t.shape.some((d, i) => d !== g.shape[i]))
      throw new AggregationError(`tensor "${t.name}": result shape [${t.shape.join(', ')}] differs from global [${g.shape.join(', ')}]`);
    if (t.dtype === 'BOOL' && g.dtype !== 'BOOL') throw new AggregationError(`tensor "${t.name}": BOOL result for a ${g.dtype} tensor`);
  }
}

interface Slot {
  name: string;
  dtype: DType;
  shape: readonly number[];
  n: number;
  width: 1 | 2;
  acc: Float64Array | null;
  /** weights of the results folded into this tensor */
  weights: number[];
  global: TypedArray;
}

export class WeightedAverage {
  private readonly slots = new Map<string, Slot>();
  private contributions = 0;
  private total = 0;
  private done = false;
  private readonly budget: StageBudget;
  private readonly stageDir: string;

  constructor(
    private readonly global: TensorDict,
    stage: StageOptions = {},
  ) {
    // one model staged in memory: a round's results, whatever their number, add at most one model
    const modelBytes = [...global.values()].reduce((n, t) => n + t.data.byteLength, 0);
    this.budget = new StageBudget(stage.stageMemoryBytes ?? Math.max(MIN_STAGE_MEMORY_BYTES, modelBytes));
    this.stageDir = stage.stageDir ?? tmpdir();
    for (const [name, t] of global) {
      this.slots.set(name, {
        name,
        dtype: t.dtype,
        shape: t.shape,
        n: numel(t.shape),
        width: accWidth(t.dtype),
        acc: null,
        weights: [],
        global: t.data,
      });
    }
  }

  /** number of results folded in */
  get count(): number {
    return this.contributions;
  }

  get totalWeight(): number {
    return this.total;
  }

  /** Folds one result in. Rejects (before touching the sum) tensors the global model lacks or whose shape differs. */
  async add(stream: TensorStream, weight: number, paramsType: ParamsType): Promise<void> {
    if (this.done) throw new AggregationError('add() after result()');
    checkResultHeader(stream.header, (name) => this.slots.get(name), weight);
    // the tensor being staged and how many of its elements arrived (null between tensors)
    let open: { s: Slot; filled: number } | null = null;
    const stage = new ResultStage(this.budget, async () => this.stageDir);
    try {
      for await (const p of stream.pieces()) {
        const s = this.slots.get(stream.header.tensors[p.index]!.name)!;
        if (open && open.s !== s) throw new AggregationError(`tensor "${open.s.name}" ended after ${open.filled} of ${open.s.n} elements`);
        open ??= { s, filled: 0 };
        const size = dtypeSize(p.dtype);
        const start = p.offset / size;
        if (start !== open.filled) throw new AggregationError(`tensor "${s.name}": piece at element ${start}, expected ${open.filled}`);
        await stage.put(p.index, p.offset, p.bytes);
        open.filled += p.bytes.byteLength / size;
        if (open.filled === s.n) open = null;
      }
      if (open) throw new AggregationError(`result ended inside tensor "${open.s.name}" (${open.filled} of ${open.s.n} elements)`);
      if (this.done) throw new AggregationError('result() was taken while this result arrived');
      // the whole result is here: fold it (a result of weight 0 counts for nothing, not even its NaNs)
      const diff = paramsType === 'DIFF';
      let filled = 0;
      for await (const p of stage.replay()) {
        const info = stream.header.tensors[p.index]!;
        const s = this.slots.get(info.name)!;
        const view = viewAs(info.dtype, p.bytes);
        const start = p.offset / dtypeSize(info.dtype);
        s.acc ??= new Float64Array(s.n * s.width).fill(-0); // -0 + x is x, signed zeros included
        if (weight > 0)
          foldInto(
            s.acc,
            start,
            s.width,
            { dtype: info.dtype, data: view },
            weight,
            diff ? { dtype: s.dtype, data: s.global.subarray(start, start + view.length) } : null,
          );
        filled = start + view.length;
        if (filled === s.n) s.weights.push(weight);
      }
    } finally {
      await stage.close();
    }
    this.contributions++;
    this.total += weight;
  }

  /** The new global model: per tensor, the weighted mean of the results folded (by exact-sum.ts's rule), else the global value. */
  result(): TensorDict {
    if (this.done) throw new AggregationError('result() was already taken from this aggregator');
    this.done = true;
    const out: TensorDict = new Map();
    for (const [name, s] of this.slots) {
      const g = this.global.get(name)!;
      const acc = s.acc;
      const w = totalWeight(s.weights);
      if (!acc || !(w.hi > 0)) {
        out.set(name, g);
        continue;
      }
      const data = allocate(s.dtype, s.n);
      finishInto(acc, 0, s.width, w, s.dtype, data, 0, s.n);
      // released tensor by tensor, so the accumulator shrinks as the result grows
      s.acc = null;
      out.set(name, { dtype: s.dtype, shape: s.shape, data });
    }
    return out;
  }
}
