/**
 * The trainer's side of the ex-process protocol (docs/client-protocol.md):
 * a ClientAPI for TypeScript/JavaScript training scripts that a Flotilla
 * client starts as a child process. It connects to FLOTILLA_SOCKET, says
 * hello, and then turns receive()/send()/log() into frames.
 */
import net from 'node:net';
import { z } from 'zod';
import type { FLModel } from '../../core/fl-model.ts';
import type { Tensor } from '../../core/tensor.ts';
import { type ClientAPI, type ParamValue, type Trainer, TaskNames, checkLog, checkParams } from '../api.ts';
import { type ClientMessage, ClientMessageSchema, FrameReader, FrameWriter, PROTOCOL_VERSION } from '../framing.ts';
import { startResourceReport } from '../../util/resource-report.ts';

const EnvSchema = z.object({
  FLOTILLA_SOCKET: z
    .string({ error: 'FLOTILLA_SOCKET is not set: this script must be started by a Flotilla client as an ex-process trainer' })
    .min(1),
  FLOTILLA_PROTOCOL: z.string().optional(),
  FLOTILLA_SITE_NAME: z.string().optional(),
  FLOTILLA_JOB_ID: z.string().optional(),
});

interface Connection {
  sock: net.Socket;
  reader: FrameReader<ClientMessage>;
  writer: FrameWriter;
}

interface PendingTask {
  taskId: string;
  taskName: string;
}

type ClientFrame = Awaited<ReturnType<FrameReader<ClientMessage>['next']>>;

export class ExProcessClient implements ClientAPI {
  private conn: Connection | undefined;
  private initializing: Promise<void> | undefined;
  private running = false;
  private site = '';
  private job = '';
  private pending: PendingTask | undefined;
  private lastTaskName = '';
  /** a write failed in the background (log): reported by the next call */
  private deferredError: Error | undefined;
  /** aborted when the client sends `cancel` for the task received last */
  private taskAbort = new AbortController();
  /** the task cancelled last: its send()/fail() are dropped */
  private cancelledId: string | undefined;
  /**
   * The read started when a task arrives, so a `cancel` is seen while the trainer works; the
   * next receive() takes it (the client sends nothing else before the trainer's next `receive`).
   */
  private nextFrame: Promise<ClientFrame> | undefined;

  constructor(private readonly env: NodeJS.ProcessEnv = process.env) {}

  /**
   * Aborted when the server cancels the task received last (it timed out, the round closed
   * without it, the job was aborted): stop working on it and call receive() again; a send() for
   * it is dropped.
   */
  taskSignal(): AbortSignal {
    return this.taskAbort.signal;
  }

  private watch(c: Connection, taskId: string): void {
    const p = c.reader.next();
    p.then(
      (f) => {
        if (f?.msg.type === 'cancel' && f.msg.taskId === taskId && this.pending?.taskId === taskId) {
          this.cancelledId = taskId;
          this.pending = undefined;
          this.taskAbort.abort(new Error(`task cancelled by the server: ${f.msg.reason}`));
        }
      },
      () => {}, // receive() reports it
    );
    this.nextFrame = p;
  }

  /** Connects and shakes hands; calling it again is harmless. */
  init(): Promise<void> {
    this.initializing ??= this.connect();
    return this.initializing;
  }

