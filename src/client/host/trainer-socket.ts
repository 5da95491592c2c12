/**
 * The pieces of the ex-process host that need none of its state: the socket a trainer process
 * connects to, the task frame's model description, a race against the hello deadline, and what a
 * trainer's `log` / `params` message becomes (process-host.ts).
 */
import net from 'node:net';
import type { FLModel, FLModelInfo } from '../../core/fl-model.ts';
import { type LongTimer, setLongTimeout } from '../../util/long-timer.ts';
import type { MetricRecord, TaskInput, TrainerContext } from '../api.ts';
import type { TrainerMessage } from '../framing.ts';
import { TrainerTaskError } from './child-process.ts';

/** The model of a task frame without its tensors (those travel after it). */
export function modelInfo(m: FLModel): FLModelInfo {
  return {
    paramsType: m.paramsType,
    metrics: m.metrics,
    meta: m.meta,
    currentRound: m.currentRound,
    totalRounds: m.totalRounds,
    ...(m.paramsPath !== undefined && { paramsPath: m.paramsPath }),
  };
}

/** Listens on a Unix socket for one connection: the trainer, nobody else. */
export async function listenForTrainer(sockPath: string): Promise<{ server: net.Server; firstConn: Promise<net.Socket> }> {
  const server = net.createServer();
  server.maxConnections = 1;
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(sockPath, () => {
      server.off('error', rej);
      res();
    });
  });
  return { server, firstConn: new Promise<net.Socket>((res) => server.once('connection', res)) };
}

/** p, unless `failed` rejects first or the deadline passes (then the error `late()` makes). */
export async function raceDeadline<T>(p: Promise<T>, failed: Promise<never>, deadline: number, late: () => Error): Promise<T> {
  let timer: LongTimer | undefined;
  const timeout = new Promise<never>((_, rej) => {
    timer = setLongTimeout(() => rej(late()), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([p, failed, timeout]);
  } finally {
    timer?.clear();
  }
}

/** What a trainer's `log` or `params` message records, in the round of the task it works on. */
export function metricOf(
  ctx: TrainerContext,
  msg: Extract<TrainerMessage, { type: 'log' | 'params' }>,
  round: number | undefined,
): MetricRecord {
  if (msg.type === 'params') return { kind: 'params', site: ctx.siteName, params: msg.params };
  const where = { ...(msg.step === undefined ? {} : { step: msg.step }), ...(round === undefined ? {} : { round }) };
  return typeof msg.value === 'string'
    ? { kind: 'text', site: ctx.siteName, key: msg.key, text: msg.value, ...where }
    : { site: ctx.siteName, key: msg.key, value: msg.value, ...where };
}

/** A task the trainer failed (`what` says how), its traceback appended to the message when it sent one. */
export function taskFailure(task: TaskInput, what: string, traceback?: string): TrainerTaskError {
  const tb = traceback ? `\n${traceback}` : '';
  return new TrainerTaskError(`task "${task.taskId}" (${task.taskName}) failed${what}${tb}`, traceback);
}
