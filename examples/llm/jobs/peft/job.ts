/** Entry points of the PEFT job (see ../../src/job-entry.ts). */
import type { Trainer } from '../../../../src/client/api.ts';
import type { TensorDict } from '../../../../src/core/tensor.ts';
import type { TrainerFactoryContext } from '../../../../src/runtime/job.ts';
import { initialModelFor, trainerFor } from '../../src/job-entry.ts';

export function initialModel(): Promise<TensorDict> {
  return initialModelFor('peft');
}

export function createTrainer(ctx: TrainerFactoryContext): Trainer {
  return trainerFor('peft', ctx);
}
