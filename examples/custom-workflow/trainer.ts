// A small pure-TypeScript trainer: every site pulls the weights toward its own target (site index + 1),
// so the federation's average converges to the mean of the targets and the loss falls each round.
import type { ClientAPI, Trainer } from 'flotilla/client';
import { type TensorDict, f32 } from 'flotilla/core';
import type { TrainerFactoryContext } from 'flotilla/runtime';

export function createTrainer(ctx: TrainerFactoryContext): Trainer {
  const target = ctx.numSites > 1 ? 1 + (ctx.siteIndex / (ctx.numSites - 1)) * 0.2 : 1;
  const rate = Number(ctx.args.rate ?? 0.5);
  let mine: TensorDict | null = null; // this site's latest model, for cross-site evaluation
  return async (flare: ClientAPI) => {
    await flare.init();
    while (flare.isRunning()) {
      const m = await flare.receive();
      if (!m) break;
      if (flare.isSubmitModel()) {
        await flare.send({ ...m, params: mine ?? m.params, metrics: {}, meta: {} });
        continue;
      }
      const w = m.params.get('w')!.data as Float32Array;
      const loss = w.reduce((s, x) => s + (x - target) ** 2, 0) / w.length;
      if (flare.isEvaluate()) {
        await flare.send({ ...m, params: new Map(), metrics: { val_loss: loss }, meta: {} });
        continue;
      }
      const out = w.map((x) => x + rate * (target - x));
      mine = new Map([['w', f32([w.length], out)]]);
      await flare.send({ ...m, params: mine, paramsType: 'FULL', metrics: { loss }, meta: { numSamples: 10 } });
    }
  };
}

export function initialModel(): TensorDict {
  return new Map([['w', f32([4], [0, 0, 0, 0])]]);
}
