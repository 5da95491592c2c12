/**
 * A trainer that declares its settings: `export const trainer = defineTrainer({ schema, create })`
 * in a job's trainer module, named by `executor.trainer.factory`. The job's `args` are parsed by
 * the schema before the trainer is made (`flotilla validate`, a submit, and every site), and a
 * bad one is refused naming the field: `executor.trainer.args.epochs: Too small: expected number to be >=1`.
 */
import type { z } from 'zod';
import type { JsonValue } from '../core/fl-model.ts';
import type { Trainer } from './api.ts';

/** What a trainer factory receives. */
export interface TrainerFactoryContext<Args = Record<string, JsonValue>> {
  site: string;
  /** 0-based position of this site among the job's sites */
  siteIndex: number;
  numSites: number;
  args: Args;
  jobDir: string;
}

/** A plain factory: gets the job's args as written. */
export type TrainerFactory = (ctx: TrainerFactoryContext) => Trainer | Promise<Trainer>;

export interface TrainerDefinition<Args = unknown> {
  readonly schema: z.ZodType<Args>;
  create(ctx: TrainerFactoryContext<Args>): Trainer | Promise<Trainer>;
}

/** Types a trainer definition from its schema. */
export function defineTrainer<S extends z.ZodType>(def: {
  schema: S;
  create(ctx: TrainerFactoryContext<z.output<S>>): Trainer | Promise<Trainer>;
}): TrainerDefinition<z.output<S>> {
  return def as TrainerDefinition<z.output<S>>;
}
