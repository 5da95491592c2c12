/**
 * Client side of the runtime: registers with the server, receives tasks,
 * dispatches each to the handler for its name and sends the result back.
 * Tasks run one at a time, in arrival order. A handler that fails makes that
 * task fail on the server with the handler's message; the client goes on.
 */
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FLModel, FLModelInfo } from '../core/fl-model.ts';
import type { Tensor } from '../core/tensor.ts';
import { fileSource } from '../core/model-source.ts';
import { writeStreamToFile } from '../core/safetensors.ts';
import { type TensorStream, decodeStream, dictToStream, encodeStream, encodedBytes, streamToDict } from '../core/tensor-stream.ts';
import type { MetricRecord, TrainerHost } from '../client/api.ts';
import { Channel, type ChannelOptions, type MalformedMessageError } from '../streaming/index.ts';
import type { Link } from '../transport/link.ts';
import { type Logger, silentLogger } from '../util/log.ts';
import { RUNTIME_PROTOCOL, ServerMessageSchema } from './messages.ts';
import { describeZodError } from '../util/zod-error.ts';
import { transferLogger } from './transfer-log.ts';
import { FilterChain } from '../filters/chain.ts';
import { unlessAborted } from '../util/abort.ts';
import type { FilterContext } from '../filters/types.ts';

export interface IncomingTask {
  taskId: string;
  taskName: string;
  info: FLModelInfo;
  params: TensorStream | null;
}

export interface TaskOutput {
  info: FLModelInfo;
  params: TensorStream | null;
  /** called once the result has been sent (removes task files) */
  cleanup?: () => Promise<void>;
}

/** A site workspace's folder of per-task files (`<taskId>/input.safetensors`, a trainer's result beside it). */
export const TASKS_DIR = 'tasks';

export type TaskHandler = (task: IncomingTask, signal: AbortSignal) => Promise<TaskOutput>;

/** task name → handler; '*' handles any name without its own handler. */
export type Executor = Readonly<Record<string, TaskHandler>>;

export interface TrainerExecutorOptions {
  /**
   * 'memory' (default): the trainer gets the tensors in `params`.
   * 'file': the task's model is streamed to a safetensors file in `workspace` and the trainer
   * gets its path in `paramsPath` (models larger than memory); a trainer may answer the same way.
   */
  params?: 'memory' | 'file';
  workspace?: string;
}

/** An executor that hands every task to a Client API trainer (NVFlare's ClientAPI executor). */
export function trainerExecutor(host: TrainerHost, opts: TrainerExecutorOptions = {}): Executor {
  return {
    '*': async (task, signal) => {
      // a path never comes from the network: only this client decides where files go
      const { paramsPath: _fromNetwork, ...info } = task.info;
      const taskDir = opts.params === 'file' && task.params ? join(opts.workspace ?? tmpdir(), TASKS_DIR, task.taskId) : null;
      const cleanup = async (): Promise<void> => {
        if (taskDir) await rm(taskDir, { recursive: true, force: true });
      };
      try {
        let model: FLModel;
        if (taskDir && task.params) {
          // inside the try: a transfer cut half-way (cancel, full disk) leaves no partial input behind
          const path = join(taskDir, 'input.safetensors');
          await writeStreamToFile(path, task.params, { durable: false });
          model = { ...info, params: new Map(), paramsPath: path };
        } else {
          model = { ...info, params: task.params ? await streamToDict(task.params) : new Map<string, Tensor>() };
        }
        const out = await host.runTask({ taskId: task.taskId, taskName: task.taskName, model }, signal);
        const { params, paramsPath, ...outInfo } = out;
        if (paramsPath !== undefined) {
          if (params.size > 0) throw new Error('the trainer sent both params and paramsPath: send one');
          return { info: outInfo, params: (await fileSource(paramsPath)).open(), cleanup };
        }
        return { info: outInfo, params: params.size > 0 ? dictToStream(params) : null, cleanup };
      } catch (e) {
        await cleanup();
        throw e;
      }
    },
  };
}

/** The reason a task's signal carries when the server cancelled it. */
export class TaskCancelledError extends Error {
  override readonly name = 'TaskCancelledError';
  constructor(readonly reason: string) {
    super(`task cancelled by the server: ${reason}`);
  }
}

