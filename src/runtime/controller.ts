/**
 * Server side of the runtime: the Controller API that workflows program
 * against, implemented over any ServerTransport. Results are delivered as they
 * arrive (an async iterator), each with its parameters as a tensor stream, so a
 * workflow can aggregate one result while others are still in flight.
 */
import { randomUUID } from 'node:crypto';
import type { TensorDict } from '../core/tensor.ts';
import { type TensorStream, encodeStream, encodedBytes } from '../core/tensor-stream.ts';
import { Channel, type ChannelOptions, type Envelope, type MalformedMessageError, type TransferProgress } from '../streaming/index.ts';
import type { Link, ServerTransport } from '../transport/link.ts';
import { type Logger, silentLogger } from '../util/log.ts';
import { ControllerError } from './errors.ts';
import { gatherResults } from './broadcast.ts';
import { readResult } from './result-intake.ts';
import type { BroadcastOptions, Controller, MetricEvent, TaskRequest, TaskResult } from './controller-api.ts';
import { type ClientMessage, ClientMessageSchema, RUNTIME_PROTOCOL } from './messages.ts';
import { describeZodError } from '../util/zod-error.ts';
import { type RelayHop, type RelayOptions, type RelayTask, relayOver } from './relay.ts';
import { transferLogger } from './transfer-log.ts';
import { type LongTimer, setLongTimeout } from '../util/long-timer.ts';
import { FilterChain } from '../filters/chain.ts';

export type { RelayFailurePolicy, RelayHop, RelayHopFailed, RelayHopOk, RelayOptions, RelayTask } from './relay.ts';
export { RelayAbortedError } from './relay.ts';

export type { BroadcastOptions, Controller, MetricEvent, TaskRequest, TaskResult } from './controller-api.ts';
export { ControllerError };

interface SiteState {
  channel: Channel;
  pending: Map<string, (r: TaskResult) => void>;
  /** when the site last sent anything (a message or payload bytes): its heartbeat */
  lastSeen: number;
  /** the largest result (encoded bytes) each pending task may return */
  resultLimits: Map<string, number>;
  /** each pending task's name (the filters of its result) */
  taskNames: Map<string, string>;
}

/** A task's result may be twice the model it was sent plus this much (metadata, a changed dtype). */
const RESULT_SLACK_BYTES = 64 << 20;
/** The result limit of a task sent without a model, unless the job sets maxResultBytes. */
export const DEFAULT_RESULT_LIMIT_BYTES = 8 * 2 ** 30;

export interface ServerRuntimeOptions {
  jobId: string;
  channel?: ChannelOptions;
  log?: Logger;
  onMetric?: (m: MetricEvent) => void;
  /**
   * largest result a client may send, in bytes (job.yaml maxResultBytes); unset, each task's limit
   * is twice the model it sent plus 64 MiB, or 8 GiB for a task sent without one
   */
  maxResultBytes?: number;
  /**
   * a site silent this long (no message, no payload bytes) is dropped from the job: its tasks fail
   * at once and the rounds go on without it. Sites are told to heartbeat four times as often.
   * Default: no limit (a site is dropped only when its link fails for good).
   */
  heartbeatTimeoutMs?: number;
  /** the job's filters: sending halves on tasks, receiving halves on results (src/filters) */
  filters?: FilterChain;
}

export class ServerRuntime implements Controller {
  readonly jobId: string;
  private readonly siteMap = new Map<string, SiteState>();
  private readonly log: Logger;
  private readonly siteWaiters = new Set<() => void>();
  private accepting: Promise<void> | null = null;
  /** resumable channels by the id their client gave them: a new link naming one continues it */
  private readonly resumable = new Map<string, Channel>();

  private readonly channelOpts: ChannelOptions;
  private sweeper: NodeJS.Timeout | null = null;
  /** end() was called: sites leaving now are the job's normal end */
  private ended = false;
  private maxResultBytes: number | undefined;
  private filters: FilterChain;

  constructor(
    private readonly transport: ServerTransport,
    private readonly opts: ServerRuntimeOptions,
  ) {
    this.jobId = opts.jobId;
    this.log = opts.log ?? silentLogger();
    this.maxResultBytes = opts.maxResultBytes;
    this.filters = opts.filters ?? new FilterChain();
    const progress = (t: TransferProgress): void => {
      // payload bytes arriving are a sign of life too: a site busy uploading a large result is not silent
      const s = t.direction === 'receive' ? this.siteMap.get(t.peer) : undefined;
      if (s) s.lastSeen = Date.now();
      opts.channel?.onTransfer?.(t);
    };
    this.channelOpts = { ...opts.channel, onTransfer: transferLogger(this.log, progress) };
  }

