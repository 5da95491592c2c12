/**
 * A model folder as Hugging Face lays it out: config.json, model.safetensors
 * (HF names, [out, in] linears), and, for adapters, adapter_config.json plus
 * adapter_model.safetensors (PEFT names).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { readSafetensors, writeSafetensors } from 'flotilla/core';
import type { TensorDict } from 'flotilla/core';
import { type LlamaConfig, fromHfConfig, toHfConfig } from './config.ts';
import type { FloatDType } from './convert.ts';
import { type LoraConfig, LlamaModel, ATTN_MODULES, MLP_MODULES } from './model.ts';

export function readJson(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: invalid JSON: ${(e as Error).message}`);
  }
}

export function readConfig(dir: string): LlamaConfig {
  const file = path.join(dir, 'config.json');
  return fromHfConfig(readJson(file), file);
}

export async function saveModel(
  dir: string,
  model: LlamaModel,
  metadata: Record<string, string> = {},
  dtype: FloatDType = 'F32',
): Promise<void> {
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(toHfConfig(model.config), null, 2) + '\n');
  await writeSafetensors(path.join(dir, 'model.safetensors'), model.toTensorDict(dtype), { format: 'pt', ...metadata });
}

export async function readWeights(dir: string): Promise<TensorDict> {
  return (await readSafetensors(path.join(dir, 'model.safetensors'))).tensors;
}

export async function loadModel(dir: string): Promise<LlamaModel> {
  const config = readConfig(dir);
  return LlamaModel.fromTensorDict(config, await readWeights(dir));
}

const ALL_MODULES = [...ATTN_MODULES, ...MLP_MODULES] as const;

/** PEFT's adapter_config.json, the fields we use. */
const AdapterConfigSchema = z.object({
  peft_type: z.literal('LORA'),
  r: z.number().int().positive(),
  lora_alpha: z.number().positive(),
  lora_dropout: z.number().min(0).max(1),
  target_modules: z.array(z.enum(ALL_MODULES)).min(1),
});

export async function saveAdapters(dir: string, model: LlamaModel): Promise<void> {
  const lora = model.loraConfig;
  if (!lora) throw new Error('model has no LoRA adapters to save');
  mkdirSync(dir, { recursive: true });
  const cfg = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    r: lora.rank,
    lora_alpha: lora.alpha,
    lora_dropout: lora.dropout,
    target_modules: [...lora.targets],
    bias: 'none',
  };
  writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(cfg, null, 2) + '\n');
  await writeSafetensors(path.join(dir, 'adapter_model.safetensors'), model.adapterDict(), { format: 'pt' });
}

export function readAdapterConfig(dir: string): LoraConfig {
  const file = path.join(dir, 'adapter_config.json');
  const r = AdapterConfigSchema.safeParse(readJson(file));
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new Error(`${file}: field "${issue?.path.join('.') ?? '?'}": ${issue?.message ?? 'invalid'}`);
  }
  return { rank: r.data.r, alpha: r.data.lora_alpha, dropout: r.data.lora_dropout, targets: r.data.target_modules };
}

export async function loadAdapters(dir: string, model: LlamaModel, seed = 0): Promise<void> {
  if (!model.loraConfig) model.addLora(readAdapterConfig(dir), seed);
  model.loadAdapterDict((await readSafetensors(path.join(dir, 'adapter_model.safetensors'))).tensors);
}

export function hasModel(dir: string): boolean {
  return existsSync(path.join(dir, 'model.safetensors')) && existsSync(path.join(dir, 'config.json'));
}
