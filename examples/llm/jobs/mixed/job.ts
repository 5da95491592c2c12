/** Entry points of the mixed tfjs + PyTorch PEFT job (site-2 runs python/train_llm.py, see job.yaml) (see ../../src/job-entry.ts). */
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Trainer } from 'flotilla/client';
import type { TensorDict } from 'flotilla/core';
import type { TrainerFactoryContext } from 'flotilla/runtime';
import { readJobConfig } from 'flotilla/runtime';
import { initialModelFor, trainerFor } from '../../src/job-entry.ts';

/** Fresh adapters shaped by this job's own `executor.trainer.args` (rank, seed), so the server and the sites agree. */
export function initialModel(): Promise<TensorDict> {
  const { config } = readJobConfig(dirname(fileURLToPath(import.meta.url)));
  const args = 'trainer' in config.executor && 'args' in config.executor.trainer ? config.executor.trainer.args : {};
  return initialModelFor('peft', args);
}

export function createTrainer(ctx: TrainerFactoryContext): Trainer {
  return trainerFor('peft', ctx);
}
