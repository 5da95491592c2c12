/**
 * Server-side optimizers on the pseudo-gradient (FedOpt, Reddi et al. 2021,
 * "Adaptive Federated Optimization", Algorithm 2; FedAvgM, Hsu et al. 2019).
 *
 * A round's aggregate y (FedAvg's weighted mean of the results) and the global
 * model x give the pseudo-gradient Δ = y − x; the server then steps
 *
 *   FedAvgM:    m ← β·m + Δ                             x ← x + η·m
 *   FedAdagrad: m ← β₁·m + (1 − β₁)·Δ,  v ← v + Δ²       x ← x + η·m / (√v + τ)
 *   FedAdam:    m as above,  v ← β₂·v + (1 − β₂)·Δ²      "
 *   FedYogi:    m as above,  v ← v − (1 − β₂)·Δ²·sign(v − Δ²)   "
 *
 * with m₋₁ = 0 and v₋₁ = τ² (the paper's initialization; no bias correction,
 * as in the paper). The step runs chunk by chunk over each tensor, reading x, y
 * and the state from a TensorReader and writing the new model and state to a
 * TensorSink, so the same code serves a model in memory and one on disk: memory
 * is the state of the largest tensor plus a few chunks, whatever the model size. The state (m and v as F32 tensors
 * `m.<name>`, `v.<name>`, plus the step count in the metadata) is a safetensors
 * file or a TensorDict that the workflow persists every round, so a resumed
 * job continues exactly. Integer and boolean tensors (counters, masks) are not
 * optimized: they take the aggregate's value.
 */
import { z } from 'zod';
import { allocate, floatReader, floatWriter, isFloatDType } from '../core/dtypes.ts';
import type { TensorInfo } from '../core/safetensors-header.ts';
import { type TensorDict, numel } from '../core/tensor.ts';
import { type TensorReader, type TensorSink, chunks, dictReader, dictSink, fileReader, fileSink } from './tensor-io.ts';

const Rate = z.number().positive().finite();
const Beta = z.number().min(0).lt(1);
const Adaptive = { lr: Rate.default(0.01), beta1: Beta.default(0.9), beta2: Beta.default(0.99), tau: Rate.default(1e-3) };

export const ServerOptimizerSchema = z.discriminatedUnion('name', [
  z.strictObject({ name: z.literal('fedavgm'), lr: Rate.default(1), momentum: Beta.default(0.9) }),
  z.strictObject({ name: z.literal('fedadam'), ...Adaptive }),
  z.strictObject({ name: z.literal('fedyogi'), ...Adaptive }),
  // Flower's FedAdagrad default: no first moment (β₁ = 0)
  z.strictObject({ name: z.literal('fedadagrad'), ...Adaptive, beta1: Beta.default(0) }),
]);
export type ServerOptimizerConfig = z.infer<typeof ServerOptimizerSchema>;
export type ServerOptimizerInput = z.input<typeof ServerOptimizerSchema>;

export const STATE_KEYS = { optimizer: 'flotilla.server_optimizer', steps: 'flotilla.server_optimizer_steps' } as const;

const CHUNK = 1 << 16;

export class ServerOptimizerError extends Error {
  override readonly name = 'ServerOptimizerError';
}

export class ServerOptimizer {
  readonly config: ServerOptimizerConfig;

  constructor(config: ServerOptimizerInput) {
    this.config = ServerOptimizerSchema.parse(config);
  }

  /** which state tensors each optimized tensor has */
  get slots(): readonly ('m' | 'v')[] {
    return this.config.name === 'fedavgm' ? ['m'] : ['m', 'v'];
  }

  /** The state's tensors for a model: F32 `m.<name>` (and `v.<name>`) for each float tensor, in model order. */
  stateTensors(model: readonly TensorInfo[]): TensorInfo[] {
    return model
      .filter((t) => isFloatDType(t.dtype))
      .flatMap((t) => this.slots.map((slot) => ({ name: `${slot}.${t.name}`, dtype: 'F32' as const, shape: t.shape })));
  }

  /** Steps already taken according to a state (0 for none); fails if the state is another optimizer's or does not fit the model. */
  checkState(state: TensorReader | null, model: readonly TensorInfo[]): number {
    if (!state) return 0;
    const name = state.metadata[STATE_KEYS.optimizer];
    if (name !== this.config.name)
      throw new ServerOptimizerError(`optimizer state was written by ${name ?? 'something else'}, the job uses ${this.config.name}`);
    for (const t of this.stateTensors(model)) {
      const s = state.tensors.find((x) => x.name === t.name);
      if (!s || s.dtype !== 'F32' || s.shape.join(',') !== t.shape.join(','))
        throw new ServerOptimizerError(`optimizer state has no F32 tensor "${t.name}" of shape [${t.shape.join(', ')}]`);
    }
    const steps = Number(state.metadata[STATE_KEYS.steps] ?? '0');
    if (!Number.isInteger(steps) || steps < 0)
      throw new ServerOptimizerError(`optimizer state metadata ${STATE_KEYS.steps} is not a step count`);
    return steps;
  }

  /** Metadata of the state after one more step. */
  stateMetadata(stepsBefore: number): Record<string, string> {
    return {
      [STATE_KEYS.optimizer]: this.config.name,
      [STATE_KEYS.steps]: String(stepsBefore + 1),
      'flotilla.server_optimizer_config': JSON.stringify(this.config),
    };
  }

