/**
 * Runs a trainer function in this process. The trainer pulls tasks with
 * receive() and answers with send(); runTask() is the executor's side of that
 * hand-off. A trainer that throws or returns fails whatever task is pending.
 */
import type { FLModel } from '../../core/fl-model.ts';
import { cloneDict } from '../../core/tensor.ts';
import {
  type ClientAPI,
  type TaskInput,
  type Trainer,
  type TrainerContext,
  type TrainerHost,
  TaskNames,
  checkLog,
  checkParams,
} from '../api.ts';

export interface InProcessOptions {
  /**
   * Copy params on the way in and out (default true), so a trainer that
   * trains in place cannot change the caller's model (which may be shared by
   * several sites) and later training cannot change a result already returned;
   * the same isolation a child process has. false hands tensors over as they are.
   */
  copyParams?: boolean;
  /** how long stop() waits for the trainer function to return (default 10 s) */
  stopTimeoutMs?: number;
}

interface Job {
  task: TaskInput;
  resolve: (m: FLModel) => void;
  reject: (e: unknown) => void;
  /** the caller gave up (abort): a late send() is dropped */
  settled: boolean;
  /** what the trainer sees of the caller's abort (ClientAPI.taskSignal) */
  signal: AbortSignal;
  detach: () => void;
}

function copyModel(m: FLModel, copyParams: boolean): FLModel {
  return {
    params: copyParams ? cloneDict(m.params) : new Map(m.params),
    paramsType: m.paramsType,
    metrics: { ...m.metrics },
    meta: structuredClone(m.meta),
    currentRound: m.currentRound,
    totalRounds: m.totalRounds,
    ...(m.paramsPath !== undefined && { paramsPath: m.paramsPath }),
  };
}

const NEVER = new AbortController().signal;

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('the task was aborted', 'AbortError');
}

export class InProcessTrainerHost implements TrainerHost {
  private ctx: TrainerContext | undefined;
  private readonly queue: Job[] = [];
  /** delivered to the trainer, not yet answered */
  private current: Job | undefined;
  /** the last task the trainer received (for taskName() and log rounds) */
  private last: TaskInput | undefined;
  /** a trainer parked in receive() */
  private waiter: ((job: Job | null) => void) | undefined;
  private running = false;
  private stopping = false;
  /** set once the trainer function has finished; fails any later runTask */
  private ended: { error: unknown; reported: boolean } | undefined;
  private done: Promise<void> | undefined;
  private readonly copyParams: boolean;
  private readonly stopTimeoutMs: number;

  constructor(
    private readonly trainer: Trainer,
    opts: InProcessOptions = {},
  ) {
    this.copyParams = opts.copyParams ?? true;
    this.stopTimeoutMs = opts.stopTimeoutMs ?? 10_000;
  }

  async start(ctx: TrainerContext): Promise<void> {
    if (this.ctx) throw new Error('InProcessTrainerHost.start() called twice');
    this.ctx = ctx;
    this.running = true;
    const api = this.api(ctx);
    // not awaited: the trainer loop runs until stop() or until it returns
    this.done = Promise.resolve()
      .then(() => this.trainer(api))
      .then(
        () => this.finish(undefined),
        (e: unknown) => this.finish(e),
      );
  }

  /** Called once when the trainer function returns or throws. */
  private finish(thrown: unknown): void {
    this.running = false;
    const pending = [...(this.current ? [this.current] : []), ...this.queue.splice(0)];
    this.current = undefined;
    let error = thrown;
    if (error === undefined) {
      const t = pending[0]?.task;
      error = new Error(
        t
          ? `trainer returned while task "${t.taskId}" (${t.taskName}) was pending, without calling send()`
          : 'trainer has returned; it takes no more tasks',
      );
    }
    let reported = false;
    for (const job of pending) {
      if (job.settled) continue;
      this.settle(job);
      job.reject(error);
      reported = true;
    }
    // a normal return is only an error for tasks that were waiting on it
    this.ended = { error, reported: reported || thrown === undefined };
  }

  private settle(job: Job): void {
    job.settled = true;
    job.detach();
  }

