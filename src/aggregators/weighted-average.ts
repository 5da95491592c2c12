/**
 * FedAvg's aggregator: one running weighted sum, never N models.
 *
 * Each result is folded in chunk by chunk as its stream arrives: a piece is
 * added to the accumulator (float64, or double-double for F64/I64 tensors:
 * exact-sum.ts) and dropped, so memory is the global model, one accumulator
 * and the pieces in flight, whatever the size of the largest
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
import { type DType, type TypedArray, dtypeSize, viewAs, allocate } from '../core/dtypes.ts';
import type { ParamsType } from '../core/fl-model.ts';
import type { TensorStream } from '../core/tensor-stream.ts';
import { type TensorDict, numel } from '../core/tensor.ts';
import { type Weight, accWidth, finishInto, foldInto, totalWeight } from './exact-sum.ts';

export class AggregationError extends Error {
  override readonly name = 'AggregationError';
}

interface Slot {
  name: string;
  dtype: DType;
  shape: readonly number[];
  n: number;
  width: 1 | 2;
  acc: Float64Array | null;
  /** weights of the results that delivered this tensor whole */
  weights: number[];
  /** results that broke off inside this tensor: `weight` counts for elements [0, upTo) */
  partial: { upTo: number; weight: number }[];
  global: TypedArray;
}

export class WeightedAverage {
  private readonly slots = new Map<string, Slot>();
  private contributions = 0;
  private total = 0;
  private done = false;

  constructor(private readonly global: TensorDict) {
    for (const [name, t] of global) {
      this.slots.set(name, {
        name,
        dtype: t.dtype,
        shape: t.shape,
        n: numel(t.shape),
        width: accWidth(t.dtype),
        acc: null,
        weights: [],
        partial: [],
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
        s.acc ??= new Float64Array(s.n * s.width).fill(-0); // -0 + x is x, signed zeros included
        // a result of weight 0 counts for nothing (not even its NaNs and infinities)
        if (weight > 0)
          foldInto(
            s.acc,
            start,
            s.width,
            { dtype: p.dtype, data: view },
            weight,
            diff ? { dtype: s.dtype, data: s.global.subarray(start, start + view.length) } : null,
          );
        open.filled += view.length;
        if (open.filled === s.n) {
          s.weights.push(weight);
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

  /** Calls `each(from, to, weight)` over [0, n) in ranges of equal total weight (whole results plus partial ones). */
  private static ranges(s: Slot, each: (from: number, to: number, weight: Weight) => void): void {
    const cuts = [...s.partial].sort((a, b) => a.upTo - b.upTo);
    let from = 0;
    for (const [k, c] of cuts.entries()) {
      // the results that reached beyond `from`: whole ones and the partial ones from this cut on
      if (c.upTo > from) each(from, c.upTo, totalWeight([...s.weights, ...cuts.slice(k).map((p) => p.weight)]));
      from = Math.max(from, c.upTo);
    }
    if (from < s.n) each(from, s.n, totalWeight(s.weights));
  }

  /** The new global model: per element, the weighted mean of what arrived (by exact-sum.ts's rule), else the global value. */
  result(): TensorDict {
    if (this.done) throw new AggregationError('result() was already taken from this aggregator');
    this.done = true;
    const out: TensorDict = new Map();
    for (const [name, s] of this.slots) {
      const g = this.global.get(name)!;
      const acc = s.acc;
      if (!acc || [...s.weights, ...s.partial.map((p) => p.weight)].every((w) => w === 0)) {
        out.set(name, g);
        continue;
      }
      const data = allocate(s.dtype, s.n);
      WeightedAverage.ranges(s, (from, to, w) => {
        if (w.hi > 0) finishInto(acc, from, s.width, w, s.dtype, data, from, to - from);
        else copyElements(s.global, data, from, to, dtypeSize(s.dtype));
      });
      // released tensor by tensor, so the accumulator shrinks as the result grows
      s.acc = null;
      out.set(name, { dtype: s.dtype, shape: s.shape, data });
    }
    return out;
  }
}

/** data[from, to) = src[from, to), as bytes (both of one dtype of `size` bytes). */
function copyElements(src: TypedArray, data: TypedArray, from: number, to: number, size: number): void {
  new Uint8Array(data.buffer, data.byteOffset, data.byteLength).set(
    new Uint8Array(src.buffer, src.byteOffset + from * size, (to - from) * size),
    from * size,
  );
}
