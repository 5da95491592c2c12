/**
 * The relay primitive of the Controller API (cyclic weight transfer): a model
 * passes from site to site in a given order, each site's result becoming the
 * next site's input. Written over `sendTo` alone, so every Controller (the
 * simulator's and the deployment's ServerRuntime alike) relays the same way
 * whatever the transport.
 *
 * Policy on a failed hop (an error from the site, a timeout, a result without
 * params or one that does not fit the model):
 *  - `abort` (the default): the relay throws a RelayAbortedError naming the
 *    hop, the site and the cause; no further site is contacted.
 *  - `skip`: the failed hop is yielded (`ok: false`) and the next site gets the
 *    input the failed one was given, unchanged.
 *
 * Hops run one at a time and lazily: hop k+1 is sent when the consumer asks
 * for the next item, so a consumer that stops iterating stops the relay.
 */
import type { FLModelInfo } from '../core/fl-model.ts';
import { dictSource } from '../core/model-source.ts';
import { streamToDict } from '../core/tensor-stream.ts';
import type { TensorDict } from '../core/tensor.ts';
import { applyResult } from '../core/apply-result.ts';
import type { TaskRequest, TaskResult } from './controller.ts';
import { ControllerError } from './errors.ts';

export interface RelayTask {
  /** task name the executors dispatch on ('train', ...) */
  name: string;
  /** sent with every hop; paramsType is always FULL (each site gets the whole model) */
  info: FLModelInfo;
  /** what the first site receives */
  model: TensorDict;
}

export type RelayFailurePolicy = 'abort' | 'skip';

export interface RelayOptions {
  /** sites in visiting order; a site may appear more than once */
  order: readonly string[];
  /** limit for each hop, in ms (default: no limit) */
  timeoutMs?: number;
  /** what a failed hop does to the relay (default 'abort') */
  onFailure?: RelayFailurePolicy;
  /** checked before each hop */
  signal?: AbortSignal;
}

interface HopBase {
  /** position in `order`, from 0 */
  index: number;
  site: string;
  taskId: string;
  /** what this site was sent */
  input: TensorDict;
}
export interface RelayHopOk extends HopBase {
  ok: true;
  /** the info the site returned (metrics, meta, its paramsType) */
  info: FLModelInfo;
  /** the model after this hop (a DIFF result applied to the input): the next site's input */
  model: TensorDict;
}
export interface RelayHopFailed extends HopBase {
  ok: false;
  error: string;
}
export type RelayHop = RelayHopOk | RelayHopFailed;

export class RelayAbortedError extends ControllerError {
  constructor(
    message: string,
    readonly hop: RelayHopFailed,
  ) {
    super(message);
  }
}

type SendTo = (site: string, task: TaskRequest, timeoutMs?: number) => Promise<TaskResult>;

/** Runs a relay over any `sendTo`; yields each hop as it completes. */
export async function* relayOver(sendTo: SendTo, task: RelayTask, opts: RelayOptions): AsyncGenerator<RelayHop, TensorDict, undefined> {
  const policy = opts.onFailure ?? 'abort';
  const info: FLModelInfo = { ...task.info, paramsType: 'FULL' };
  let model = task.model;
  for (const [index, site] of opts.order.entries()) {
    opts.signal?.throwIfAborted();
    const input = model;
    const r = await sendTo(site, { name: task.name, info, params: dictSource(input) }, opts.timeoutMs);
    let hop: RelayHop;
    if (!r.ok) hop = { ok: false, index, site, taskId: r.taskId, input, error: r.error };
    else if (!r.params) hop = { ok: false, index, site, taskId: r.taskId, input, error: 'result carries no params' };
    else {
      try {
        const out = applyResult(input, await streamToDict(r.params), r.info.paramsType);
        hop = { ok: true, index, site, taskId: r.taskId, input, info: r.info, model: out };
      } catch (e) {
        r.discard();
        hop = { ok: false, index, site, taskId: r.taskId, input, error: `bad result: ${(e as Error).message}` };
      }
    }
    if (!hop.ok && policy === 'abort') {
      throw new RelayAbortedError(
        `relay ${task.name}: hop ${index + 1} of ${opts.order.length} (site ${site}) failed: ${hop.error}; relay aborted`,
        hop,
      );
    }
    if (hop.ok) model = hop.model;
    yield hop;
  }
  return model;
}
