/**
 * SCAFFOLD's control variates (Karimireddy et al. 2020, option II), as plain
 * tensor math shared by the server workflow and the trainers' helpers.
 *
 * Client i, holding its variate cᵢ and given the global model x and the server
 * variate c, trains K local steps of learning rate η_l, correcting each step by
 * −η_l·(c − cᵢ) (applied after the optimizer's step, as NVFlare does, so it
 * works with any local optimizer), reaching yᵢ; then
 *     cᵢ⁺ = cᵢ − c + (x − yᵢ) / (K·η_l),   Δcᵢ = cᵢ⁺ − cᵢ.
 * The server, with S of N sites in the round:
 *     x ← x + η_g·mean(yᵢ − x),            c ← c + (|S| / N)·mean(Δcᵢ).
 *
 * On the wire, c travels with the task and Δcᵢ with the result as extra F32
 * tensors named `scaffold.c.<name>` and `scaffold.dc.<name>` in the same tensor
 * stream as the model (meta carries only JSON), so variates stream like the
 * model and any trainer that reads params reads them.
 */
import { floatReader } from '../core/dtypes.ts';
import { type Tensor, type TensorDict, tensor } from '../core/tensor.ts';

export const SCAFFOLD_PREFIX = { control: 'scaffold.c.', delta: 'scaffold.dc.' } as const;

/** meta keys of a SCAFFOLD task and result */
export const ScaffoldMeta = {
  /** the task: marks the params as carrying `scaffold.c.*` */
  enabled: 'scaffold',
  /** the result: local steps K and learning rate η_l behind Δcᵢ (informational) */
  steps: 'scaffold_steps',
} as const;

/** Splits params into the model and the tensors under `prefix` (prefix stripped). */
export function splitPrefixed(params: TensorDict, prefix: string): { model: TensorDict; extra: TensorDict } {
  const model: TensorDict = new Map();
  const extra: TensorDict = new Map();
  for (const [name, t] of params) {
    if (name.startsWith(prefix)) extra.set(name.slice(prefix.length), t);
    else model.set(name, t);
  }
  return { model, extra };
}

/** `model` plus each tensor of `extra` under `prefix`. */
export function withPrefixed(model: TensorDict, extra: TensorDict, prefix: string): TensorDict {
  const out: TensorDict = new Map(model);
  for (const [name, t] of extra) out.set(prefix + name, t);
  return out;
}

/** F32 zeros shaped like each float tensor of `model` (the initial c and cᵢ). */
export function zerosLike(model: TensorDict): TensorDict {
  const out: TensorDict = new Map();
  for (const [name, t] of model)
    if (t.dtype === 'F32' || t.dtype === 'F64' || t.dtype === 'F16' || t.dtype === 'BF16') out.set(name, tensor('F32', t.shape));
  return out;
}

function f32Of(t: Tensor): (i: number) => number {
  return floatReader(t.dtype, t.data);
}

/**
 * The client's step after local training: cᵢ⁺ and Δcᵢ for each tensor of c.
 * `x`: the global model received, `y`: the trained model, `steps`: K, `lr`: η_l.
 */
export function clientControlUpdate(p: { ci: TensorDict; c: TensorDict; x: TensorDict; y: TensorDict; steps: number; lr: number }): {
  ci: TensorDict;
  delta: TensorDict;
} {
  if (!(p.steps > 0) || !(p.lr > 0)) throw new Error(`SCAFFOLD needs steps > 0 and lr > 0, got steps ${p.steps}, lr ${p.lr}`);
  const scale = 1 / (p.steps * p.lr);
  const ci: TensorDict = new Map();
  const delta: TensorDict = new Map();
  for (const [name, c] of p.c) {
    const x = p.x.get(name);
    const y = p.y.get(name);
    if (!x || !y)
      throw new Error(`SCAFFOLD: tensor "${name}" of the control variate is missing from the ${x ? 'trained' : 'global'} model`);
    const old = p.ci.get(name);
    const cr = f32Of(c);
    const xr = f32Of(x);
    const yr = f32Of(y);
    const or = old ? f32Of(old) : () => 0;
    const next = tensor('F32', c.shape);
    const d = tensor('F32', c.shape);
    for (let i = 0; i < next.data.length; i++) {
      next.data[i] = or(i) - cr(i) + (xr(i) - yr(i)) * scale;
      d.data[i] = next.data[i]! - or(i);
    }
    ci.set(name, next);
    delta.set(name, d);
  }
  return { ci, delta };
}

/** The server's variate update: c + fraction·meanDelta, where fraction = |S| / N. */
export function serverControlUpdate(c: TensorDict, meanDelta: TensorDict, fraction: number): TensorDict {
  const out: TensorDict = new Map();
  for (const [name, t] of c) {
    const d = meanDelta.get(name);
    const next = tensor('F32', t.shape);
    const cr = f32Of(t);
    const dr = d ? f32Of(d) : () => 0;
    for (let i = 0; i < next.data.length; i++) next.data[i] = cr(i) + fraction * dr(i);
    out.set(name, next);
  }
  return out;
}
