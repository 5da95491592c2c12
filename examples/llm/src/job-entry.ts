/**
 * What the job folders (jobs/peft, jobs/sft) load: the initial global model
 * and a trainer factory. Site i (0-based, in job order) gets client data set
 * i mod 3: alpaca, roleplay, toolformer.
 */
import type { Trainer } from 'flotilla/client';
import type { JsonValue } from 'flotilla/core';
import type { TensorDict } from 'flotilla/core';
import type { TrainerFactoryContext } from 'flotilla/runtime';
import { CLIENT_SOURCES } from './instruct.ts';
import type { LoraConfig } from './model.ts';
import { DEFAULT_LORA, type TuneMode, initialGlobalModel, llmTrainer } from './trainers.ts';

function num(args: Record<string, JsonValue>, key: string, dflt: number): number {
  const v = args[key] ?? dflt;
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw new Error(`executor.trainer.args.${key} must be a number, got ${JSON.stringify(v)}`);
  return v;
}

export function loraFromArgs(args: Record<string, JsonValue>): LoraConfig {
  return {
    ...DEFAULT_LORA,
    rank: num(args, 'rank', DEFAULT_LORA.rank),
    alpha: num(args, 'alpha', DEFAULT_LORA.alpha),
    dropout: num(args, 'dropout', DEFAULT_LORA.dropout),
  };
}

export function initialModelFor(mode: TuneMode, args: Record<string, JsonValue> = {}): Promise<TensorDict> {
  return initialGlobalModel(mode, undefined, loraFromArgs(args), num(args, 'seed', 0));
}

export function trainerFor(mode: TuneMode, ctx: TrainerFactoryContext): Trainer {
  const a = ctx.args;
  const data = CLIENT_SOURCES[ctx.siteIndex % CLIENT_SOURCES.length]!.name;
  return llmTrainer({
    mode,
    data,
    localSteps: num(a, 'localSteps', 8),
    batch: num(a, 'batch', 8),
    lr: num(a, 'lr', mode === 'peft' ? 1e-2 : 1.5e-3),
    seed: num(a, 'seed', 0) + ctx.siteIndex,
    lora: loraFromArgs(a),
    // ctx: sequence length (default: the base model's context)
    split: { valCount: num(a, 'valCount', 32), maxTrain: num(a, 'maxTrain', 900), ...(a.ctx !== undefined && { ctx: num(a, 'ctx', 0) }) },
  });
}

/** The LoRA and seed options of a PyTorch site's command line (python/train_llm.py `--rank 4 ...`), as trainer args. */
export function argsFromScript(args: readonly string[]): Record<string, JsonValue> {
  const out: Record<string, JsonValue> = {};
  for (const key of ['rank', 'alpha', 'dropout', 'seed']) {
    const i = args.indexOf(`--${key}`);
    if (i < 0) continue;
    const v = Number(args[i + 1]);
    if (!Number.isFinite(v)) throw new Error(`executor.script.args: --${key} needs a number, got ${JSON.stringify(args[i + 1])}`);
    out[key] = v;
  }
  return out;
}
