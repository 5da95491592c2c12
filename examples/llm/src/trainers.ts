/**
 * Client API trainers for federated instruction tuning.
 *  - PEFT: every site holds the frozen base model; only LoRA adapter tensors
 *    travel and are averaged.
 *  - SFT: all weights are trained, sent and averaged.
 * On a train task the site first scores the global model it received on its
 * own validation split (so the server sees the global model's loss per
 * dataset each round), then trains `localSteps` steps and answers.
 */
import path from 'node:path';
import type { ClientAPI, Trainer } from 'flotilla/client';
import { MetaKeys, flModel } from 'flotilla/core';
import type { TensorDict } from 'flotilla/core';
import { initBackend } from './backend.ts';
import { BpeTokenizer } from './bpe.ts';
import { Finetuner, evaluate } from './finetune.ts';
import { BatchSampler, type ClientData, type ClientName, loadClient } from './instruct.ts';
import { loadModel, readConfig, readWeights } from './io.ts';
import { ATTN_MODULES, LlamaModel, type LoraConfig, MLP_MODULES } from './model.ts';
import { baseDir as defaultBaseDir } from './paths.ts';
import { Rng } from './rng.ts';

export type TuneMode = 'peft' | 'sft';

export const DEFAULT_LORA: LoraConfig = { rank: 4, alpha: 8, dropout: 0.05, targets: [...ATTN_MODULES, ...MLP_MODULES] };

export interface LlmTrainerOptions {
  mode: TuneMode;
  /** a client data set name (loaded here with `split`) or data already loaded */
  data: ClientName | ClientData;
  localSteps: number;
  batch: number;
  lr: number;
  seed: number;
  lora?: LoraConfig;
  baseDir?: string;
  /** used when `data` is a name */
  split?: { ctx?: number; valCount?: number; maxTrain?: number };
  /** called after every local step (experiments record curves with it) */
  onStep?: (loss: number) => void;
}

/** Makes a model ready for `mode`: the base, plus adapters for PEFT. */
export async function prepareModel(mode: TuneMode, baseDir: string, lora: LoraConfig, seed: number): Promise<LlamaModel> {
  await initBackend();
  const model = await loadModel(baseDir);
  if (mode === 'peft') model.addLora(lora, seed);
  return model;
}

/** What the server starts from: fresh adapters (A seeded, B = 0) for PEFT, the base weights for SFT. */
export async function initialGlobalModel(mode: TuneMode, baseDir = defaultBaseDir, lora = DEFAULT_LORA, seed = 0): Promise<TensorDict> {
  if (mode === 'sft') return readWeights(baseDir);
  await initBackend();
  const m = LlamaModel.create(readConfig(baseDir), 0); // base values are irrelevant: only the adapters are read
  m.addLora(lora, seed);
  const d = m.adapterDict();
  m.dispose();
  return d;
}

/** The tensors a site sends for `mode`. */
export function outgoing(model: LlamaModel, mode: TuneMode): TensorDict {
  return mode === 'peft' ? model.adapterDict() : model.toTensorDict();
}

export function incoming(model: LlamaModel, mode: TuneMode, params: TensorDict): void {
  if (mode === 'peft') model.loadAdapterDict(params);
  else model.loadTensorDict(params);
}

export function llmTrainer(o: LlmTrainerOptions): Trainer {
  return async (flare: ClientAPI) => {
    await flare.init();
    const baseDir = o.baseDir ?? defaultBaseDir;
    const model = await prepareModel(o.mode, baseDir, o.lora ?? DEFAULT_LORA, o.seed);
    const data =
      typeof o.data === 'string'
        ? loadClient(BpeTokenizer.load(path.join(baseDir, 'tokenizer.json')), o.data, {
            ctx: o.split?.ctx ?? model.config.maxSeqLen,
            seed: o.seed,
            ...o.split,
          })
        : o.data;
    const ft = new Finetuner(model, { lr: o.lr });
    const sampler = new BatchSampler(data.train, o.batch, new Rng(o.seed + 17));
    try {
      while (flare.isRunning()) {
        const task = await flare.receive();
        if (!task) break;
        const info = { currentRound: task.currentRound, totalRounds: task.totalRounds };
        if (task.params.size > 0) incoming(model, o.mode, task.params);
        if (flare.isTrain()) {
          const global = evaluate(model, data.val);
          let sum = 0;
          let tokens = 0;
          for (let s = 0; s < o.localSteps; s++) {
            const r = ft.step(sampler.next());
            sum += r.loss;
            tokens += r.tokens;
            o.onStep?.(r.loss);
          }
          const trainLoss = sum / o.localSteps;
          flare.log('train_loss', trainLoss, task.currentRound);
          flare.log('val_loss', global.loss, task.currentRound);
          await flare.send(
            flModel(outgoing(model, o.mode), {
              ...info,
              metrics: { val_loss: global.loss, val_tokens: global.tokens, train_loss: trainLoss, train_tokens: tokens },
              meta: { [MetaKeys.numSteps]: o.localSteps, site: flare.siteName(), data: data.name },
            }),
          );
        } else if (flare.isEvaluate()) {
          const ev = evaluate(model, data.val);
          await flare.send(flModel(new Map(), { ...info, metrics: { val_loss: ev.loss, val_tokens: ev.tokens } }));
        } else {
          await flare.send(flModel(outgoing(model, o.mode), info));
        }
      }
    } finally {
      ft.dispose();
      model.dispose();
    }
  };
}
