/**
 * FedAvg with the global model and the running sum on disk (`offload: true`): the same round loop
 * as in memory (StrategyWorkflow, strategy.ts), with OffloadedAverage as the aggregator, so the
 * server's memory does not grow with the model. With `optimizer`, FedOpt with the optimizer's
 * state on disk too (a file per round).
 */
import type { ModelRef } from '../core/model-ref.ts';
import type { TensorDict } from '../core/tensor.ts';
import type { ServerOptimizerInput } from '../algorithms/server-optimizer.ts';
import { fedOptStrategy } from './fedopt.ts';
import { type StrategyOptions, StrategyWorkflow, fedAvgStrategy } from './strategy.ts';
import type { RoundSummary, Workflow, WorkflowContext } from './workflow.ts';

export interface OffloadedFedAvgOptions extends Omit<StrategyOptions, 'initialModel' | 'offload' | 'aggregation'> {
  /** the initial global model: a safetensors file, or tensors that are written to one first */
  initialModel: string | TensorDict | ModelRef;
  /** FedOpt on disk: the aggregate is a pseudo-gradient for this server optimizer, its state a file per round */
  optimizer?: ServerOptimizerInput;
}

export class OffloadedFedAvg implements Workflow {
  private readonly loop: StrategyWorkflow;

  constructor(opts: OffloadedFedAvgOptions) {
    const { optimizer, ...rest } = opts;
    this.loop = new StrategyWorkflow({ ...rest, offload: true }, optimizer ? fedOptStrategy(optimizer) : fedAvgStrategy);
  }

  get name(): string {
    return this.loop.name;
  }

  /** The rounds; the final model stays in its file. */
  async run(ctx: WorkflowContext): Promise<{ modelPath: string; rounds: RoundSummary[] }> {
    const r = await this.loop.runRef(ctx);
    return { modelPath: r.model.path!, rounds: r.rounds };
  }
}
