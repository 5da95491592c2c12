/**
 * The supervised fine-tuning step and evaluation shared by local, centralized
 * and federated runs: next-token loss on response tokens only; with LoRA on,
 * the optimizer sees only the adapter variables.
 */
import { tf } from './backend.ts';
import { type Batch, type Example, makeBatch } from './instruct.ts';
import type { LlamaModel } from './model.ts';
import { AdamW } from './optim.ts';

export interface FinetuneOptions {
  lr: number;
  weightDecay?: number;
  clipNorm?: number;
}

function withBatch<T>(batch: Batch, f: (x: tf.Tensor2D, y: tf.Tensor2D, m: tf.Tensor2D) => T): T {
  const x = tf.tensor2d(batch.x, [batch.b, batch.t], 'int32');
  const y = tf.tensor2d(batch.y, [batch.b, batch.t], 'int32');
  const m = tf.tensor2d(batch.mask, [batch.b, batch.t], 'float32');
  try {
    return f(x, y, m);
  } finally {
    x.dispose();
    y.dispose();
    m.dispose();
  }
}

export class Finetuner {
  private readonly opt: AdamW;
  steps = 0;

  constructor(
    private readonly model: LlamaModel,
    private readonly o: FinetuneOptions,
  ) {
    this.opt = new AdamW(model.trainableVariables(), { weightDecay: o.weightDecay ?? 0, clipNorm: o.clipNorm ?? 1 });
  }

  /** One optimizer step on these examples; returns the loss and how many tokens it scored. */
  step(examples: readonly Example[]): { loss: number; tokens: number } {
    const batch = makeBatch(examples, this.model.config.maxSeqLen);
    const r = withBatch(batch, (x, y, m) => this.opt.step(() => this.model.loss(x, y, m, true), this.o.lr));
    this.steps++;
    return { loss: r.loss, tokens: batch.tokens };
  }

  dispose(): void {
    this.opt.dispose();
  }
}

/** Token-weighted mean response loss over `examples` (no dropout). */
export function evaluate(model: LlamaModel, examples: readonly Example[], batchSize = 16): { loss: number; tokens: number } {
  let sum = 0;
  let tokens = 0;
  for (let i = 0; i < examples.length; i += batchSize) {
    const batch = makeBatch(examples.slice(i, i + batchSize), model.config.maxSeqLen);
    if (batch.tokens === 0) continue;
    const mean = withBatch(batch, (x, y, m) => tf.tidy(() => model.loss(x, y, m, false).dataSync()[0]!));
    sum += mean * batch.tokens;
    tokens += batch.tokens;
  }
  return { loss: tokens ? sum / tokens : NaN, tokens };
}
