/**
 * What workflows program against: the Controller (the federation as a workflow sees it) and the
 * task and result shapes that travel through it. ServerRuntime (controller.ts) implements it.
 */
import type { MetricRecord } from '../client/api.ts';
import type { FLModelInfo } from '../core/fl-model.ts';
import type { ModelSource } from '../core/model-source.ts';
import type { TensorDict } from '../core/tensor.ts';
import type { TensorStream } from '../core/tensor-stream.ts';
import type { RelayHop, RelayOptions, RelayTask } from './relay.ts';

export interface TaskRequest {
  /** task name the executor dispatches on: 'train', 'validate', 'submit_model', ... */
  name: string;
  info: FLModelInfo;
  params: ModelSource | null;
}

export type TaskResult =
  | { ok: true; site: string; taskId: string; info: FLModelInfo; params: TensorStream | null; discard(): void }
  | { ok: false; site: string; taskId: string; error: string };

export interface BroadcastOptions {
  /** sites to send to (default: all connected) */
  targets?: readonly string[];
  /** successful results needed (default: all targets) */
  minResponses?: number;
  /** overall limit (default: no limit) */
  timeoutMs?: number;
  /** once minResponses succeeded, how long to wait for the rest (default: until all answer or timeout) */
  waitAfterMinMs?: number;
}

/** What a site logged (a scalar, a text, params), its `site` the connection's. */
export type MetricEvent = MetricRecord;

/** What workflows see of the federation. */
export interface Controller {
  readonly jobId: string;
  /** sites connected now, sorted by name */
  sites(): string[];
  /** waits until at least `min` sites are connected */
  waitForSites(min: number, timeoutMs: number): Promise<string[]>;
  /** sends a task to many sites; yields each result as it arrives */
  broadcast(task: TaskRequest, opts?: BroadcastOptions): AsyncIterable<TaskResult>;
  /** sends a task to one site and waits for its result */
  sendTo(site: string, task: TaskRequest, timeoutMs?: number): Promise<TaskResult>;
  /**
   * passes a model from site to site in `opts.order`, each site's result being
   * the next site's input; yields each hop as it completes and returns the
   * final model. A failed hop (site error, timeout, no params) throws a
   * RelayAbortedError (`onFailure: 'abort'`, the default) or is yielded with
   * `ok: false` and the next site gets the unchanged input (`'skip'`).
   */
  relay(task: RelayTask, opts: RelayOptions): AsyncGenerator<RelayHop, TensorDict, undefined>;
}
