/**
 * A Llama-architecture causal LM built from tfjs ops and variables: token
 * embedding, RMSNorm, rotary position embeddings, grouped-query attention,
 * SwiGLU MLP, tied or untied head, optional LoRA adapters.
 *
 * Weights carry Hugging Face names. Linear weights are kept in memory as
 * [in, out] (HF stores [out, in]) because x @ W is the fast path on wasm;
 * they are transposed at the TensorDict boundary.
 *
 * Rotary convention: Hugging Face's "rotate half" (dimension j pairs with
 * j + head_dim/2). llama2.c rotates interleaved pairs (2i, 2i+1); its q/k
 * rows are permuted on load (llama2c.ts), exactly as HF's conversion script does.
 */
import type { TensorDict } from 'flotilla/core';
import { tf } from './backend.ts';
import { type LlamaConfig, headDim, validateConfig } from './config.ts';
import { type FloatDType, fromTf, toTf } from './convert.ts';
import { embedding, mm, mmConst, rmsNorm, silu } from './ops.ts';
import { Rng } from './rng.ts';

export const ATTN_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj'] as const;
export const MLP_MODULES = ['gate_proj', 'up_proj', 'down_proj'] as const;
export type ModuleName = (typeof ATTN_MODULES)[number] | (typeof MLP_MODULES)[number];

export interface LoraConfig {
  rank: number;
  alpha: number;
  dropout: number;
  /** which projections get adapters */
  targets: readonly ModuleName[];
}

/** PEFT saves adapters under this prefix (PeftModel wraps LlamaForCausalLM as base_model.model). */
export const PEFT_PREFIX = 'base_model.model.';

interface Adapter {
  /** [in, r]; PEFT's lora_A.weight is [r, in] */
  a: tf.Variable;
  /** [r, out]; PEFT's lora_B.weight is [out, r] */
  b: tf.Variable;
}

function modulePath(layer: number, m: ModuleName): string {
  const group = (ATTN_MODULES as readonly string[]).includes(m) ? 'self_attn' : 'mlp';
  return `model.layers.${layer}.${group}.${m}`;
}

/** Shapes of every base weight, HF layout ([out, in] for linears), in HF order. */
export function weightShapes(c: LlamaConfig): Map<string, number[]> {
  const hd = headDim(c);
  const kv = c.nKvHeads * hd;
  const s = new Map<string, number[]>();
  s.set('model.embed_tokens.weight', [c.vocabSize, c.dim]);
  for (let l = 0; l < c.nLayers; l++) {
    const p = `model.layers.${l}`;
    s.set(`${p}.input_layernorm.weight`, [c.dim]);
    s.set(`${p}.self_attn.q_proj.weight`, [c.dim, c.dim]);
    s.set(`${p}.self_attn.k_proj.weight`, [kv, c.dim]);
    s.set(`${p}.self_attn.v_proj.weight`, [kv, c.dim]);
    s.set(`${p}.self_attn.o_proj.weight`, [c.dim, c.dim]);
    s.set(`${p}.post_attention_layernorm.weight`, [c.dim]);
    s.set(`${p}.mlp.gate_proj.weight`, [c.hiddenDim, c.dim]);
    s.set(`${p}.mlp.up_proj.weight`, [c.hiddenDim, c.dim]);
    s.set(`${p}.mlp.down_proj.weight`, [c.dim, c.hiddenDim]);
  }
  s.set('model.norm.weight', [c.dim]);
  if (!c.tieEmbeddings) s.set('lm_head.weight', [c.vocabSize, c.dim]);
  return s;
}

/** Linear weights are the 2-D ones other than the embedding; they are stored transposed. */
function isLinear(name: string): boolean {
  return name.endsWith('_proj.weight') || name === 'lm_head.weight';
}

export class LlamaModel {
  readonly config: LlamaConfig;
  private readonly weights = new Map<string, tf.Variable>();
  private readonly adapters = new Map<string, Adapter>();
  private lora: LoraConfig | undefined;
  private dropoutRng = new Rng(1);
  private readonly cache = new Map<string, tf.Tensor>();