export interface ClientRunnerOptions {
  site: string;
  executor: Executor;
  channel?: ChannelOptions;
  log?: Logger;
  heartbeatMs?: number;
  /** task names that run beside the one-at-a-time queue (the swarm aggregator folds results while its trainer trains) */
  concurrentTasks?: ReadonlySet<string>;
  /** the job's filters and this site's policy: receiving halves on tasks, sending halves on results (src/filters) */
  filters?: FilterChain;
  /** where the filters keep temporary files (FilterContext.scratchDir) */
  filterScratchDir?: string;
}

export class ClientRunner {
  private readonly channel: Channel;
  private readonly log: Logger;
  private jobIdValue = '';
  private readonly abort = new AbortController();
  /** tasks received and not finished, each with its own abort (the server's `cancel`) */
  private readonly tasks = new Map<string, AbortController>();

  constructor(
    link: Link,
    private readonly opts: ClientRunnerOptions,
  ) {
    this.log = opts.log ?? silentLogger();
    const onMalformed = (e: MalformedMessageError): void => this.log.warn({ err: e.detail }, 'malformed message from server ignored');
    this.channel = new Channel(link, { onMalformed, ...opts.channel, onTransfer: transferLogger(this.log, opts.channel?.onTransfer) });
  }

  get jobId(): string {
    return this.jobIdValue;
  }

  /** Forwards what a trainer logged (a scalar, a text, params) to the server, while its task runs. */
  metric(m: MetricRecord): void {
    if (m.kind !== 'params' && m.kind !== 'text' && !Number.isFinite(m.value)) {
      // JSON has no NaN or Infinity: sent, it would arrive as null and be refused as malformed
      this.log.warn(
        { metric: m.key, value: String(m.value) },
        `metric "${m.key}" is ${m.value}, not a finite number: not sent to the server`,
      );
      return;
    }
    const where = {
      ...(m.kind !== 'params' && m.step !== undefined && { step: m.step }),
      ...(m.kind !== 'params' && m.round !== undefined && { round: m.round }),
    };
    const msg =
      m.kind === 'params'
        ? { type: 'params', params: m.params }
        : m.kind === 'text'
          ? { type: 'text', key: m.key, text: m.text, ...where }
          : { type: 'metric', key: m.key, value: m.value, ...where };
    void this.channel.send(msg).catch(() => undefined);
  }

  /** Runs until the server ends the job or the link closes. Returns the reason. */
  async run(): Promise<string> {
    await this.channel.send({ type: 'register', site: this.opts.site, protocol: RUNTIME_PROTOCOL });
    const beat = (): void => void this.channel.send({ type: 'heartbeat' }).catch(() => undefined);
    let heartbeat = setInterval(beat, this.opts.heartbeatMs ?? 10_000);
    heartbeat.unref();
    let queue: Promise<void> = Promise.resolve();
    try {
      for await (const env of this.channel.messages()) {
        const parsed = ServerMessageSchema.safeParse(env.msg);
        if (!parsed.success) {
          env.payload?.cancel('malformed');
          this.log.warn({ err: describeZodError(parsed.error) }, 'malformed message from server ignored');
          continue;
        }
        const m = parsed.data;
        switch (m.type) {
          case 'registered':
            this.jobIdValue = m.jobId;
            if (m.heartbeatSeconds !== undefined && this.opts.heartbeatMs === undefined) {
              // the server drops a site silent for four of these: beat at its pace, from its own timer (not the trainer's)
              clearInterval(heartbeat);
              heartbeat = setInterval(beat, m.heartbeatSeconds * 1000);
              heartbeat.unref();
            }
            this.log.info({ site: m.site, jobId: m.jobId }, 'registered');
            break;
          case 'rejected':
            throw new Error(`server refused ${this.opts.site}: ${m.reason}`);
          case 'end':
            this.abort.abort(new Error(`job ended: ${m.reason}`));
            await queue;
            return m.reason;
          case 'cancel': {
            const t = this.tasks.get(m.taskId);
            if (t && !t.signal.aborted) {
              this.log.warn({ taskId: m.taskId, reason: m.reason }, 'task cancelled by the server');
              t.abort(new TaskCancelledError(m.reason));
            }
            break;
          }
          case 'task': {
            // one task at a time, in order; the message loop stays free to see 'end', 'cancel' and abort
            const payload = env.payload;
            const ctrl = new AbortController();
            this.tasks.set(m.taskId, ctrl);
            const work = async (): Promise<void> => {
              if (ctrl.signal.aborted) {
                // cancelled while queued: never started, and the server wants no answer
                payload?.cancel('task cancelled');
                this.tasks.delete(m.taskId);
                return;
              }
              let params: TensorStream | null = null;
              let info = m.info;
              try {
                params = m.hasParams && payload ? await decodeStream(payload) : null;
                if (params) ({ info, params } = this.filterChain.receive({ info, params }, this.filterContext(m.taskName, 'task')));
              } catch (e) {
                // the reason travels with the cancel too: the server, still sending, records that first
                const error = `bad task payload: ${(e as Error).message}`;
                payload?.cancel(error.slice(0, 1024));
                this.tasks.delete(m.taskId);
                await this.fail(m.taskId, error);
                return;
              }
              await this.runTask({ taskId: m.taskId, taskName: m.taskName, info, params }, ctrl.signal);
              payload?.cancel('task finished');
              this.tasks.delete(m.taskId);
            };
            if (this.opts.concurrentTasks?.has(m.taskName)) void work();
            else queue = queue.then(work);
            break;
          }
        }
      }
      return 'connection closed';
    } finally {
      clearInterval(heartbeat);
      this.abort.abort(new Error('client stopping'));
    }
  }

