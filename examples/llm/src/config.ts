/**
 * Model hyper-parameters. In memory they are camelCase; on disk (config.json)
 * they use Hugging Face LlamaConfig's keys so the file reads like an HF model.
 */
import { z } from 'zod';

export interface LlamaConfig {
  vocabSize: number;
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  maxSeqLen: number;
  normEps: number;
  ropeTheta: number;
  /** lm_head shares the token embedding (then lm_head.weight is not stored, as in HF). */
  tieEmbeddings: boolean;
}

const pos = z.number().int().positive();

export const HfLlamaConfigSchema = z.object({
  architectures: z.array(z.string()).optional(),
  model_type: z.literal('llama').optional(),
  vocab_size: pos,
  hidden_size: pos,
  intermediate_size: pos,
  num_hidden_layers: pos,
  num_attention_heads: pos,
  num_key_value_heads: pos,
  max_position_embeddings: pos,
  rms_norm_eps: z.number().positive(),
  rope_theta: z.number().positive(),
  tie_word_embeddings: z.boolean(),
});
export type HfLlamaConfig = z.infer<typeof HfLlamaConfigSchema>;

export function validateConfig(c: LlamaConfig): LlamaConfig {
  if (c.dim % c.nHeads !== 0) throw new Error(`config: dim ${c.dim} is not divisible by nHeads ${c.nHeads}`);
  if (c.nHeads % c.nKvHeads !== 0) throw new Error(`config: nHeads ${c.nHeads} is not divisible by nKvHeads ${c.nKvHeads}`);
  if ((c.dim / c.nHeads) % 2 !== 0) throw new Error(`config: head size ${c.dim / c.nHeads} must be even for rotary embeddings`);
  return c;
}

export function headDim(c: LlamaConfig): number {
  return c.dim / c.nHeads;
}

export function toHfConfig(c: LlamaConfig): HfLlamaConfig {
  return {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: c.vocabSize,
    hidden_size: c.dim,
    intermediate_size: c.hiddenDim,
    num_hidden_layers: c.nLayers,
    num_attention_heads: c.nHeads,
    num_key_value_heads: c.nKvHeads,
    max_position_embeddings: c.maxSeqLen,
    rms_norm_eps: c.normEps,
    rope_theta: c.ropeTheta,
    tie_word_embeddings: c.tieEmbeddings,
  };
}

/** Parses a config.json's content; `source` names the file in errors. */
export function fromHfConfig(json: unknown, source = 'config.json'): LlamaConfig {
  const r = HfLlamaConfigSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new Error(`${source}: field "${issue?.path.join('.') ?? '?'}": ${issue?.message ?? 'invalid'}`);
  }
  const h = r.data;
  return validateConfig({
    vocabSize: h.vocab_size,
    dim: h.hidden_size,
    hiddenDim: h.intermediate_size,
    nLayers: h.num_hidden_layers,
    nHeads: h.num_attention_heads,
    nKvHeads: h.num_key_value_heads,
    maxSeqLen: h.max_position_embeddings,
    normEps: h.rms_norm_eps,
    ropeTheta: h.rope_theta,
    tieEmbeddings: h.tie_word_embeddings,
  });
}
