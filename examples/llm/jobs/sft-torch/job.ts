/** The initial global model of the PyTorch SFT job: the base weights. */
import type { TensorDict } from 'flotilla/core';
import { initialModelFor } from '../../src/job-entry.ts';

export function initialModel(): Promise<TensorDict> {
  return initialModelFor('sft');
}