  private constructor(config: LlamaConfig, init: (name: string, shape: number[]) => tf.Tensor) {
    this.config = validateConfig(config);
    for (const [name, shape] of weightShapes(config)) {
      const t = init(name, shape);
      const stored = isLinear(name) ? tf.tidy(() => tf.transpose(t)) : t;
      this.weights.set(name, tf.variable(stored, true));
      if (stored !== t) stored.dispose();
      t.dispose();
    }
  }

  /** Random init: N(0, 0.02), residual output projections scaled by 1/√(2·layers) (GPT-2), norms at 1. */
  static create(config: LlamaConfig, seed: number): LlamaModel {
    const rng = new Rng(seed);
    return new LlamaModel(config, (name, shape) => {
      const n = shape.reduce((a, b) => a * b, 1);
      if (name.endsWith('norm.weight')) return tf.ones(shape);
      const residual = name.endsWith('o_proj.weight') || name.endsWith('down_proj.weight');
      const std = residual ? 0.02 / Math.sqrt(2 * config.nLayers) : 0.02;
      return tf.tensor(rng.normalArray(n, std), shape);
    });
  }

  /** A model holding exactly the weights of `dict` (HF names and layout; any float dtype). */
  static fromTensorDict(config: LlamaConfig, dict: TensorDict): LlamaModel {
    const m = LlamaModel.create(config, 0);
    m.loadTensorDict(dict);
    return m;
  }

