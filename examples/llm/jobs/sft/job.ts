/** Entry points of the SFT job (see ../../src/job-entry.ts). */
import type { Trainer } from 'flotilla/client';
import type { TensorDict } from 'flotilla/core';
import type { TrainerFactoryContext } from 'flotilla/runtime';
import { initialModelFor, trainerFor } from '../../src/job-entry.ts';

export function initialModel(): Promise<TensorDict> {
  return initialModelFor('sft');
}

export function createTrainer(ctx: TrainerFactoryContext): Trainer {
  return trainerFor('sft', ctx);
}
