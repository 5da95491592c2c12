/**
 * Byzantine-robust aggregation: coordinate-wise median, coordinate-wise trimmed
 * mean (Yin et al. 2018) and Krum / Multi-Krum (Blanchard et al. 2017).
 *
 * Unlike FedAvg's running sum, these rules need every update of the round at
 * once. Each result is therefore staged on disk as it arrives (a safetensors
 * file per result, written as the stream comes in), and the new global model is
 * computed chunk by chunk over the tensors, reading the same element range of
 * every staged update: memory is N × chunk × 8 bytes (N results, 64 Ki elements
 * per chunk), never N models. Disk is N models (the staged results) for the
 * length of the round. Krum reads the staged updates twice (pairwise distances,
 * then the mean of the selected ones).
 *
 * FULL and DIFF results mix: a DIFF d counts as global + d (the rules are
 * translation invariant, so ranking models or updates is the same). A result
 * that breaks off mid-stream is not staged at all. A tensor a result left out
 * is decided by the results that carry it (the global value when none does).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { allocate, floatReader, floatWriter, type DType } from '../core/dtypes.ts';
import type { ParamsType } from '../core/fl-model.ts';
import { writeStreamToFile } from '../core/safetensors.ts';
import type { TensorInfo } from '../core/safetensors-header.ts';
import type { TensorStream } from '../core/tensor-stream.ts';
import { type TensorDict, numel } from '../core/tensor.ts';
import { AggregationError } from '../aggregators/weighted-average.ts';
import { type TensorReader, type TensorSink, chunks, dictSink, fileReader, fileSink, writeAll } from './tensor-io.ts';

export const RobustRuleSchema = z.discriminatedUnion('rule', [
  z.strictObject({ rule: z.literal('median') }),
  /** drop the `beta` fraction of values at each end of every coordinate, average the rest */
  z.strictObject({ rule: z.literal('trimmed_mean'), beta: z.number().min(0).lt(0.5).default(0.2) }),
  /** `byzantine`: sites assumed malicious (f); `select`: updates averaged (1 = Krum, more = Multi-Krum) */
  z.strictObject({ rule: z.literal('krum'), byzantine: z.number().int().min(0).default(1), select: z.number().int().min(1).default(1) }),
]);
export type RobustRule = z.infer<typeof RobustRuleSchema>;
export type RobustRuleInput = z.input<typeof RobustRuleSchema>;

const CHUNK = 1 << 16;

interface Staged {
  path: string;
  weight: number;
  diff: boolean;
  names: Set<string>;
}

export class RobustAggregator {
  private readonly staged: Staged[] = [];
  private pending = 0;
  private done = false;
  readonly rule: RobustRule;
  /** Krum's choice (indices into the staged results, in arrival order) once the result is written */
  selected: number[] | null = null;

  private constructor(
    private readonly global: TensorReader,
    private readonly dir: string,
    rule: RobustRuleInput,
  ) {
    this.rule = RobustRuleSchema.parse(rule);
  }

  /** `dir`: where results are staged (one safetensors file each), removed by close(). */
  static async open(global: TensorReader, dir: string, rule: RobustRuleInput): Promise<RobustAggregator> {
    const a = new RobustAggregator(global, join(dir, `robust-${randomBytes(4).toString('hex')}`), rule);
    await mkdir(a.dir, { recursive: true });
    return a;
  }

  get count(): number {
    return this.staged.length;
  }

  /** Stages one result on disk. Rejects (before writing) tensors the global model lacks or whose shape differs. */
  async add(stream: TensorStream, weight: number, paramsType: ParamsType): Promise<void> {
    if (this.done) throw new AggregationError('add() after the result was written');
    if (!(weight >= 0) || !Number.isFinite(weight)) throw new AggregationError(`weight must be a finite number ≥ 0, got ${weight}`);
    for (const t of stream.header.tensors) {
      const g = this.global.tensors.find((x) => x.name === t.name);
      if (!g) throw new AggregationError(`result has tensor "${t.name}" that the global model does not have`);
      if (t.shape.length !== g.shape.length || t.shape.some((d, i) => d !== g.shape[i])) {
        throw new AggregationError(`tensor "${t.name}": result shape [${t.shape.join(', ')}] differs from global [${g.shape.join(', ')}]`);
      }
    }
    const path = join(this.dir, `result-${this.pending++}.safetensors`);
    // not fsynced: a staged result only lives for the round
    await writeStreamToFile(path, stream, { durable: false });
    this.staged.push({ path, weight, diff: paramsType === 'DIFF', names: new Set(stream.header.tensors.map((t) => t.name)) });
  }

  /** Writes the aggregate (the global model's tensors and dtypes, in its order) to `sink`, which the caller closes. */
  async writeTo(sink: TensorSink): Promise<void> {
    if (this.done) throw new AggregationError('the result was already written');
    this.done = true;
    const n = this.staged.length;
    if (n === 0) throw new AggregationError('no results to aggregate');
    const readers: TensorReader[] = [];
    try {
      for (const s of this.staged) readers.push(await fileReader(s.path));
      if (this.rule.rule === 'krum') this.selected = await this.krumSelect(readers, this.rule.byzantine, this.rule.select);
      for (const t of this.global.tensors) {
        const carriers = this.staged.map((s, i) => i).filter((i) => this.staged[i]!.names.has(t.name));
        for (const [start, k] of chunks(numel(t.shape), CHUNK)) {
          const g = floatReader(t.dtype, await this.global.readElements(t.name, start, k));
          const out = allocate(t.dtype, k);
          const put = writerFor(t.dtype, out);
          if (carriers.length === 0) {
            for (let j = 0; j < k; j++) put(j, g(j));
          } else {
            const cols = await Promise.all(carriers.map((i) => this.values(readers[i]!, i, t, start, k, g)));
            this.combine(carriers, cols, k, put);
          }
          await sink.write(t.name, out);
        }
      }
    } finally {
      await Promise.all(readers.map((r) => r.close()));
      await this.close();
    }
  }