  /** Sets the result limit of the tasks sent from now on (the job's maxResultBytes, known once its config is read). */
  limitResults(maxBytes: number | undefined): void {
    this.maxResultBytes = maxBytes;
  }

  /** Sets the job's filters (known once its config is read). */
  useFilters(filters: FilterChain): void {
    this.filters = filters;
  }

  start(): void {
    const timeoutMs = this.opts.heartbeatTimeoutMs;
    if (timeoutMs !== undefined && this.sweeper === null) {
      this.sweeper = setInterval(() => this.sweep(timeoutMs), Math.max(50, Math.min(1000, timeoutMs / 10)));
      this.sweeper.unref();
    }
    this.accepting ??= (async () => {
      for await (const link of this.transport.accept()) void this.serve(link);
    })();
  }

  sites(): string[] {
    return [...this.siteMap.keys()].sort();
  }

  async waitForSites(min: number, timeoutMs: number): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.siteMap.size < min) {
      const left = deadline - Date.now();
      if (left <= 0)
        throw new ControllerError(
          `only ${this.siteMap.size} of the ${min} required sites connected within ${timeoutMs} ms (${this.sites().join(', ') || 'none'})`,
        );
      await new Promise<void>((resolve) => {
        const t = setLongTimeout(done, left);
        const w = (): void => done();
        function done(): void {
          t.clear();
          resolve();
        }
        this.siteWaiters.add(w);
      });
    }
    return this.sites();
  }

  /** Tells every client the job is over and closes their links. */
  async end(reason: string): Promise<void> {
    this.ended = true;
    await Promise.all(
      [...this.siteMap.values()].map(async (s) => {
        await s.channel.send({ type: 'end', reason }).catch(() => undefined);
      }),
    );
  }

  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
    for (const s of this.siteMap.values()) s.channel.close('server closing');
    await this.transport.close();
  }

  sendTo(site: string, task: TaskRequest, timeoutMs?: number): Promise<TaskResult> {
    return this.dispatch(site, task, timeoutMs).result;
  }

  /**
   * Tells a site to stop a task whose result is no longer wanted and fails the task here with the
   * reason (a result that still comes is dropped as one for an unknown task).
   */
  cancel(site: string, taskId: string, reason: string): void {
    const s = this.siteMap.get(site);
    const resolve = s?.pending.get(taskId);
    if (!s || !resolve) return;
    resolve({ ok: false, site, taskId, error: reason });
    void s.channel.send({ type: 'cancel', taskId, reason: reason.slice(0, 65536) }).catch(() => undefined);
  }

  private dispatch(site: string, task: TaskRequest, timeoutMs?: number): { taskId: string; result: Promise<TaskResult> } {
    const s = this.siteMap.get(site);
    const taskId = randomUUID();
    if (!s) return { taskId, result: Promise.resolve({ ok: false, site, taskId, error: `site ${site} is not connected` }) };
    const result = new Promise<TaskResult>((resolve) => {
      let timer: LongTimer | undefined;
      const finish = (r: TaskResult): void => {
        timer?.clear();
        s.pending.delete(taskId);
        s.resultLimits.delete(taskId);
        s.taskNames.delete(taskId);
        resolve(r);
      };
      s.pending.set(taskId, finish);
      s.resultLimits.set(taskId, this.resultLimit(task));
      s.taskNames.set(taskId, task.name);
      if (timeoutMs !== undefined) {
        timer = setLongTimeout(() => this.cancel(site, taskId, `task ${task.name} timed out after ${timeoutMs} ms`), timeoutMs);
      }
      const f =
        task.params &&
        this.filters.try('send', { info: task.info, params: task.params.open() }, { site, taskName: task.name, direction: 'task' });
      if (f && !f.ok) return finish({ ok: false, site, taskId, error: `task ${task.name} for ${site}: ${f.reason}` });
      const out = f && f.value;
      const msg = { type: 'task', taskId, taskName: task.name, info: out?.info ?? task.info, hasParams: task.params !== null };
      s.channel
        .send(msg, out ? encodeStream(out.params) : undefined, out ? { totalBytes: encodedBytes(out.params.header) } : {})
        .catch((e: Error) => finish({ ok: false, site, taskId, error: `sending task to ${site} failed: ${e.message}` }));
    });
    return { taskId, result };
  }

  /** How many bytes a task's result may have: refused from its header, and never read past. */
  private resultLimit(task: TaskRequest): number {
    if (this.maxResultBytes !== undefined) return this.maxResultBytes;
    // an encrypting filter (he) makes a result many times the plain model it was sent
    return task.params ? 2 * this.filters.resultGrowth * encodedBytes(task.params.header) + RESULT_SLACK_BYTES : DEFAULT_RESULT_LIMIT_BYTES;
  }

  relay(task: RelayTask, opts: RelayOptions): AsyncGenerator<RelayHop, TensorDict, undefined> {
    return relayOver((site, t, timeoutMs) => this.sendTo(site, t, timeoutMs), task, opts);
  }

  broadcast(task: TaskRequest, opts: BroadcastOptions = {}): AsyncIterable<TaskResult> {
    const targets = [...(opts.targets ?? this.sites())];
    return gatherResults(
      task,
      targets,
      opts,
      (site) => ({ site, ...this.dispatch(site, task, opts.timeoutMs) }),
      (site, taskId, reason) => this.cancel(site, taskId, reason),
    );
  }

  private async serve(link: Link): Promise<void> {
    const id = link.resumeId ?? null;
    const live = id === null ? undefined : this.resumable.get(id);
    if (live) {
      // the same client's channel over a new connection: transfers continue from the last acknowledged byte
      if (live.peer !== link.peer || live.isClosed) link.close(`channel ${id} does not belong to ${link.peer}`);
      else {
        live.attach(link);
        this.log.info({ site: link.peer }, 'job connection resumed');
      }
      return;
    }
    const onMalformed = (e: MalformedMessageError): void =>
      this.log.warn({ site: e.peer, err: e.detail }, 'malformed message from client ignored');
    const channel = new Channel(link, {
      onMalformed,
      ...(id === null ? this.channelOpts : { ...this.channelOpts, resume: this.channelOpts.resume ?? true }),
    });
    if (id !== null) this.resumable.set(id, channel);
    let site: string | null = null;
    try {
      for await (const env of channel.messages()) {
        if (site === null) {
          site = await this.register(channel, env);
          if (site === null) return;
          continue;
        }
        const state = this.siteMap.get(site);
        if (state?.channel !== channel) {
          // this connection was dropped from the job (silent too long, or replaced by the site's new one)
          env.payload?.cancel('site no longer in the job');
          continue;
        }
        state.lastSeen = Date.now();
        await this.onMessage(site, env);
      }
    } catch (e) {
      this.log.warn({ peer: link.peer, err: (e as Error).message }, 'client link failed');
    } finally {
      if (id !== null) this.resumable.delete(id);
      // why the connection ended (a protocol violation, a frame that did not parse) goes to the log, not into the task errors
      if (site !== null) this.dropSite(site, `site ${site} disconnected`, channel, channel.closeReason);
    }
  }

  private async register(channel: Channel, env: Envelope): Promise<string | null> {
    const parsed = ClientMessageSchema.safeParse(env.msg);
    let reason: string | null = null;
    if (!parsed.success) reason = `malformed message: ${describeZodError(parsed.error)}`;
    else if (parsed.data.type !== 'register') reason = `expected register, got ${parsed.data.type}`;
    else if (parsed.data.protocol !== RUNTIME_PROTOCOL)
      reason = `client speaks protocol ${parsed.data.protocol}, server speaks ${RUNTIME_PROTOCOL}`;
    else if (parsed.data.site !== channel.peer)
      reason = `site name ${parsed.data.site} does not match the authenticated peer ${channel.peer}`;
    if (reason !== null || !parsed.success || parsed.data.type !== 'register') {
      env.payload?.cancel('not registered');
      this.log.warn({ peer: channel.peer, reason }, 'registration refused');
      await channel.send({ type: 'rejected', reason: reason ?? 'refused' }).catch(() => undefined);
      channel.close(reason ?? 'refused');
      return null;
    }
    const site = parsed.data.site;
    const old = this.siteMap.get(site);
    if (old) {
      // the authenticated site again (restarted, or its old connection is beyond resuming): the new one replaces it
      this.dropSite(site, `site ${site} reconnected: its tasks on the old connection are lost`, old.channel);
      old.channel.close('replaced by a new connection of the same site');
    }
    this.siteMap.set(site, { channel, pending: new Map(), resultLimits: new Map(), taskNames: new Map(), lastSeen: Date.now() });
    const hb = this.opts.heartbeatTimeoutMs;
    await channel.send({ type: 'registered', site, jobId: this.jobId, ...(hb !== undefined && { heartbeatSeconds: hb / 4000 }) });
    this.log.info({ site }, 'site registered');
    for (const w of this.siteWaiters) w();
    this.siteWaiters.clear();
    return site;
  }

  private async onMessage(site: string, env: Envelope): Promise<void> {
    const parsed = ClientMessageSchema.safeParse(env.msg);
    if (!parsed.success) {
      const why = `malformed message: ${describeZodError(parsed.error)}`;
      env.payload?.cancel(why);
      this.log.warn({ site, err: why }, 'malformed message from client ignored');
      // a malformed result still answers its task, with the reason, instead of leaving it to time out
      const raw = env.msg as { type?: unknown; taskId?: unknown } | null;
      if (raw && typeof raw === 'object' && raw.type === 'result' && typeof raw.taskId === 'string')
        this.siteMap.get(site)?.pending.get(raw.taskId)?.({ ok: false, site, taskId: raw.taskId, error: `result from ${site}: ${why}` });
      return;
    }
    const m = parsed.data;
    const state = this.siteMap.get(site);
    if (!state) return;
    switch (m.type) {
      case 'heartbeat':
      case 'register':
        return;
      case 'metric':
      case 'text':
      case 'params':
        this.opts.onMetric?.(metricEvent(site, m));
        return;
      case 'result': {
        const resolve = state.pending.get(m.taskId);
        if (!resolve) {
          env.payload?.cancel('unknown or expired task');
          this.log.warn({ site, taskId: m.taskId }, 'result for an unknown or expired task ignored');
          return;
        }
        const r = await readResult(site, m, env.payload, state.resultLimits.get(m.taskId) ?? DEFAULT_RESULT_LIMIT_BYTES, this.log);
        resolve(r.ok && r.params ? this.filterResult(r, r.params, state.taskNames.get(m.taskId) ?? '') : r);
        return;
      }
    }
  }

  /** A result through the job's receiving filters; a filter that fails fails this result only. */
  private filterResult(r: TaskResult & { ok: true }, params: TensorStream, taskName: string): TaskResult {
    const f = this.filters.try('receive', { info: r.info, params }, { site: r.site, taskName, direction: 'result' });
    if (f.ok) return { ...r, ...f.value };
    r.discard();
    return { ok: false, site: r.site, taskId: r.taskId, error: `result from ${r.site}: ${f.reason}` };
  }

  /** Drops every site silent for longer than the heartbeat timeout (also one whose link is down and resuming). */
  private sweep(timeoutMs: number): void {
    const now = Date.now();
    for (const [site, s] of this.siteMap) {
      const silent = now - s.lastSeen;
      if (silent <= timeoutMs) continue;
      this.dropSite(
        site,
        `site ${site} sent no heartbeat for ${(silent / 1000).toFixed(1)} s (timeout ${timeoutMs / 1000} s): dropped from the job`,
        s.channel,
      );
      s.channel.close('heartbeat timeout');
    }
  }

  /** Removes a site (only while `channel` is still its connection) and fails its pending tasks with the reason. */
  private dropSite(site: string, reason: string, channel: Channel, cause: string | null = null): void {
    const s = this.siteMap.get(site);
    if (s?.channel !== channel) return;
    this.siteMap.delete(site);
    // a site leaving a job that is over, with nothing pending, is the normal end, not a dropout
    if (this.ended && s.pending.size === 0) this.log.info({ site }, 'site left the ended job');
    else this.log.warn({ site, reason, ...(cause !== null && { cause }) }, 'site dropped from the job');
    for (const [taskId, resolve] of s.pending) resolve({ ok: false, site, taskId, error: reason });
  }
}

function metricEvent(site: string, m: Extract<ClientMessage, { type: 'metric' | 'text' | 'params' }>): MetricEvent {
  if (m.type === 'params') return { kind: 'params', site, params: m.params };
  const where = { ...(m.step !== undefined && { step: m.step }), ...(m.round !== undefined && { round: m.round }) };
  return m.type === 'text' ? { kind: 'text', site, key: m.key, text: m.text, ...where } : { site, key: m.key, value: m.value, ...where };
}
