/**
 * The job bench/he.ts --simulate runs through `flotilla simulate` with and without the he filter:
 * the protein MLP's or the LoRA adapters' tensors (the same as bench/he.ts measures), each site
 * sending the model it received plus a small update of its own (weight 10 · k).
 */
import type { ClientAPI, Trainer } from '../src/client/api.ts';
import type { TrainerFactoryContext } from '../src/runtime/job.ts';
import { type TensorDict, numel, tensor } from '../src/core/tensor.ts';

export function proteinModel(): TensorDict {
  const shapes: [string, number[]][] = [
    ['layers.0.weight', [479, 128]],
    ['layers.0.bias', [128]],
    ['layers.1.weight', [128, 10]],
    ['layers.1.bias', [10]],
  ];
  return new Map(
    shapes.map(([n, s]) => [
      n,
      tensor(
        'F32',
        s,
        Float32Array.from({ length: numel(s) }, (_, i) => Math.sin(i) * 0.05),
      ),
    ]),
  );
}

export async function loraModel(): Promise<TensorDict> {
  const { initialModelFor } = await import('../examples/llm/src/job-entry.ts');
  return initialModelFor('peft', { rank: 4, seed: 0 });
}

export function createTrainer(ctx: TrainerFactoryContext): Trainer {
  const k = Number(ctx.site.replace(/\D/g, '')) || 1;
  return async (flare: ClientAPI) => {
    await flare.init();
    while (flare.isRunning()) {
      const m = await flare.receive();
      if (!m) break;
      const params: TensorDict = new Map(
        [...m.params].map(([n, t]) => [
          n,
          tensor(
            'F32',
            t.shape,
            (t.data as Float32Array).map((v, i) => v + Math.sin(i * 0.37 * k) * 0.01),
          ),
        ]),
      );
      await flare.send({ ...m, params, paramsType: 'FULL', metrics: {}, meta: { numSamples: 10 * k } });
    }
  };
}