  /**
   * One server step: reads the global model x, the aggregate y and the state (null before the
   * first step), writes the new model (x's tensors and dtypes) to `model` and the new state to
   * `state` (opened with stateTensors(x.tensors)). Neither sink is closed here.
   */
  async step(x: TensorReader, y: TensorReader, state: TensorReader | null, model: TensorSink, stateOut: TensorSink): Promise<void> {
    this.checkState(state, x.tensors);
    for (const t of x.tensors) {
      if (!y.has(t.name)) throw new ServerOptimizerError(`aggregate has no tensor "${t.name}"`);
    }
    const c = this.config;
    const tau = c.name === 'fedavgm' ? 0 : c.tau;
    const adaptive = this.slots.length === 2;
    // the state of one tensor is held until the tensor is done (the state sink is written in its
    // header order, m then v of each tensor): memory is one tensor's m and v plus a chunk of x and y
    for (const t of x.tensors) {
      const n = numel(t.shape);
      if (!isFloatDType(t.dtype)) {
        for (const [i, k] of chunks(n, CHUNK)) await model.write(t.name, (await y.readElements(t.name, i, k)).slice());
        continue;
      }
      const ms: Float32Array[] = [];
      const vs: Float32Array[] = [];
      for (const [i, k] of chunks(n, CHUNK)) {
        const xr = floatReader(t.dtype, await x.readElements(t.name, i, k));
        const yDType = y.tensors.find((u) => u.name === t.name)!.dtype;
        const yr = floatReader(yDType, await y.readElements(t.name, i, k));
        const m = state ? Float32Array.from((await state.readElements(`m.${t.name}`, i, k)) as Float32Array) : new Float32Array(k);
        const v = adaptive
          ? state
            ? Float32Array.from((await state.readElements(`v.${t.name}`, i, k)) as Float32Array)
            : new Float32Array(k).fill(tau * tau)
          : null;
        const out = allocate(t.dtype, k);
        const put = floatWriter(t.dtype, out);
        for (let j = 0; j < k; j++) {
          const xj = xr(j);
          const d = yr(j) - xj;
          if (c.name === 'fedavgm') {
            m[j] = c.momentum * m[j]! + d;
            put(j, xj + c.lr * m[j]!);
            continue;
          }
          m[j] = c.beta1 * m[j]! + (1 - c.beta1) * d;
          const d2 = d * d;
          const vj = v![j]!;
          if (c.name === 'fedadagrad') v![j] = vj + d2;
          else if (c.name === 'fedadam') v![j] = c.beta2 * vj + (1 - c.beta2) * d2;
          else v![j] = vj - (1 - c.beta2) * d2 * Math.sign(vj - d2);
          put(j, xj + (c.lr * m[j]!) / (Math.sqrt(v![j]!) + tau));
        }
        await model.write(t.name, out);
        ms.push(m);
        if (v) vs.push(v);
      }
      for (const part of ms) await stateOut.write(`m.${t.name}`, part);
      for (const part of vs) await stateOut.write(`v.${t.name}`, part);
    }
  }
}

/** One step with everything in memory: the new model and state (metadata in `stateMetadata`). */
export async function stepInMemory(
  opt: ServerOptimizer,
  global: TensorDict,
  aggregate: TensorDict,
  state: { tensors: TensorDict; metadata: Record<string, string> } | null,
): Promise<{ model: TensorDict; state: TensorDict; stateMetadata: Record<string, string> }> {
  const x = dictReader(global);
  const st = state ? dictReader(state.tensors, state.metadata) : null;
  const steps = opt.checkState(st, x.tensors);
  const model = dictSink(x.tensors);
  const out = dictSink(opt.stateTensors(x.tensors));
  await opt.step(x, dictReader(aggregate), st, model, out);
  await model.close();
  await out.close();
  return { model: model.dict, state: out.dict, stateMetadata: opt.stateMetadata(steps) };
}

/**
 * One step from files to files (offload): reads the global model, the aggregate and the state
 * (`statePath` null before the first step) and writes the new model and state atomically, so a
 * crash between rounds leaves the previous files intact.
 */
export async function stepOnDisk(
  opt: ServerOptimizer,
  p: {
    global: string;
    aggregate: string;
    state: string | null;
    outModel: string;
    outState: string;
    modelMetadata?: Record<string, string>;
  },
): Promise<void> {
  const x = await fileReader(p.global);
  const y = await fileReader(p.aggregate).catch(async (e: unknown) => {
    await x.close();
    throw e;
  });
  const st = p.state
    ? await fileReader(p.state).catch(async (e: unknown) => {
        await x.close();
        await y.close();
        throw e;
      })
    : null;
  try {
    const steps = opt.checkState(st, x.tensors);
    const model = await fileSink(p.outModel, x.tensors, { ...x.metadata, ...p.modelMetadata });
    const out = await fileSink(p.outState, opt.stateTensors(x.tensors), opt.stateMetadata(steps)).catch(async (e: unknown) => {
      await model.abort();
      throw e;
    });
    try {
      await opt.step(x, y, st, model, out);
      await model.close();
      await out.close();
    } catch (e) {
      await model.abort();
      await out.abort();
      throw e;
    }
  } finally {
    await Promise.all([x.close(), y.close(), st?.close()]);
  }
}
