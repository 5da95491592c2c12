/**
 * FedAvg's aggregator: one running weighted sum, never N models.
 *
 * Each result is folded in as its stream arrives. A tensor's pieces are staged
 * in one scratch buffer and folded when the tensor is complete, so a result
 * that breaks off mid-stream leaves every tensor either fully counted or not
 * at all (weights are kept per tensor). Memory: the global model, one float32
 * accumulator, and one scratch buffer the size of the largest tensor. Several
 * results may be added concurrently: they take turns tensor by tensor.
 *
 * FULL results are averaged as they are; a DIFF result d counts as global + d,
 * so FULL and DIFF results can be mixed in one round. Tensors a client leaves
 * out (excluded variables, adapters only) keep the other clients' average, or
 * the global value when nobody sent them.
 */
import { type DType, dtypeSize, floatReader, floatWriter, viewAs, allocate } from '../core/dtypes.ts';
import type { ParamsType } from '../core/fl-model.ts';
import type { TensorStream } from '../core/tensor-stream.ts';
import { FifoLock } from './fifo-lock.ts';
import { type TensorDict, numel } from '../core/tensor.ts';

export class AggregationError extends Error {
  override readonly name = 'AggregationError';
}

interface Slot {
  dtype: DType;
  shape: readonly number[];
  n: number;
  acc: Float32Array | null;
  weight: number;
  global: (i: number) => number;
}

export class WeightedAverage {
  private readonly slots = new Map<string, Slot>();
  private scratch = new Float32Array(0);
  private readonly lock = new FifoLock();
  private contributions = 0;
  private total = 0;
  private done = false;

  constructor(private readonly global: TensorDict) {
    for (const [name, t] of global) {
      this.slots.set(name, { dtype: t.dtype, shape: t.shape, n: numel(t.shape), acc: null, weight: 0, global: floatReader(t.dtype, t.data) });
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
    let current = -1;
    let filled = 0;
    // Concurrent results take turns one tensor at a time: the scratch buffer is held from a
    // tensor's first piece until it is folded, so the other results wait at most one tensor each.
    let release: (() => void) | null = null;
    try {
      for await (const p of stream.pieces()) {
        const info = stream.header.tensors[p.index]!;
        const s = this.slots.get(info.name)!;
        if (p.index !== current) {
          release?.();
          release = await this.lock.acquire();
          current = p.index;
          filled = 0;
          if (this.scratch.length < s.n) this.scratch = new Float32Array(s.n);
        }
        const start = p.offset / dtypeSize(p.dtype);
        const view = viewAs(p.dtype, p.bytes);
        const scratch = this.scratch;
        if (p.dtype === 'F32') {
          scratch.set(view as Float32Array, start);
        } else {
          const read = floatReader(p.dtype, view);
          for (let j = 0; j < view.length; j++) scratch[start + j] = read(j);
        }
        filled += view.length;
        if (filled === s.n) {
          this.fold(s, weight, diff);
          release!();
          release = null;
        }
      }
    } finally {
      (release as (() => void) | null)?.();
    }
    this.contributions++;
    this.total += weight;
  }

  private fold(s: Slot, w: number, diff: boolean): void {
    s.acc ??= new Float32Array(s.n);
    const acc = s.acc;
    const x = this.scratch;
    if (diff) {
      for (let i = 0; i < s.n; i++) acc[i]! += w * (x[i]! + s.global(i));
    } else {
      for (let i = 0; i < s.n; i++) acc[i]! += w * x[i]!;
    }
    s.weight += w;
  }

  /**
   * The new global model: per tensor, the weighted mean of what arrived, else
   * the global value. F32 means are computed in place in the accumulator (no
   * third copy of the model), so the aggregator can be used once.
   */
  result(): TensorDict {
    if (this.done) throw new AggregationError('result() was already taken from this aggregator');
    this.done = true;
    const out: TensorDict = new Map();
    for (const [name, s] of this.slots) {
      const g = this.global.get(name)!;
      if (!s.acc || s.weight === 0) {
        out.set(name, g);
        continue;
      }
      const inv = 1 / s.weight;
      if (s.dtype === 'F32') {
        const d = s.acc;
        for (let i = 0; i < s.n; i++) d[i]! *= inv;
        out.set(name, { dtype: 'F32', shape: s.shape, data: d });
        s.acc = null;
        continue;
      }
      const data = allocate(s.dtype, s.n);
      if (s.dtype === 'BOOL') {
        const d = data as Uint8Array;
        for (let i = 0; i < s.n; i++) d[i] = s.acc[i]! * inv >= 0.5 ? 1 : 0;
      } else {
        const write = floatWriter(s.dtype, data);
        const isInt = s.dtype.startsWith('I') || s.dtype === 'U8';
        for (let i = 0; i < s.n; i++) write(i, isInt ? Math.round(s.acc[i]! * inv) : s.acc[i]! * inv);
      }
      out.set(name, { dtype: s.dtype, shape: s.shape, data });
    }
    return out;
  }
}
