/**
 * Federated averaging (McMahan et al. 2017), as NVFlare's FedAvg: each round
 * the global model goes to the sites, each result is folded into one running
 * weighted sum as it arrives (weight = meta.NUM_STEPS_CURRENT_ROUND or
 * meta.numSamples), and the mean becomes the next global model, saved to the
 * workspace. One round loop (StrategyWorkflow, strategy.ts) with the model and the
 * sum in memory (WeightedAverage) or, with `offload: true`, on disk (OffloadedAverage).
 */
import { type StrategyOptions, StrategyWorkflow, fedAvgStrategy } from './strategy.ts';

export * from './round.ts';

export class FedAvg extends StrategyWorkflow {
  constructor(opts: StrategyOptions) {
    super(opts, fedAvgStrategy);
  }
}
