// A server workflow of this job's own: FedAvg that stops as soon as the sites' mean loss falls
// below `targetLoss` (or after `maxRounds`). job.yaml names it with `type: custom`; Flotilla checks
// `args` against `schema` (flotilla validate, and before the job runs) and calls `create` with them.
import { ModelRef } from 'flotilla/core';
import { WeightedAverage } from 'flotilla/aggregators';
import { type RoundSummary, defineWorkflow, fedAvgRound, recordRound } from 'flotilla/workflows';
import { z } from 'zod';

export default defineWorkflow({
  name: 'fedavg_until',
  schema: z.strictObject({
    maxRounds: z.number().int().min(1),
    targetLoss: z.number().positive(),
  }),
  async create(args, input) {
    // the model the previous workflow left (here the job's initial one), taken into memory
    let model = await input.model.take();
    return {
      async run(ctx) {
        const rounds: RoundSummary[] = [];
        for (let round = 0; round < args.maxRounds; round++) {
          const started = Date.now();
          const agg = new WeightedAverage(model);
          const global = await ModelRef.memory(model).source();
          const summary = await fedAvgRound(ctx, { rounds: args.maxRounds, minClients: input.minClients }, round, global, agg);
          model = agg.result();
          await ctx.workspace.saveGlobalModel(round, model, { ...input.metadata, workflow: 'fedavg_until' });
          const full = { ...summary, seconds: (Date.now() - started) / 1000 };
          await recordRound(ctx, full);
          rounds.push(full);
          if ((summary.metrics.loss ?? Infinity) < args.targetLoss) {
            ctx.log.info({ round, loss: summary.metrics.loss }, 'target loss reached');
            break;
          }
        }
        // the model goes on to the next workflow of the chain (cross-site evaluation here)
        return { model, rounds };
      },
    };
  },
});
