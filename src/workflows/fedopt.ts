/**
 * FedOpt (Reddi et al. 2021): FedAvg's aggregate becomes a pseudo-gradient for
 * a server optimizer (FedAvgM, FedAdam, FedYogi, FedAdagrad). The optimizer's
 * state is written after every round next to that round's global model
 * (`round-<r>/server_optimizer.safetensors`), so a job resumed at round r + 1
 * continues with exactly the state it had.
 */
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors } from '../core/safetensors.ts';
import type { TensorDict } from '../core/tensor.ts';
import { ServerOptimizer, type ServerOptimizerInput, stepInMemory, stepOnDisk } from '../algorithms/server-optimizer.ts';
import { type ServerStrategy, type StrategyOptions, StrategyWorkflow } from './strategy.ts';

export const OPTIMIZER_STATE_FILE = 'server_optimizer.safetensors';

export function fedOptStrategy(config: ServerOptimizerInput): ServerStrategy {
  const opt = new ServerOptimizer(config);
  let state: { tensors: TensorDict; metadata: Record<string, string> } | null = null;
  // offloaded: the state is a file per round, never in memory
  let statePath: string | null = null;
  return {
    name: opt.config.name,
    async update(global, aggregate) {
      const s = await stepInMemory(opt, global, aggregate, state);
      state = { tensors: s.state, metadata: s.stateMetadata };
      return s.model;
    },
    async save(dir) {
      if (state) await writeSafetensors(join(dir, OPTIMIZER_STATE_FILE), state.tensors, state.metadata);
    },
    async load(dir, round, onDisk) {
      const path = join(dir, OPTIMIZER_STATE_FILE);
      if (!existsSync(path))
        throw new Error(
          `cannot resume ${opt.config.name} at round ${round + 1}: ${path} (the optimizer state after round ${round}) is missing`,
        );
      if (onDisk) statePath = path;
      else state = await readSafetensors(path);
    },
    async updateOnDisk(io) {
      // the mean goes to a scratch file; the optimizer step reads it with the global model and its
      // state a chunk at a time and writes the round's model and state
      const mean = join(io.scratch, 'aggregate.safetensors');
      await io.aggregate.writeResult(mean);
      const nextState = join(io.dir, OPTIMIZER_STATE_FILE);
      await stepOnDisk(opt, {
        global: io.global,
        aggregate: mean,
        state: statePath,
        outModel: io.out,
        outState: nextState,
        modelMetadata: io.metadata,
      });
      await rm(mean, { force: true });
      statePath = nextState;
    },
  };
}

export interface FedOptOptions extends StrategyOptions {
  optimizer: ServerOptimizerInput;
}

export class FedOpt extends StrategyWorkflow {
  constructor(opts: FedOptOptions) {
    const { optimizer, ...rest } = opts;
    super(rest, fedOptStrategy(optimizer));
  }
}
