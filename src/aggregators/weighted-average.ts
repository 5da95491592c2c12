/**
 * FedAvg's aggregator: one running weighted sum, never N models.
 *
 * Each result is folded in chunk by chunk as its stream arrives: a piece is
 * added to the float32 accumulator and dropped, so memory is the global model,
 * one accumulator and the pieces in flight, whatever the size of the largest
 * tensor or the number of results. Results are added concurrently, each at the
 * pace of its own stream (no result waits for another, so no sender stalls).
 *
 * Weights are kept per element range: a tensor a result delivered whole counts
 * with the result's weight; a result that breaks off inside a tensor counts
 * only for the elements it delivered (its weight is recorded up to that
 * offset), so every element is the exact weighted mean of the values that
 * reached it. An element nobody delivered keeps the global value.
 *
 * FULL results are averaged as they are; a DIFF result d counts as global + d,
 * so FULL and DIFF results can be mixed in one round. Tensors a client leaves
 * out (excluded variables, adapters only) keep the other clients' average, or
 * the global value when nobody sent them.
 */
import { type DType, dtypeSize, floatReader, floatWriter, viewAs, allocate } from '../core/dtypes.ts';
import type { ParamsType } from '../core/fl-model.ts';
import type { TensorStream } from '../core/tensor-stream.ts';
import { type TensorDict, numel } from '../core/tensor.ts';

export class AggregationError extends Error {
  override readonly name = 'AggregationError';
}

interface Slot {
  name: string;
  dtype: DType;
  shape: readonly number[];
  n: number;
  acc: Float32Array | null;
  /** total weight of the results that delivered this tensor whole */
  weight: number;
  /** results that broke off inside this tensor: `weight` counts for elements [0, upTo) */
  partial: { upTo: number; weight: number }[];
  global: (i: number) => number;
}

export class WeightedAverage {
  private readonly slots = new Map<string, Slot>();
  private contributions = 0;
  private total = 0;
  private done = false;

  constructor(private readonly global: TensorDict) {
    for (const [name, t] of global) {
      this.slots.set(name, { name, dtype: t.dtype, shape: t.shape, n: numel(t.shape), acc: null, weight: 0, partial: [], global: floatReader(t.dtype, t.data) });
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
    if (!(weight >= 0) || !Number.isFinite(weight)) throw new AggregationError(`weight must be a finite number ≥ 0, got ${weight}`);
    for (const t of stream.header.tensors) {
      const s = this.slots.get(t.name);
      if (!s) throw new AggregationError(`result has tensor "${t.name}" that the global model does not have`);
      if (numel(t.shape) !== s.n || t.shape.length !== s.shape.length || t.shape.some((d, i) => d !== s.shape[i])) {
        throw new AggregationError(`tensor "${t.name}": result shape [${t.shape.join(', ')}] differs from global [${s.shape.join(', ')}]`);
      }
      if (t.dtype === 'BOOL' && s.dtype !== 'BOOL') throw new AggregationError(`tensor "${t.name}": BOOL result for a ${s.dtype} tensor`);
    }
    const diff = paramsType === 'DIFF';
    // the tensor being folded and how many of its elements arrived (null between tensors)
    let open: { s: Slot; filled: number } | null = null;
    try {
      for await (const p of stream.pieces()) {
        const s = this.slots.get(stream.header.tensors[p.index]!.name)!;
        if (open && open.s !== s) throw new AggregationError(`tensor "${open.s.name}" ended after ${open.filled} of ${open.s.n} elements`);
        open ??= { s, filled: 0 };
        const start = p.offset / dtypeSize(p.dtype);
        if (start !== open.filled) throw new AggregationError(`tensor "${s.name}": piece at element ${start}, expected ${open.filled}`);
        const view = viewAs(p.dtype, p.bytes);
        this.fold(s, start, view, p.dtype, weight, diff);
        open.filled += view.length;
        if (open.filled === s.n) {
          s.weight += weight;
          open = null;
        }
      }
      if (open) throw new AggregationError(`result ended inside tensor "${open.s.name}" (${open.filled} of ${open.s.n} elements)`);
    } finally {
      // a result that broke off mid-tensor counts for the elements it delivered
      if (open && open.filled > 0) open.s.partial.push({ upTo: open.filled, weight });
    }
    this.contributions++;
    this.total += weight;
  }

  /** acc[start + j] += w · x[j] (DIFF: w · (x[j] + global)), converting from the piece's dtype. */
  private fold(s: Slot, start: number, view: ReturnType<typeof viewAs>, dtype: DType, w: number, diff: boolean): void {
    s.acc ??= new Float32Array(s.n);
    const acc = s.acc;
    const m = view.length;
    if (dtype === 'F32' && !diff) {
      const x = view as Float32Array;
      for (let j = 0; j < m; j++) acc[start + j]! += w * x[j]!;
      return;
    }
    const read = floatReader(dtype, view);
    const g = s.global;
    if (diff) for (let j = 0; j < m; j++) acc[start + j]! += w * (read(j) + g(start + j));
    else for (let j = 0; j < m; j++) acc[start + j]! += w * read(j);
  }

  /** Calls `each(from, to, weight)` over [0, n) in ranges of equal total weight (whole results plus partial ones). */
  private static ranges(s: Slot, each: (from: number, to: number, weight: number) => void): void {
    const cuts = [...s.partial].sort((a, b) => a.upTo - b.upTo);
    let extra = cuts.reduce((sum, c) => sum + c.weight, 0);
    let from = 0;
    for (const c of cuts) {
      if (c.upTo > from) each(from, c.upTo, s.weight + extra);
      from = Math.max(from, c.upTo);
      extra -= c.weight;
    }
    if (from < s.n) each(from, s.n, s.weight);
  }

  /**
   * The new global model: per element, the weighted mean of what arrived, else the global
   * value. F32 means are computed in place in the accumulator (no third copy of the model),
   * so the aggregator can be used once.
   */
  result(): TensorDict {
    if (this.done) throw new AggregationError('result() was already taken from this aggregator');
    this.done = true;
    const out: TensorDict = new Map();
    for (const [name, s] of this.slots) {
      const g = this.global.get(name)!;
      const acc = s.acc;
      if (!acc || (s.weight === 0 && s.partial.every((p) => p.weight === 0))) {
        out.set(name, g);
        continue;
      }
      if (s.dtype === 'F32') {
        WeightedAverage.ranges(s, (from, to, w) => {
          if (w > 0) {
            const inv = 1 / w;
            for (let i = from; i < to; i++) acc[i]! *= inv;
          } else for (let i = from; i < to; i++) acc[i] = s.global(i);
        });
        out.set(name, { dtype: 'F32', shape: s.shape, data: acc });
        s.acc = null;
        continue;
      }
      const data = allocate(s.dtype, s.n);
      const isBool = s.dtype === 'BOOL';
      const isInt = s.dtype.startsWith('I') || s.dtype === 'U8';
      const write = isBool ? null : floatWriter(s.dtype, data);
      WeightedAverage.ranges(s, (from, to, w) => {
        for (let i = from; i < to; i++) {
          const v = w > 0 ? acc[i]! / w : s.global(i);
          if (isBool) (data as Uint8Array)[i] = v >= 0.5 ? 1 : 0;
          else write!(i, isInt ? Math.round(v) : v);
        }
      });
      out.set(name, { dtype: s.dtype, shape: s.shape, data });
    }
    return out;
  }
}