  /** Copies base weights in; every expected name must be present with the right shape. */
  loadTensorDict(dict: TensorDict): void {
    const shapes = weightShapes(this.config);
    for (const [name, shape] of shapes) {
      const t = dict.get(name);
      if (!t) throw new Error(`weights: missing tensor "${name}"`);
      if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
        throw new Error(`weights: tensor "${name}" has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
      }
    }
    for (const name of dict.keys()) {
      if (!shapes.has(name) && !(name === 'lm_head.weight' && this.config.tieEmbeddings)) {
        throw new Error(`weights: unexpected tensor "${name}"`);
      }
    }
    for (const name of shapes.keys()) {
      const x = toTf(name, dict.get(name)!, isLinear(name));
      this.weights.get(name)!.assign(x);
      x.dispose();
    }
  }

  /** Base weights with HF names and layout. */
  toTensorDict(dtype: FloatDType = 'F32'): TensorDict {
    const d: TensorDict = new Map();
    for (const [name, v] of this.weights) d.set(name, fromTf(v, dtype, isLinear(name)));
    return d;
  }

  numParams(): number {
    let n = 0;
    for (const v of this.weights.values()) n += v.size;
    return n;
  }

  numAdapterParams(): number {
    let n = 0;
    for (const a of this.adapters.values()) n += a.a.size + a.b.size;
    return n;
  }

  // ---- LoRA --------------------------------------------------------------

  /**
   * Adds LoRA adapters (B = 0, A ~ U(±1/√in) as PEFT's kaiming init) and
   * freezes every base weight. y = x W + dropout(x) A B · alpha/rank.
   */
  addLora(cfg: LoraConfig, seed: number): void {
    if (this.lora) throw new Error('LoRA adapters already added');
    if (!(cfg.rank > 0) || !Number.isInteger(cfg.rank)) throw new Error(`lora.rank must be a positive integer, got ${cfg.rank}`);
    if (!(cfg.dropout >= 0 && cfg.dropout < 1)) throw new Error(`lora.dropout must be in [0, 1), got ${cfg.dropout}`);
    this.lora = cfg;
    this.dropoutRng = new Rng(seed ^ 0x5bd1e995);
    const rng = new Rng(seed);
    for (let l = 0; l < this.config.nLayers; l++) {
      for (const m of cfg.targets) {
        const path = modulePath(l, m);
        const [inDim, outDim] = this.weights.get(`${path}.weight`)!.shape as [number, number];
        const a = tf.variable(tf.tensor(rng.uniformArray(inDim * cfg.rank, 1 / Math.sqrt(inDim)), [inDim, cfg.rank]), true);
        const b = tf.variable(tf.zeros([cfg.rank, outDim]), true);
        this.adapters.set(path, { a, b });
      }
    }
    for (const v of this.weights.values()) v.trainable = false;
  }

  get loraConfig(): LoraConfig | undefined {
    return this.lora;
  }

  /** Adapter tensors named as PEFT saves them (`...q_proj.lora_A.weight` [r, in], `lora_B.weight` [out, r]). */
  adapterDict(dtype: FloatDType = 'F32'): TensorDict {
    const d: TensorDict = new Map();
    for (const [path, ad] of this.adapters) {
      d.set(`${PEFT_PREFIX}${path}.lora_A.weight`, fromTf(ad.a, dtype, true));
      d.set(`${PEFT_PREFIX}${path}.lora_B.weight`, fromTf(ad.b, dtype, true));
    }
    return d;
  }

  loadAdapterDict(dict: TensorDict): void {
    if (dict.size !== this.adapters.size * 2) {
      throw new Error(`adapters: expected ${this.adapters.size * 2} tensors, got ${dict.size}`);
    }
    for (const [path, ad] of this.adapters) {
      for (const [key, v] of [
        ['lora_A', ad.a],
        ['lora_B', ad.b],
      ] as const) {
        const name = `${PEFT_PREFIX}${path}.${key}.weight`;
        const t = dict.get(name);
        if (!t) throw new Error(`adapters: missing tensor "${name}"`);
        const [r, c] = v.shape as [number, number];
        if (t.shape.length !== 2 || t.shape[0] !== c || t.shape[1] !== r) {
          throw new Error(`adapters: tensor "${name}" has shape [${t.shape.join(', ')}], expected [${c}, ${r}]`);
        }
        const x = toTf(name, t, true);
        v.assign(x);
        x.dispose();
      }
    }
  }

  /** Adds the scaled adapter products into the base weights and drops the adapters. */
  mergeLora(): void {
    const lora = this.lora;
    if (!lora) return;
    for (const [path, ad] of this.adapters) {
      const w = this.weights.get(`${path}.weight`)!;
      w.assign(tf.tidy(() => tf.add(w, tf.mul(tf.matMul(ad.a, ad.b), lora.alpha / lora.rank))));
      ad.a.dispose();
      ad.b.dispose();
    }
    this.adapters.clear();
    this.lora = undefined;
    for (const v of this.weights.values()) v.trainable = true;
  }

  /** What an optimizer should update: the adapters when LoRA is on, otherwise every weight. */
  trainableVariables(): tf.Variable[] {
    if (this.lora) return [...this.adapters.values()].flatMap((a) => [a.a, a.b]);
    return [...this.weights.values()];
  }

  // ---- forward -----------------------------------------------------------

  private w(name: string): tf.Variable {
    const v = this.weights.get(name);
    if (!v) throw new Error(`no weight "${name}"`);
    return v;
  }

  private kept(key: string, make: () => tf.Tensor): tf.Tensor {
    let t = this.cache.get(key);
    if (!t) {
      t = tf.keep(tf.tidy(make));
      this.cache.set(key, t);
    }
    return t;
  }

  /** x @ W (+ LoRA), x: [n, in]. Frozen weights get no gradient products. */
  private linear(x: tf.Tensor, path: string, train: boolean): tf.Tensor {
    const w = this.w(`${path}.weight`);
    let y = w.trainable ? mm(x, w) : mmConst(x, w);
    const ad = this.adapters.get(path);
    if (ad && this.lora) {
      const p = this.lora.dropout;
      const xin = train && p > 0 ? tf.dropout(x, p, undefined, this.dropoutRng.int(2 ** 31)) : x;
      y = tf.add(y, tf.mul(mm(mm(xin, ad.a), ad.b), this.lora.alpha / this.lora.rank));
    }
    return y;
  }

  /** cos and sin tables [t, 1, headDim] (HF layout: frequencies repeated for both halves). */
  private rope(t: number): [tf.Tensor, tf.Tensor] {
    const hd = headDim(this.config);
    const table = (fn: (x: number) => number) => () => {
      const a = new Float32Array(t * hd);
      for (let pos = 0; pos < t; pos++) {
        for (let i = 0; i < hd / 2; i++) {
          const ang = pos * Math.pow(this.config.ropeTheta, (-2 * i) / hd);
          a[pos * hd + i] = fn(ang);
          a[pos * hd + i + hd / 2] = fn(ang);
        }
      }
      return tf.tensor(a, [t, 1, hd]);
    };
    return [this.kept(`cos${t}`, table(Math.cos)), this.kept(`sin${t}`, table(Math.sin))];
  }

  /** x [b, t, h, hd] → x·cos + rotate_half(x)·sin; rotate_half is a fixed signed permutation, done as a product. */
  private applyRope(x: tf.Tensor, t: number): tf.Tensor {
    const hd = headDim(this.config);
    const [cos, sin] = this.rope(t);
    const rot = this.kept(`rot${hd}`, () => {
      const r = new Float32Array(hd * hd);
      for (let j = 0; j < hd / 2; j++) {
        r[(j + hd / 2) * hd + j] = -1; // out[j] = -x[j + hd/2]
        r[j * hd + j + hd / 2] = 1; // out[j + hd/2] = x[j]
      }
      return tf.tensor(r, [hd, hd]);
    });
    const rotated = tf.reshape(mmConst(tf.reshape(x, [-1, hd]), rot), x.shape);
    return tf.add(tf.mul(x, cos), tf.mul(rotated, sin));
  }

  private causalMask(t: number): tf.Tensor {
    return this.kept(`mask${t}`, () =>
      tf.tensor(
        Float32Array.from({ length: t * t }, (_, i) => (i % t > Math.floor(i / t) ? -1e9 : 0)),
        [t, t],
      ),
    );
  }

  /** Final hidden states [b·t, dim] for int32 ids [b, t]. */
  private hidden(ids: tf.Tensor2D, train: boolean): tf.Tensor {
    const c = this.config;
    const [b, t] = ids.shape;
    if (t > c.maxSeqLen) throw new Error(`sequence length ${t} exceeds maxSeqLen ${c.maxSeqLen}`);
    const hd = headDim(c);
    const groups = c.nHeads / c.nKvHeads;
    const n = b * t;
    const mask = this.causalMask(t);
    let x = tf.reshape(embedding(this.w('model.embed_tokens.weight') as tf.Tensor2D, ids), [n, c.dim]);
    for (let l = 0; l < c.nLayers; l++) {
      const p = `model.layers.${l}`;
      const h = rmsNorm(x, this.w(`${p}.input_layernorm.weight`), c.normEps);
      const q = this.applyRope(tf.reshape(this.linear(h, `${p}.self_attn.q_proj`, train), [b, t, c.nHeads, hd]), t);
      const k = this.applyRope(tf.reshape(this.linear(h, `${p}.self_attn.k_proj`, train), [b, t, c.nKvHeads, hd]), t);
      const v = tf.reshape(this.linear(h, `${p}.self_attn.v_proj`, train), [b, t, c.nKvHeads, hd]);
      // Query heads are kv-head-major, so [groups·t, hd] per (sequence, kv head) shares that head's k/v without copying.
      const slices = b * c.nKvHeads;
      const qs = tf.unstack(tf.reshape(tf.transpose(q, [0, 2, 1, 3]), [slices, groups * t, hd]));
      const ks = tf.unstack(tf.reshape(tf.transpose(k, [0, 2, 3, 1]), [slices, hd, t]));
      const vs = tf.unstack(tf.reshape(tf.transpose(v, [0, 2, 1, 3]), [slices, t, hd]));
      // One 2-D product per slice: the big [groups·t, t] score matrices are never batched or split (both slow on wasm).
      const outs = qs.map((qi, i) => {
        const scores = tf.add(tf.reshape(tf.mul(mm(qi, ks[i]!), 1 / Math.sqrt(hd)), [groups, t, t]), mask);
        return mm(tf.reshape(tf.softmax(scores), [groups * t, t]), vs[i]!);
      });
      const att = tf.reshape(tf.transpose(tf.reshape(tf.stack(outs), [b, c.nHeads, t, hd]), [0, 2, 1, 3]), [n, c.dim]);
      x = tf.add(x, this.linear(att, `${p}.self_attn.o_proj`, train));
      const h2 = rmsNorm(x, this.w(`${p}.post_attention_layernorm.weight`), c.normEps);
      const gate = silu(this.linear(h2, `${p}.mlp.gate_proj`, train));
      const up = this.linear(h2, `${p}.mlp.up_proj`, train);
      x = tf.add(x, this.linear(tf.mul(gate, up), `${p}.mlp.down_proj`, train));
    }
    return rmsNorm(x, this.w('model.norm.weight'), c.normEps);
  }

  private head(x: tf.Tensor): tf.Tensor {
    if (!this.config.tieEmbeddings) {
      const w = this.w('lm_head.weight');
      return w.trainable ? mm(x, w) : mmConst(x, w);
    }
    const e = this.w('model.embed_tokens.weight');
    return e.trainable ? mm(x, tf.transpose(e)) : mmConst(x, tf.transpose(e));
  }

  /** Logits [b, t, vocab] for int32 ids [b, t]. Caller owns the result (use inside tf.tidy). */
  logits(ids: tf.Tensor2D, train = false): tf.Tensor3D {
    const [b, t] = ids.shape;
    return tf.reshape(this.head(this.hidden(ids, train)), [b, t, this.config.vocabSize]);
  }

  /**
   * Mean next-token cross-entropy over positions where mask = 1.
   * ids, targets: int32 [b, t]; mask: float32 [b, t] (all ones when omitted).
   */
  loss(ids: tf.Tensor2D, targets: tf.Tensor2D, mask?: tf.Tensor2D, train = false): tf.Scalar {
    const v = this.config.vocabSize;
    const logits = this.head(this.hidden(ids, train));
    const logp = tf.logSoftmax(logits);
    const nll = tf.neg(tf.sum(tf.mul(logp, tf.oneHot(tf.reshape(targets, [-1]), v)), -1));
    if (!mask) return tf.mean(nll);
    const m = tf.reshape(mask, [-1]);
    return tf.div(tf.sum(tf.mul(nll, m)), tf.maximum(tf.sum(m), 1));
  }

  /**
   * Samples `maxNew` tokens after `prompt` (no KV cache: the whole window is
   * re-run per token, fine at this size). temperature 0 = greedy.
   */
  generate(
    prompt: readonly number[],
    maxNew: number,
    opts: { temperature?: number; topK?: number; seed?: number; stopId?: number } = {},
  ): number[] {
    const rng = new Rng(opts.seed ?? 0);
    const temp = opts.temperature ?? 0.8;
    const out = [...prompt];
    for (let i = 0; i < maxNew; i++) {
      const window = out.slice(-this.config.maxSeqLen);
      const last = tf.tidy(() => {
        const lg = this.logits(tf.tensor2d([window], [1, window.length], 'int32'));
        return tf.reshape(tf.slice(lg, [0, window.length - 1, 0], [1, 1, this.config.vocabSize]), [-1]).dataSync() as Float32Array;
      });
      const next = sample(last, temp, opts.topK ?? 0, rng);
      out.push(next);
      if (next === opts.stopId) break;
    }
    return out.slice(prompt.length);
  }

  dispose(): void {
    for (const v of this.weights.values()) v.dispose();
    for (const a of this.adapters.values()) {
      a.a.dispose();
      a.b.dispose();
    }
    for (const t of this.cache.values()) t.dispose();
    this.weights.clear();
    this.adapters.clear();
    this.cache.clear();
  }
}

/** Picks a token from logits: greedy at temperature 0, else softmax(logits/T) restricted to the top k. */
export function sample(logits: Float32Array, temperature: number, topK: number, rng: Rng): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  if (temperature <= 0) return best;
  let idx = [...logits.keys()];
  if (topK > 0 && topK < idx.length) idx = idx.sort((a, b) => logits[b]! - logits[a]!).slice(0, topK);
  const mx = logits[best]!;
  const p = idx.map((i) => Math.exp((logits[i]! - mx) / temperature));
  let r = rng.next() * p.reduce((a, b) => a + b, 0);
  for (let j = 0; j < idx.length; j++) {
    r -= p[j]!;
    if (r <= 0) return idx[j]!;
  }
  return idx[idx.length - 1]!;
}