  async result(): Promise<TensorDict> {
    const sink = dictSink(this.global.tensors);
    await writeAll(sink, (s) => this.writeTo(s));
    return sink.dict;
  }

  /** Writes the aggregate to a safetensors file, atomically. */
  async writeResult(path: string, metadata: Record<string, string> = {}): Promise<void> {
    await writeAll(await fileSink(path, this.global.tensors, { ...this.global.metadata, ...metadata }), (s) => this.writeTo(s));
  }

  /** Removes the staged results. */
  async close(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }

  /** Elements [start, start + k) of staged result i as full-model values. */
  private async values(
    r: TensorReader,
    i: number,
    t: TensorInfo,
    start: number,
    k: number,
    g: (j: number) => number,
  ): Promise<Float64Array> {
    const dtype = r.tensors.find((x) => x.name === t.name)!.dtype;
    const x = floatReader(dtype, await r.readElements(t.name, start, k));
    const col = new Float64Array(k);
    if (this.staged[i]!.diff) for (let j = 0; j < k; j++) col[j] = x(j) + g(j);
    else for (let j = 0; j < k; j++) col[j] = x(j);
    return col;
  }

  private combine(carriers: number[], cols: Float64Array[], k: number, put: (j: number, v: number) => void): void {
    const rule = this.rule;
    const m = cols.length;
    if (rule.rule === 'krum') {
      const chosen = carriers.map((i, c) => [i, c] as const).filter(([i]) => this.selected!.includes(i));
      // results that left this tensor out: the chosen ones that carry it decide, else all carriers (plain mean)
      const use = chosen.length > 0 ? chosen : carriers.map((i, c) => [i, c] as const);
      let wsum = use.reduce((a, [i]) => a + this.staged[i]!.weight, 0);
      const uniform = wsum === 0;
      if (uniform) wsum = use.length;
      for (let j = 0; j < k; j++) {
        let acc = 0;
        for (const [i, c] of use) acc += (uniform ? 1 : this.staged[i]!.weight) * cols[c]![j]!;
        put(j, acc / wsum);
      }
      return;
    }
    const col = new Float64Array(m);
    const trim = rule.rule === 'trimmed_mean' ? Math.floor(rule.beta * m) : 0;
    for (let j = 0; j < k; j++) {
      for (let c = 0; c < m; c++) col[c] = cols[c]![j]!;
      col.sort();
      if (rule.rule === 'median') {
        put(j, m % 2 === 1 ? col[(m - 1) / 2]! : (col[m / 2 - 1]! + col[m / 2]!) / 2);
      } else {
        let acc = 0;
        for (let c = trim; c < m - trim; c++) acc += col[c]!;
        put(j, acc / (m - 2 * trim));
      }
    }
  }

  /**
   * Krum's score of result i: the sum of squared distances to its n − f − 2 nearest other
   * results; the `select` lowest-scoring are kept (Blanchard et al. require n > 2f + 2).
   */
  private async krumSelect(readers: TensorReader[], f: number, select: number): Promise<number[]> {
    const n = readers.length;
    if (n < 2 * f + 3) throw new AggregationError(`krum with byzantine = ${f} needs at least ${2 * f + 3} results, got ${n}`);
    if (select > n - f) throw new AggregationError(`krum select = ${select} is more than results − byzantine = ${n - f}`);
    const dist = Array.from({ length: n }, () => new Float64Array(n));
    for (const t of this.global.tensors) {
      for (const [start, k] of chunks(numel(t.shape), CHUNK)) {
        const g = floatReader(t.dtype, await this.global.readElements(t.name, start, k));
        const gcol = new Float64Array(k);
        for (let j = 0; j < k; j++) gcol[j] = g(j);
        // a result without this tensor is at the global value there
        const cols = await Promise.all(
          readers.map(async (r, i) => (this.staged[i]!.names.has(t.name) ? this.values(r, i, t, start, k, g) : gcol)),
        );
        for (let a = 0; a < n; a++) {
          for (let b = a + 1; b < n; b++) {
            const x = cols[a]!;
            const y = cols[b]!;
            let s = 0;
            for (let j = 0; j < k; j++) s += (x[j]! - y[j]!) ** 2;
            dist[a]![b]! += s;
            dist[b]![a]! += s;
          }
        }
      }
    }
    const near = n - f - 2;
    const scores = dist.map((row, i) =>
      [...row]
        .filter((_, j) => j !== i)
        .sort((p, q) => p - q)
        .slice(0, near)
        .reduce((a, b) => a + b, 0),
    );
    return scores
      .map((s, i) => [s, i] as const)
      .sort((p, q) => p[0] - q[0] || p[1] - q[1])
      .slice(0, select)
      .map(([, i]) => i)
      .sort((p, q) => p - q);
  }
}

/** Float tensors take the value; integer tensors round it; BOOL is true when at least half say so. */
function writerFor(dtype: DType, out: ReturnType<typeof allocate>): (j: number, v: number) => void {
  const put = floatWriter(dtype, out);
  if (dtype === 'BOOL') return (j, v) => put(j, v >= 0.5 ? 1 : 0);
  if (dtype.startsWith('I') || dtype === 'U8') return (j, v) => put(j, Math.round(v));
  return put;
}