  runTask(task: TaskInput, signal?: AbortSignal): Promise<FLModel> {
    if (!this.ctx) return Promise.reject(new Error('runTask() before start()'));
    if (this.ended) {
      this.ended.reported = true;
      return Promise.reject(this.ended.error);
    }
    if (this.stopping) return Promise.reject(new Error(`task "${task.taskId}" refused: the trainer host is stopping`));
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise<FLModel>((resolve, reject) => {
      const job: Job = { task, resolve, reject, settled: false, detach: () => {}, signal: signal ?? NEVER };
      if (signal) {
        const onAbort = (): void => {
          if (job.settled) return;
          const i = this.queue.indexOf(job);
          if (i >= 0) this.queue.splice(i, 1);
          // if it was delivered, the trainer's eventual send() is dropped
          this.settle(job);
          reject(abortReason(signal));
        };
        signal.addEventListener('abort', onAbort, { once: true });
        job.detach = () => signal.removeEventListener('abort', onAbort);
      }
      const w = this.waiter;
      if (w) {
        this.waiter = undefined;
        w(job);
      } else {
        this.queue.push(job);
      }
    });
  }

  async stop(): Promise<void> {
    if (!this.ctx || !this.done) return;
    this.stopping = true;
    this.running = false;
    for (const job of this.queue.splice(0)) {
      this.settle(job);
      job.reject(new Error(`task "${job.task.taskId}" was never started: the trainer host stopped`));
    }
    const w = this.waiter;
    this.waiter = undefined;
    w?.(null);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.done.then(() => false),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(true), this.stopTimeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      const err = new Error(
        `trainer did not return within ${this.stopTimeoutMs} ms after stop(); is it ignoring isRunning() or receive() returning null?`,
      );
      if (this.current && !this.current.settled) {
        this.settle(this.current);
        this.current.reject(err);
      }
      throw err;
    }
    // a trainer that threw with nobody waiting on a task: surface it here rather than lose it
    if (this.ended && !this.ended.reported) {
      this.ended.reported = true;
      throw this.ended.error;
    }
  }

  // ---- the trainer's side ----

  private api(ctx: TrainerContext): ClientAPI {
    const receive = async (): Promise<FLModel | null> => {
      if (this.current && !this.current.settled) {
        throw new Error(`receive() called before send() answered task "${this.current.task.taskId}" (${this.current.task.taskName})`);
      }
      if (this.waiter) throw new Error('receive() called while another receive() is still waiting');
      this.current = undefined;
      for (;;) {
        if (!this.running) return null;
        const job = this.queue.shift() ?? (await new Promise<Job | null>((r) => (this.waiter = r)));
        if (!job) return null;
        if (job.settled) continue; // aborted while queued
        this.current = job;
        this.last = job.task;
        lastSignal = job.signal;
        return copyModel(job.task.model, this.copyParams);
      }
    };
    const send = async (model: FLModel): Promise<void> => {
      const job = this.current;
      if (!job) throw new Error('send() called with no task pending: call receive() first');
      this.current = undefined;
      if (job.settled) return; // the caller aborted it
      this.settle(job);
      job.resolve(copyModel(model, this.copyParams));
    };
    const taskName = (): string => this.last?.taskName ?? '';
    let lastSignal = NEVER;
    return {
      init: async () => {},
      receive,
      send,
      isRunning: () => this.running,
      siteName: () => ctx.siteName,
      jobId: () => ctx.jobId,
      taskName,
      isTrain: () => taskName() === TaskNames.train,
      isEvaluate: () => taskName() === TaskNames.validate,
      isSubmitModel: () => taskName() === TaskNames.submitModel,
      taskSignal: () => lastSignal,
      log: (key, value, step) => {
        checkLog(key, value, step);
        const where = {
          ...(step === undefined ? {} : { step }),
          ...(this.last ? { round: this.last.model.currentRound } : {}),
        };
        ctx.onMetric(
          typeof value === 'string'
            ? { kind: 'text', site: ctx.siteName, key, text: value, ...where }
            : { site: ctx.siteName, key, value, ...where },
        );
      },
      logParams: (params) => {
        checkParams(params);
        ctx.onMetric({ kind: 'params', site: ctx.siteName, params: { ...params } });
      },
    };
  }
}