  private async connect(): Promise<void> {
    const parsed = EnvSchema.safeParse(this.env);
    if (!parsed.success) throw new Error(`flotilla client: ${z.prettifyError(parsed.error)}`);
    const env = parsed.data;
    if (env.FLOTILLA_PROTOCOL !== undefined && env.FLOTILLA_PROTOCOL !== String(PROTOCOL_VERSION)) {
      // still say hello: the client answers with an error naming both versions
      process.emitWarning(`FLOTILLA_PROTOCOL is ${env.FLOTILLA_PROTOCOL}, this trainer library speaks ${PROTOCOL_VERSION}`);
    }
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(env.FLOTILLA_SOCKET);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', (e) => reject(new Error(`flotilla client: cannot connect to ${env.FLOTILLA_SOCKET}: ${e.message}`)));
    });
    sock.on('error', (e) => {
      this.deferredError ??= e;
    });
    const conn: Connection = { sock, reader: new FrameReader(sock, ClientMessageSchema), writer: new FrameWriter(sock) };
    await conn.writer.send({ type: 'hello', protocol: PROTOCOL_VERSION, language: 'typescript', pid: process.pid });
    const f = await conn.reader.next();
    if (!f) throw new Error('flotilla client: the client closed the connection during the handshake');
    if (f.msg.type === 'error') {
      sock.destroy();
      throw new Error(`flotilla client refused this trainer: ${f.msg.message}`);
    }
    if (f.msg.type !== 'welcome') {
      sock.destroy();
      throw new Error(`flotilla client: expected "welcome", got "${f.msg.type}"`);
    }
    this.site = f.msg.siteName;
    this.job = f.msg.jobId;
    this.conn = conn;
    this.running = true;
    // a soak run (scripts/soak.ts) asks every process for its own handles and memory, trainers too
    startResourceReport(this.env);
  }

  private connection(method: string): Connection {
    if (!this.conn) throw new Error(`${method}() called before init() completed`);
    if (this.deferredError) throw new Error(`flotilla client: the connection failed: ${this.deferredError.message}`);
    return this.conn;
  }

  async receive(): Promise<FLModel | null> {
    if (!this.running) return null;
    const c = this.connection('receive');
    if (this.pending) throw new Error(`receive() called before send() answered task "${this.pending.taskId}" (${this.pending.taskName})`);
    await c.writer.send({ type: 'receive' });
    let f: ClientFrame;
    do {
      // a cancel for an earlier task (already answered, or seen by watch()) is skipped
      f = await (this.nextFrame ?? c.reader.next());
      this.nextFrame = undefined;
    } while (f?.msg.type === 'cancel');
    if (!f) {
      this.close();
      throw new Error('flotilla client: the connection to the Flotilla client closed (the client stopped or crashed)');
    }
    switch (f.msg.type) {
      case 'task':
        this.pending = { taskId: f.msg.taskId, taskName: f.msg.taskName };
        this.lastTaskName = f.msg.taskName;
        this.taskAbort = new AbortController();
        this.cancelledId = undefined;
        this.watch(c, f.msg.taskId);
        return { ...f.msg.model, params: f.params ?? new Map<string, Tensor>() };
      case 'stop':
        this.close();
        return null;
      case 'error':
        this.close();
        throw new Error(`flotilla client: ${f.msg.message}`);
      case 'welcome':
        this.close();
        throw new Error('flotilla client: protocol violation: unexpected "welcome"');
    }
  }

  async send(model: FLModel): Promise<void> {
    const c = this.connection('send');
    const p = this.pending;
    if (!p && this.cancelledId !== undefined) return; // the server cancelled it: nothing to send
    if (!p) throw new Error('send() called with no task pending: call receive() first');
    const info = {
      paramsType: model.paramsType,
      metrics: model.metrics,
      meta: model.meta,
      currentRound: model.currentRound,
      totalRounds: model.totalRounds,
      ...(model.paramsPath !== undefined && { paramsPath: model.paramsPath }),
    };
    // an invalid model (NaN metric, say) throws here with nothing sent; the task stays pending
    await c.writer.send({ type: 'result', taskId: p.taskId, model: info }, model.params);
    this.pending = undefined;
  }

  /**
   * Reports that the task received last failed (NVFlare has no such call;
   * without it a trainer can only crash). The client rejects that task with
   * the message and traceback and keeps this process for the next one.
   */
  async fail(error: unknown): Promise<void> {
    const c = this.connection('fail');
    if (!this.pending && this.cancelledId !== undefined) return;
    if (!this.pending) throw new Error('fail() called with no task pending');
    const e = error instanceof Error ? error : new Error(String(error));
    await c.writer.send({ type: 'failed', message: e.message, ...(e.stack ? { traceback: e.stack } : {}) });
    this.pending = undefined;
  }

  /** True while a received task awaits send() or fail(). */
  hasPendingTask(): boolean {
    return this.pending !== undefined;
  }

  isRunning(): boolean {
    return this.running;
  }

  siteName(): string {
    return this.site;
  }

  jobId(): string {
    return this.job;
  }

  taskName(): string {
    return this.lastTaskName;
  }

  isTrain(): boolean {
    return this.lastTaskName === TaskNames.train;
  }

  isEvaluate(): boolean {
    return this.lastTaskName === TaskNames.validate;
  }

  isSubmitModel(): boolean {
    return this.lastTaskName === TaskNames.submitModel;
  }

  log(key: string, value: number | string, step?: number): void {
    const c = this.connection('log');
    checkLog(key, value, step);
    // fire and forget (ClientAPI.log is synchronous); frames stay in order behind the writer's queue
    this.background(c.writer.send({ type: 'log', key, value, ...(step === undefined ? {} : { step }) }));
  }

  logParams(params: Record<string, ParamValue>): void {
    const c = this.connection('logParams');
    checkParams(params);
    this.background(c.writer.send({ type: 'params', params: { ...params } }));
  }

  private background(p: Promise<unknown>): void {
    p.catch((e: unknown) => {
      this.deferredError ??= e instanceof Error ? e : new Error(String(e));
    });
  }

  /** Closes the connection (done by receive() on stop); the process can then exit. */
  close(): void {
    this.running = false;
    this.conn?.sock.end();
  }
}

/**
 * Runs a Trainer function (the same one InProcessTrainerHost runs) as an
 * ex-process trainer: init, run, and if it throws with a task pending, report
 * that task as failed before exiting with code 1.
 */
export async function runTrainer(trainer: Trainer, client: ExProcessClient = new ExProcessClient()): Promise<void> {
  await client.init();
  try {
    await trainer(client);
  } catch (e) {
    if (client.hasPendingTask()) await client.fail(e).catch(() => {});
    client.close();
    throw e;
  }
  client.close();
}
