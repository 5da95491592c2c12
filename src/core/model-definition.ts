/**
 * An initial-model hook that declares its settings: `export const initialModel =
 * defineInitialModel({ schema, create })`, with `model: {module, export, args}` in job.yaml. The
 * args are parsed by the schema first; a bad one is refused naming `model.args.<field>`.
 */
import type { z } from 'zod';
import type { TensorDict } from './tensor.ts';

export interface InitialModelDefinition<Args = unknown> {
  readonly schema: z.ZodType<Args>;
  /** the initial tensors, or the path of a safetensors file (absolute or relative to the job folder) */
  create(args: Args): TensorDict | string | Promise<TensorDict | string>;
}

export function defineInitialModel<S extends z.ZodType>(def: {
  schema: S;
  create(args: z.output<S>): TensorDict | string | Promise<TensorDict | string>;
}): InitialModelDefinition<z.output<S>> {
  return def as InitialModelDefinition<z.output<S>>;
}
