/**
 * A site's result message turned into the TaskResult a workflow sees: its payload decoded as a
 * tensor stream, refused from its header when it declares more than the task's limit.
 */
import { type TensorStream, decodeStream } from '../core/tensor-stream.ts';
import type { Payload } from '../streaming/index.ts';
import type { Logger } from '../util/log.ts';
import type { TaskResult } from './controller-api.ts';
import type { ClientMessage } from './messages.ts';

type ResultMessage = Extract<ClientMessage, { type: 'result' }>;

export async function readResult(site: string, m: ResultMessage, payload: Payload | null, limit: number, log: Logger): Promise<TaskResult> {
  const taskId = m.taskId;
  if (m.status === 'error') return { ok: false, site, taskId, error: m.error };
  if (!m.hasParams) return { ok: true, site, taskId, info: m.info, params: null, discard: () => undefined };
  if (!payload) return { ok: false, site, taskId, error: 'result announced params but carried none' };
  let params: TensorStream;
  try {
    // the declared size is checked before anything is read; decodeStream never reads past it
    params = await decodeStream(payload, { maxBytes: limit });
  } catch (e) {
    const why = (e as Error).message;
    const over = /over the limit/.test(why);
    payload.cancel(over ? `result too large: ${why}` : why);
    if (over) log.warn({ site, taskId, limit }, `result refused: ${why} (job.yaml maxResultBytes raises the limit)`);
    const error = over
      ? `result from ${site} refused: ${why} (twice the model sent plus 64 MiB, unless job.yaml sets maxResultBytes)`
      : `bad result payload: ${why}`;
    return { ok: false, site, taskId, error };
  }
  return { ok: true, site, taskId, info: m.info, params, discard: () => payload.cancel('discarded by the workflow') };
}
