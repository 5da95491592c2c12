/**
 * A broadcast's result gathering: results are yielded as they arrive; once enough came (or too
 * many failed) the broadcast ends and the sites still working are told to stop.
 */
import { AsyncQueue } from '../util/async-queue.ts';
import { type LongTimer, setLongTimeout } from '../util/long-timer.ts';
import type { BroadcastOptions, TaskRequest, TaskResult } from './controller-api.ts';
import { ControllerError } from './errors.ts';

/** One task sent to one site. */
export interface SentTask {
  site: string;
  taskId: string;
  result: Promise<TaskResult>;
}

/**
 * Yields the results of tasks already sent to `targets` (by `send`), ending when every target
 * answered, or `waitAfterMinMs` after `minResponses` succeeded; `cancel` stops those still working.
 */
export function gatherResults(
  task: TaskRequest,
  targets: readonly string[],
  opts: BroadcastOptions,
  send: (site: string) => SentTask,
  cancel: (site: string, taskId: string, reason: string) => void,
): AsyncIterable<TaskResult> {
  const min = opts.minResponses ?? targets.length;
  if (min > targets.length) throw new ControllerError(`task ${task.name} needs ${min} responses but has only ${targets.length} targets`);
  const out = new AsyncQueue<TaskResult>();
  const sent = targets.map((site) => ({ ...send(site), answered: false }));
  let ok = 0;
  let answered = 0;
  let closed = false;
  let afterMin: LongTimer | undefined;
  const stop = (err?: Error): void => {
    if (closed) return;
    closed = true;
    afterMin?.clear();
    out.end(err);
    // the broadcast is over (enough results, or it failed): the sites still working are told to stop
    for (const t of sent)
      if (!t.answered) cancel(t.site, t.taskId, `task ${task.name} no longer needed: ${err ? err.message : 'the round has its results'}`);
  };
  for (const t of sent) {
    void t.result.then((r) => {
      t.answered = true;
      if (closed) {
        if (r.ok) r.discard(); // a late result: drop its payload so the sender stops
        return;
      }
      answered++;
      if (r.ok) ok++;
      out.push(r);
      if (answered === targets.length) {
        stop(ok < min ? new ControllerError(`task ${task.name}: only ${ok} of ${min} required sites succeeded`) : undefined);
      } else if (ok === min && opts.waitAfterMinMs !== undefined) {
        afterMin = setLongTimeout(() => stop(), opts.waitAfterMinMs);
      }
    });
  }
  if (targets.length === 0) stop();
  return out.drain();
}
