/**
 * SCAFFOLD (Karimireddy et al. 2020) as NVFlare runs it: the task carries the
 * global model and the server control variate c (`scaffold.c.<name>` tensors in
 * the same stream); each trainer corrects its local steps with c − cᵢ, updates
 * its own cᵢ and returns its model with Δcᵢ (`scaffold.dc.<name>`). The server
 * averages both (weighted as FedAvg), takes the mean model and sets
 * c ← c + (|S|/N)·mean(Δcᵢ). c is written after every round
 * (`round-<r>/scaffold_c.safetensors`) so a resumed job continues exactly.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors } from '../core/safetensors.ts';
import type { TensorDict } from '../core/tensor.ts';
import { SCAFFOLD_PREFIX, ScaffoldMeta, serverControlUpdate, splitPrefixed, withPrefixed, zerosLike } from '../algorithms/scaffold.ts';
import { type ServerStrategy, type StrategyOptions, StrategyWorkflow } from './strategy.ts';

export const CONTROL_FILE = 'scaffold_c.safetensors';

export function scaffoldStrategy(): ServerStrategy {
  let c: TensorDict | null = null;
  return {
    name: 'scaffold',
    taskMeta: { [ScaffoldMeta.enabled]: true },
    taskParams(global) {
      c ??= zerosLike(global);
      return withPrefixed(global, c, SCAFFOLD_PREFIX.control);
    },
    resultTemplate(global) {
      return withPrefixed(global, zerosLike(global), SCAFFOLD_PREFIX.delta);
    },
    async update(_global, aggregate, facts) {
      const { model, extra } = splitPrefixed(aggregate, SCAFFOLD_PREFIX.delta);
      c = serverControlUpdate(c!, extra, facts.connected > 0 ? facts.used / facts.connected : 1);
      return model;
    },
    async save(dir) {
      if (c) await writeSafetensors(join(dir, CONTROL_FILE), c, { [ScaffoldMeta.enabled]: 'control variate' });
    },
    async load(dir, round) {
      const path = join(dir, CONTROL_FILE);
      if (!existsSync(path))
        throw new Error(`cannot resume SCAFFOLD at round ${round + 1}: ${path} (the control variate after round ${round}) is missing`);
      c = (await readSafetensors(path)).tensors;
    },
  };
}

export class Scaffold extends StrategyWorkflow {
  constructor(opts: StrategyOptions) {
    if (opts.aggregation && opts.aggregation.rule !== 'mean')
      throw new Error('SCAFFOLD averages its control variates: it cannot be combined with a robust aggregation rule');
    super(opts, scaffoldStrategy());
  }
}
