/**
 * Filters: transforms of what crosses the federation, at NVIDIA FLARE's four points (task data
 * leaving the server and entering a site, a result leaving a site and entering the server). A
 * filter sees a task's or result's info and its tensor stream and returns new ones; it works
 * tensor by tensor or chunk by chunk as the pieces pass, never on the whole model.
 */
import type { z } from 'zod';
import type { FLModelInfo } from '../core/fl-model.ts';
import type { TensorStream } from '../core/tensor-stream.ts';

/** task: server → site; result: site → server */
export type Direction = 'task' | 'result';

export interface FilterPayload {
  info: FLModelInfo;
  params: TensorStream;
}

export interface FilterContext {
  /** the site the payload goes to or comes from */
  site: string;
  /** the task's name (train, validate, submit_model, ...) */
  taskName: string;
  direction: Direction;
  /** reports a metric to the server's metrics (at a site; the server records its own) */
  metric?: (key: string, value: number, round?: number) => void;
  /** where a filter may keep temporary files (at a site: a scratch folder of its job workspace, removed when the job ends); unset: the OS's temp folder */
  scratchDir?: string;
}

/**
 * The two halves of a filter: `send` where the payload leaves (server for tasks, site for
 * results), `receive` where it arrives. Either may be left out. Both return at once: work on the
 * tensors happens in the returned stream's pieces(), as they pass. A half that throws (now, or
 * from pieces()) fails that task or that result, never the server or the site.
 */
export interface Filter {
  send?(p: FilterPayload, ctx: FilterContext): FilterPayload;
  receive?(p: FilterPayload, ctx: FilterContext): FilterPayload;
  /** the job is over at this side: release what the filter keeps between payloads (temporary files) */
  close?(): Promise<void>;
}

/** A user filter: a module of the job exports one (job.yaml `type: custom`), its args checked by `schema`. */
export interface FilterDefinition<A = unknown> {
  name: string;
  schema: z.ZodType<A>;
  create(args: A): Filter;
}

/** Types the definition of a user filter (identity at run time). */
export function defineFilter<A>(def: FilterDefinition<A>): FilterDefinition<A> {
  return def;
}
