// A small pure-TypeScript trainer: every site pulls the weights toward its own target (1, 1.1, 1.2, ...),
// and keeps a tensor of its own ("local.stats") that the job's exclude filter never lets out.
import type { ClientAPI, Trainer } from 'flotilla/client';
import { type TensorDict, f32 } from 'flotilla/core';
import type { TrainerFactoryContext } from 'flotilla/runtime';

export function createTrainer(ctx: TrainerFactoryContext): Trainer {
  const target = 1 + ctx.siteIndex * 0.1;
  return async (flare: ClientAPI) => {
    await flare.init();
    while (flare.isRunning()) {
      const m = await flare.receive();
      if (!m) break;
      const w = m.params.get('w')!.data as Float32Array;
      const out = w.map((x) => x + 0.5 * (target - x));
      const loss = out.reduce((s, x) => s + (x - target) ** 2, 0) / out.length;
      const params: TensorDict = new Map([
        ['w', f32([w.length], out)],
        ['local.stats', f32([2], [ctx.siteIndex, loss])],
      ]);
      await flare.send({ ...m, params, paramsType: 'FULL', metrics: { loss }, meta: { numSamples: 10 } });
    }
  };
}

export function initialModel(): TensorDict {
  return new Map([
    ['w', f32([1000], new Float32Array(1000))],
    ['local.stats', f32([2], [0, 0])],
  ]);
}
