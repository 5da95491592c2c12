/**
 * FedAvg with the global model and the running sum on disk (`offload: true`):
 * the model is streamed to the clients from its safetensors file and results
 * are folded into a file-backed accumulator, so the server's memory does not
 * grow with the model. Same rounds and math as FedAvg; with `optimizer`, FedOpt
 * with the optimizer's state on disk too (a file per round).
 */
import { existsSync } from 'node:fs';
import { copyFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileSource } from '../core/model-source.ts';
import { writeSafetensors } from '../core/safetensors.ts';
import type { TensorDict } from '../core/tensor.ts';
import { OffloadedAverage } from '../aggregators/offloaded-average.ts';
import { ServerOptimizer, type ServerOptimizerInput, stepOnDisk } from '../algorithms/server-optimizer.ts';
import { type FedAvgOptions, fedAvgRound, recordRound, validateRounds } from './fedavg.ts';
import { OPTIMIZER_STATE_FILE } from './fedopt.ts';
import { type StrategyOptions, roundDir, roundHooks } from './strategy.ts';
import type { RoundSummary, Workflow, WorkflowContext } from './workflow.ts';

export interface OffloadedFedAvgOptions extends Omit<FedAvgOptions, 'initialModel'>, Pick<StrategyOptions, 'sampling' | 'proxMu'> {
  /** the initial global model: a safetensors file, or tensors that are written to one first */
  initialModel: string | TensorDict;
  /** FedOpt on disk: the aggregate is a pseudo-gradient for this server optimizer, its state a file per round */
  optimizer?: ServerOptimizerInput;
}

export class OffloadedFedAvg implements Workflow {
  readonly name: string;
  private readonly optimizer: ServerOptimizer | null;

  constructor(private readonly opts: OffloadedFedAvgOptions) {
    validateRounds(opts);
    this.optimizer = opts.optimizer ? new ServerOptimizer(opts.optimizer) : null;
    this.name = this.optimizer?.config.name ?? 'fedavg';
  }

  async run(ctx: WorkflowContext): Promise<{ modelPath: string; rounds: RoundSummary[] }> {
    const scratch = join(ctx.workspace.serverDir, 'offload');
    let path: string;
    if (typeof this.opts.initialModel === 'string') {
      path = this.opts.initialModel;
    } else {
      path = join(scratch, 'initial_model.safetensors');
      await writeSafetensors(path, this.opts.initialModel, this.opts.metadata);
    }
    const rounds: RoundSummary[] = [];
    const hooks = roundHooks(this.opts);
    const start = this.opts.startRound ?? 0;
    let statePath: string | null = null;
    if (this.optimizer && start > 0) {
      statePath = join(roundDir(ctx.workspace, start - 1), OPTIMIZER_STATE_FILE);
      if (!existsSync(statePath))
        throw new Error(
          `cannot resume ${this.name} at round ${start}: ${statePath} (the optimizer state after round ${start - 1}) is missing`,
        );
    }
    for (let round = start; round < this.opts.rounds; round++) {
      ctx.signal?.throwIfAborted();
      const started = Date.now();
      const agg = await OffloadedAverage.open(path, scratch);
      let summary: Omit<RoundSummary, 'seconds'>;
      try {
        summary = await fedAvgRound(ctx, { ...this.opts, select: hooks.select, meta: hooks.meta }, round, await fileSource(path), agg);
      } catch (e) {
        await agg.close();
        throw e;
      }
      const out = ctx.workspace.roundModelPath(round);
      if (this.optimizer) {
        // the mean goes to a scratch file; the optimizer step reads it with the global model and its
        // state a chunk at a time and writes the round's model and state
        const mean = join(scratch, 'aggregate.safetensors');
        await agg.writeResult(mean);
        const nextState = join(roundDir(ctx.workspace, round), OPTIMIZER_STATE_FILE);
        await stepOnDisk(this.optimizer, {
          global: path,
          aggregate: mean,
          state: statePath,
          outModel: out,
          outState: nextState,
          modelMetadata: { round: String(round), workflow: this.name },
        });
        await rm(mean, { force: true });
        statePath = nextState;
      } else {
        await agg.writeResult(out, { round: String(round), workflow: this.name });
      }
      // the latest model under its fixed name, replaced atomically
      await copyFile(out, `${ctx.workspace.globalModelPath}.tmp`);
      await rename(`${ctx.workspace.globalModelPath}.tmp`, ctx.workspace.globalModelPath);
      path = out;
      const full = { ...summary, seconds: (Date.now() - started) / 1000 };
      recordRound(ctx, full);
      rounds.push(full);
    }
    return { modelPath: path, rounds };
  }
}