  close(): void {
    this.channel.close('client closing');
  }

  private get filterChain(): FilterChain {
    return (this.opts.filters ??= new FilterChain());
  }

  private filterContext(taskName: string, direction: 'task' | 'result'): FilterContext {
    return {
      site: this.opts.site,
      taskName,
      direction,
      ...(this.opts.filterScratchDir !== undefined && { scratchDir: this.opts.filterScratchDir }),
      metric: (key, value, round) => this.metric({ site: this.opts.site, key, value, ...(round !== undefined && { round }) }),
    };
  }

  private async runTask(task: IncomingTask, cancelled: AbortSignal): Promise<void> {
    const handler = this.opts.executor[task.taskName] ?? this.opts.executor['*'];
    const started = Date.now();
    const signal = AbortSignal.any([this.abort.signal, cancelled]);
    try {
      if (!handler) throw new Error(`no handler for task "${task.taskName}" on ${this.opts.site}`);
      const work = handler(task, signal);
      work.then(
        (late) => signal.aborted && void late.cleanup?.().catch(() => undefined),
        () => undefined,
      );
      // a handler that ignores its signal must not hold the site: on abort the runner moves on at once.
      // unlessAborted removes its listener when the work ends: a composite signal with an abort listener is
      // kept alive by Node until it aborts, and this one rarely does, so a listener left on it held every
      // task's result (its tensors) for the job's life: one model per round (the soak run, docs/reliability.md)
      const done = await unlessAborted(work, signal);
      const bad = Object.entries(done.info.metrics).filter(([, v]) => !Number.isFinite(v));
      if (bad.length > 0) {
        await done.cleanup?.();
        const list = bad.map(([k, v]) => `"${k}" is ${v}`).join(', ');
        throw new Error(
          `the trainer's result has metrics that are not finite numbers (${list}): JSON cannot carry them; check the training (a diverging loss?) or leave them out of the result`,
        );
      }
      try {
        const out = done.params
          ? { ...done, ...this.filterChain.send({ info: done.info, params: done.params }, this.filterContext(task.taskName, 'result')) }
          : done;
        const msg = { type: 'result', taskId: task.taskId, status: 'ok', info: out.info, hasParams: out.params !== null };
        await this.channel.send(
          msg,
          out.params ? encodeStream(out.params) : undefined,
          out.params ? { totalBytes: encodedBytes(out.params.header) } : {},
        );
      } finally {
        await done.cleanup?.();
      }
      this.log.info({ task: task.taskName, ms: Date.now() - started }, 'task done');
    } catch (e) {
      const error = (e as Error).message ?? String(e);
      if (cancelled.aborted) {
        this.log.info({ task: task.taskName, ms: Date.now() - started }, 'cancelled task stopped');
        return; // the server has already failed it: no answer
      }
      this.log.warn({ task: task.taskName, error }, 'task failed');
      await this.fail(task.taskId, error);
    }
  }

  private async fail(taskId: string, error: string): Promise<void> {
    await this.channel.send({ type: 'result', taskId, status: 'error', error: error.slice(0, 65536) }).catch(() => undefined);
  }
}
