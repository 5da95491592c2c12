/**
 * Runs a training script as a child process and feeds it tasks over a Unix
 * socket (docs/client-protocol.md). Whatever the child does (crash, hang
 * before connecting, exit mid-task, speak garbage), a pending runTask
 * settles with the reason: exit code or signal plus the tail of its stderr.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { FLModel } from '../../core/fl-model.ts';
import type { Tensor, TensorDict } from '../../core/tensor.ts';
import type { TaskInput, TrainerContext, TrainerHost } from '../api.ts';
import { FrameReader, FrameWriter, InvalidMessageError, PROTOCOL_VERSION, type TrainerMessage, TrainerMessageSchema } from '../framing.ts';
import { type LongTimer, setLongTimeout } from '../../util/long-timer.ts';
import { TrainerChild } from './trainer-child.ts';
import { listenForTrainer, metricOf, modelInfo, raceDeadline, taskFailure } from './trainer-socket.ts';
import {
  EXIT_AFTER_DISCONNECT_MS,
  type ExProcessOptions,
  type ExitStatus,
  MAX_SOCKET_PATH,
  TrainerProcessError,
  asError,
  deferred,
  within,
} from './child-process.ts';

interface Job {
  task: TaskInput;
  resolve: (m: FLModel) => void;
  reject: (e: unknown) => void;
  settled: boolean;
  detach: () => void;
}

export class ExProcessTrainerHost implements TrainerHost {
  private ctx: TrainerContext | undefined;
  private proc: TrainerChild;
  /** bumped when the trainer process is replaced: callbacks of the old one are ignored */
  private generation = 0;
  private restarting: Promise<void> | undefined;
  private restarts = 0;
  /** the grace period of a cancelled task still pending at the trainer */
  private grace: { job: Job; timer: LongTimer } | undefined;
  private server: net.Server | undefined;
  private conn: net.Socket | undefined;
  private writer: FrameWriter | undefined;
  private tmpDir: string | undefined;
  private welcomed = false;
  private readonly queue: Job[] = [];
  /** sent to the trainer, not yet answered (kept after an abort so its late result can be matched and dropped) */
  private current: Job | undefined;
  private last: TaskInput | undefined;
  /** the trainer sent `receive` and has had no answer yet */
  private trainerWaiting = false;
  private stopping = false;
  /** terminal: every later runTask rejects with it */
  private failure: Error | undefined;
  private readonly failed = deferred<never>();

  constructor(private readonly opts: ExProcessOptions) {
    this.proc = new TrainerChild(opts);
  }

  /** How the child ended, once it has. */
  get exitStatus(): ExitStatus | undefined {
    return this.proc.exit;
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  /** Path of the socket's private directory (removed by stop()). */
  get socketDirectory(): string | undefined {
    return this.tmpDir;
  }

  async start(ctx: TrainerContext): Promise<void> {
    if (this.ctx) throw new Error('ExProcessTrainerHost.start() called twice');
    this.ctx = ctx;
    // a private 0700 dir, so no other user can connect to the socket
    this.tmpDir = await mkdtemp(path.join(this.opts.socketDir ?? tmpdir(), 'flotilla-'));
    await this.launch(ctx);
  }

  /** Spawns the trainer process and shakes hands; on failure the host is terminated and the error thrown. */
  private async launch(ctx: TrainerContext): Promise<void> {
    const deadline = Date.now() + (this.opts.helloTimeoutMs ?? 60_000);
    const proc = this.proc;
    const gen = this.generation;
    let mismatch = false;
    try {
      // one socket per process started: a restarted trainer never meets its predecessor's
      const sockPath = path.join(this.tmpDir!, gen === 0 ? 'trainer.sock' : `trainer-${gen}.sock`);
      if (Buffer.byteLength(sockPath) > MAX_SOCKET_PATH)
        throw new Error(`socket path ${sockPath} is longer than ${MAX_SOCKET_PATH} bytes; pass a shorter socketDir`);
      const { server, firstConn } = await listenForTrainer(sockPath);
      this.server = server;
      proc.spawn({ socket: sockPath, siteName: ctx.siteName, jobId: ctx.jobId, workspace: ctx.workspace }, (err) => {
        if (proc === this.proc) this.terminate(err);
      });
      void proc.closed.promise.then(() => {
        if (proc === this.proc) this.terminate(this.exitError());
      });

      const conn = await this.beforeDeadline(firstConn, deadline, 'connect');
      server.close(); // stop listening; the accepted connection stays open
      conn.on('error', () => {}); // surfaces through the reader
      this.conn = conn;
      this.writer = new FrameWriter(conn);
      const reader = new FrameReader<TrainerMessage>(conn, TrainerMessageSchema);
      const hello = await this.beforeDeadline(reader.next(), deadline, 'say hello');
      if (!hello) {
        // most likely it is dying: report how
        await within(proc.closed.promise, EXIT_AFTER_DISCONNECT_MS);
        throw proc.exit ? this.exitError() : proc.error('trainer closed the connection before saying hello');
      }
      if (hello.msg.type !== 'hello')
        throw proc.error(`protocol violation: the trainer's first message must be "hello", got "${hello.msg.type}"`);
      if (hello.msg.protocol !== PROTOCOL_VERSION) {
        mismatch = true;
        const message = `trainer speaks protocol ${hello.msg.protocol}, client speaks ${PROTOCOL_VERSION}`;
        await this.writer.send({ type: 'error', message }).catch(() => {});
        throw new TrainerProcessError(message, undefined, proc.stderr);
      }
      await this.writer.send({ type: 'welcome', protocol: PROTOCOL_VERSION, siteName: ctx.siteName, jobId: ctx.jobId });
      this.welcomed = true;
      void this.readLoop(reader, gen);
    } catch (e) {
      const err = asError(e);
      this.terminate(err);
      // after an `error` frame the trainer should exit by itself; otherwise don't wait
      if (mismatch) await within(proc.closed.promise, EXIT_AFTER_DISCONNECT_MS);
      await proc.killAndReap();
      await this.cleanup();
      throw err;
    }
  }

  /**
   * The trainer went on with a cancelled task past its grace period: kill it and start a new
   * process, which gets the queued tasks. A trainer that cannot be started again ends the host.
   */
  private restart(why: string): void {
    if (this.failure || this.stopping || this.restarting) return;
    const old = this.proc;
    this.opts.logger?.(`flotilla: ${why}: killing trainer process ${old.pid ?? '?'} and starting it again`, 'stderr');
    this.generation++;
    this.proc = new TrainerChild(this.opts);
    this.welcomed = false;
    this.trainerWaiting = false;
    this.current = undefined;
    this.conn?.destroy();
    this.restarts++;
    this.restarting = (async () => {
      await old.killAndReap();
      await this.launch(this.ctx!);
      this.pump();
    })()
      .catch(() => {}) // launch() terminated the host with the reason
      .finally(() => {
        this.restarting = undefined;
      });
  }

  /** How many times the trainer process was killed and started again (a cancelled task ignored). */
  get restartCount(): number {
    return this.restarts;
  }

  /** Races p against the hello deadline and the child's death. */
  private beforeDeadline<T>(p: Promise<T>, deadline: number, what: string): Promise<T> {
    const ms = this.opts.helloTimeoutMs ?? 60_000;
    const hint = `it must connect to FLOTILLA_SOCKET and send "hello"`;
    return raceDeadline(p, this.failed.promise, deadline, () =>
      this.proc.error(`trainer "${this.proc.commandLine()}" did not ${what} within ${ms} ms (helloTimeoutMs); ${hint}`),
    );
  }

  private exitError(): TrainerProcessError {
    const t = this.current && !this.current.settled ? this.current.task : undefined;
    const when = !this.welcomed
      ? ' before completing the handshake'
      : t
        ? ` while task "${t.taskId}" (${t.taskName}) was pending`
        : this.stopping
          ? ' after stop'
          : '';
    return this.proc.exitError(when);
  }

  /** Terminal failure: rejects everything pending and every later runTask. */
  private terminate(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.failed.reject(err);
    this.clearGrace();
    this.trainerWaiting = false;
    const jobs = [...(this.current ? [this.current] : []), ...this.queue.splice(0)];
    this.current = undefined;
    for (const j of jobs) this.rejectJob(j, err);
    this.conn?.destroy();
  }

  private async cleanup(): Promise<void> {
    this.conn?.destroy();
    this.server?.close();
    if (this.tmpDir) await rm(this.tmpDir, { recursive: true, force: true });
  }

  // ---- jobs ----

  private settle(job: Job): boolean {
    if (job.settled) return false;
    job.settled = true;
    job.detach();
    return true;
  }

  private rejectJob(job: Job, err: unknown): void {
    if (this.settle(job)) job.reject(err);
  }

  runTask(task: TaskInput, signal?: AbortSignal): Promise<FLModel> {
    if (this.failure) return Promise.reject(this.failure);
    if (!this.welcomed && !this.restarting) return Promise.reject(new Error('runTask() before start() completed'));
    if (this.stopping) return Promise.reject(new Error(`task "${task.taskId}" refused: the trainer host is stopping`));
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<FLModel>((resolve, reject) => {
      const job: Job = { task, resolve, reject, settled: false, detach: () => {} };
      if (signal) {
        const onAbort = (): void => {
          const i = this.queue.indexOf(job);
          if (i >= 0) this.queue.splice(i, 1);
          this.rejectJob(job, signal.reason);
          // already sent: tell the trainer; its late result, if any, is dropped when it comes
          if (job === this.current) this.cancelSent(job, signal.reason);
        };
        signal.addEventListener('abort', onAbort, { once: true });
        job.detach = () => signal.removeEventListener('abort', onAbort);
      }
      this.queue.push(job);
      this.pump();
    });
  }

  /** Sends `cancel` for a task the trainer has, and gives it cancelGraceMs to stop working on it. */
  private cancelSent(job: Job, reason: unknown): void {
    const w = this.writer;
    if (!w || this.failure) return;
    const why = reason instanceof Error ? reason.message : typeof reason === 'string' ? reason : 'cancelled by the server';
    w.send({ type: 'cancel', taskId: job.task.taskId, reason: why }).catch((e: unknown) => void this.connectionLost(asError(e)));
    this.clearGrace();
    const ms = this.opts.cancelGraceMs ?? 10_000;
    const timer = setLongTimeout(() => {
      this.grace = undefined;
      if (this.current === job)
        this.restart(`task "${job.task.taskId}" was cancelled and the trainer did not stop within ${ms} ms (cancelGraceMs)`);
    }, ms);
    timer.unref();
    this.grace = { job, timer };
  }

  private clearGrace(): void {
    this.grace?.timer.clear();
    this.grace = undefined;
  }

  /** Answers a waiting trainer: the next task, or stop. */
  private pump(): void {
    const w = this.writer;
    if (!this.trainerWaiting || this.failure || !w) return;
    if (this.stopping) {
      this.trainerWaiting = false;
      w.send({ type: 'stop', reason: 'the job is over' }).catch((e: unknown) => void this.connectionLost(asError(e)));
      return;
    }
    let job: Job | undefined;
    while ((job = this.queue.shift()) && job.settled);
    if (!job) return;
    this.trainerWaiting = false;
    this.current = job;
    this.last = job.task;
    const { taskId, taskName, model } = job.task;
    const sent = job;
    w.send({ type: 'task', taskId, taskName, model: modelInfo(model) }, model.params).catch((e: unknown) => {
      if (e instanceof InvalidMessageError) {
        // nothing was written: fail this task, the trainer is still waiting for one
        if (this.current === sent) this.current = undefined;
        this.rejectJob(sent, e);
        this.trainerWaiting = true;
        this.pump();
      } else {
        void this.connectionLost(asError(e));
      }
    });
  }

  private async readLoop(reader: FrameReader<TrainerMessage>, gen: number): Promise<void> {
    let cause: Error | undefined;
    try {
      for (;;) {
        const f = await reader.next();
        if (gen !== this.generation) return; // a replaced process: its connection no longer counts
        if (!f || this.failure) break;
        try {
          this.handle(f.msg, f.params);
        } catch (e) {
          // our side failed (e.g. ctx.onMetric threw): not the connection's fault, but the job cannot go on
          this.terminate(this.proc.error(`error while handling a "${f.msg.type}" message from the trainer: ${asError(e).message}`));
          await this.proc.killAndReap();
          return;
        }
      }
    } catch (e) {
      cause = asError(e);
    }
    if (gen !== this.generation) return;
    await this.connectionLost(cause);
  }

  private violation(message: string): void {
    this.terminate(this.proc.error(`protocol violation by the trainer: ${message}`));
    void this.proc.killAndReap();
  }

  private handle(msg: TrainerMessage, params: TensorDict | undefined): void {
    switch (msg.type) {
      case 'hello':
        return this.violation('"hello" sent twice');
      case 'receive': {
        const cur = this.current;
        if (this.grace?.job === cur) this.clearGrace();
        if (cur) {
          // the trainer moved on without answering: fail that task rather than wait forever
          this.current = undefined;
          this.rejectJob(cur, taskFailure(cur.task, ': the trainer asked for a new task without answering it'));
        }
        this.trainerWaiting = true;
        return this.pump();
      }
      case 'result': {
        const cur = this.current;
        if (!cur) return this.violation(`"result" for task "${msg.taskId}" but no task is pending`);
        if (cur.task.taskId !== msg.taskId)
          return this.violation(`"result" for task "${msg.taskId}" but task "${cur.task.taskId}" is pending`);
        this.current = undefined;
        if (this.grace?.job === cur) this.clearGrace();
        if (this.settle(cur)) cur.resolve({ ...msg.model, params: params ?? new Map<string, Tensor>() });
        return;
      }
      case 'failed': {
        const cur = this.current;
        if (!cur) return this.violation(`"failed" with no task pending: ${msg.message}`);
        this.current = undefined;
        if (this.grace?.job === cur) this.clearGrace();
        return this.rejectJob(cur, taskFailure(cur.task, ` in the trainer: ${msg.message}`, msg.traceback));
      }
      case 'log':
      case 'params':
        return this.ctx!.onMetric(metricOf(this.ctx!, msg, (this.current?.task ?? this.last)?.model.currentRound));
    }
  }

  /** The socket dropped or broke: report the exit status if the process is ending, else kill it. */
  private async connectionLost(cause: Error | undefined): Promise<void> {
    if (this.failure) return;
    // the trainer usually exits right after its socket closes; its exit code is the useful part
    if (await within(this.proc.closed.promise, EXIT_AFTER_DISCONNECT_MS)) return; // terminate(exitError) ran
    if (this.failure) return;
    const why = cause ? `: ${cause.message}` : '';
    this.terminate(
      this.proc.error(
        `lost the connection to trainer process ${this.proc.pid ?? '?'}${why} (the process was still running and has been killed)`,
      ),
    );
    await this.proc.killAndReap();
  }

  async stop(): Promise<void> {
    if (!this.ctx) return;
    await this.restarting;
    if (!this.stopping) {
      this.stopping = true;
      for (const j of this.queue.splice(0))
        this.rejectJob(j, new Error(`task "${j.task.taskId}" was never started: the trainer host stopped`));
      this.pump(); // a trainer waiting in receive() gets `stop` now, otherwise on its next receive()
    }
    if (this.proc.running && !(await within(this.proc.closed.promise, this.opts.stopTimeoutMs ?? 10_000))) await this.proc.killAndReap();
    this.terminate(new Error('the trainer host has stopped'));
    await this.cleanup();
  }
}

export { type ExProcessOptions, type ExitStatus, TrainerProcessError, TrainerTaskError } from './child-process.ts';
