/**
 * Swarm learning (as NVFlare's swarm, client-controlled aggregation): each round one site is the
 * aggregator. Every connected site trains on the round's global model; each result is streamed
 * to the aggregator, which folds it into a running weighted sum (src/runtime/swarm-site.ts:
 * WeightedAverage, or OffloadedAverage on its disk) and hands back the mean: the next global model.
 *
 * The server does not aggregate. It manages the job: it picks each round's aggregator (in turn by
 * name, or seeded at random), relays the site-to-site traffic over its data plane (the sites only
 * have connections to the server, as in NVFlare, whose cellnet relays through the server too) by
 * piping each trainer's result stream into the aggregator's task as the bytes arrive (never a
 * whole model in its memory), and persists each round's global model in its workspace
 * (server/round-<r>/global_model.safetensors, with the aggregator named in its metadata). Why the
 * server's workspace: it outlives every site, so a round whose aggregator dies is redone from the
 * last persisted model at once, and the job's record (summary, resume, `admin download`) is where
 * it is for every other workflow; the model passes the server on its way anyway.
 *
 * Failures: a trainer that fails, disconnects or passes taskTimeoutMs is skipped for the round (the
 * round needs minClients results). An aggregator that disconnects, fails a step or passes
 * aggregatorTimeoutMs is replaced (the next site in the selection order) and the round is redone
 * from the last persisted model, at most maxAttempts times.
 *
 * Resume: a swarm job after a server restart continues with `startRound` r from the model persisted
 * after round r - 1 (the server's checkpoint, not a site's memory: any site may have gone); round r's
 * aggregator is the one an uninterrupted job would have chosen (the choice depends on the round only).
 */
import { copyFile, rename } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { type FLModelInfo, updateWeight } from '../core/fl-model.ts';
import { ModelRef } from '../core/model-ref.ts';
import { type ModelSource, fileSource } from '../core/model-source.ts';
import { writeStreamToFile } from '../core/safetensors.ts';
import type { StreamHeader, TensorStream } from '../core/tensor-stream.ts';
import type { TensorDict } from '../core/tensor.ts';
import { TaskNames } from '../client/api.ts';
import type { Controller } from '../runtime/controller.ts';
import { SwarmMeta, SwarmTasks } from '../runtime/swarm-site.ts';
import { recordRound, validateRounds } from './round.ts';
import { type RoundSummary, type Workflow, type WorkflowContext, meanMetrics } from './workflow.ts';

export type AggregatorSelection = 'round_robin' | 'random';

export interface SwarmOptions {
  rounds: number;
  minClients: number;
  /** the model to start from: the initial one, or (resumed at startRound) the global model after round startRound - 1 */
  initialModel: ModelRef;
  /**
   * first round to run (resumed after a server restart, as FedAvg's startRound): the rounds before
   * it are done and their checkpoints are in the workspace; the aggregators go on in the same order
   */
  startRound?: number;
  /** the initial model's safetensors metadata, kept in every global model saved */
  metadata?: Readonly<Record<string, string>>;
  select?: AggregatorSelection;
  seed?: number;
  /** a trainer's limit per round; past it the trainer is skipped */
  taskTimeoutMs?: number;
  /** each aggregator step's limit (open, a contribution after its result arrived, finish) */
  aggregatorTimeoutMs?: number;
  /** how many times a round may be tried with a new aggregator (default 3) */
  maxAttempts?: number;
  /** the aggregator keeps the model and its running sum on disk */
  offload?: boolean;
  siteWaitMs?: number;
}

/**
 * The aggregator of `round` among `candidates`: round-robin over the sorted names, or the first of
 * them ranked by sha256(seed:round:site) (as client sampling ranks). Without the failed aggregators
 * in `candidates`, each pick is the next one in the same order.
 */
export function chooseAggregator(candidates: readonly string[], round: number, select: AggregatorSelection, seed = 0): string {
  const sites = [...new Set(candidates)].sort();
  if (sites.length === 0) throw new Error('no site to aggregate');
  if (select === 'round_robin') return sites[round % sites.length]!;
  const rank = (s: string): string => createHash('sha256').update(`${seed}:${round}:${s}`).digest('hex');
  return sites.map((s) => [rank(s), s] as const).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))[0]![1];
}

/** The aggregator of an attempt failed: the round is redone with another. */
export class AggregatorFailedError extends Error {
  override readonly name = 'AggregatorFailedError';
  constructor(
    readonly site: string,
    message: string,
  ) {
    super(message);
  }
}

/** A stream as a ModelSource opened once (a trainer's result piped on to the aggregator). */
function passOn(stream: TensorStream): ModelSource {
  let opened = false;
  return {
    header: stream.header,
    open() {
      if (opened) throw new Error('a relayed result can be sent once');
      opened = true;
      return stream;
    },
  };
}

function sameTensors(a: StreamHeader, b: StreamHeader): string | null {
  const want = new Map(a.tensors.map((t) => [t.name, t]));
  if (b.tensors.length !== a.tensors.length) return `${b.tensors.length} tensors, the model has ${a.tensors.length}`;
  for (const t of b.tensors) {
    const w = want.get(t.name);
    if (!w) return `tensor "${t.name}" the model does not have`;
    if (w.dtype !== t.dtype || w.shape.join(',') !== t.shape.join(',')) return `tensor "${t.name}" is ${t.dtype}[${t.shape.join(', ')}]`;
  }
  return null;
}

type Attempt = Omit<RoundSummary, 'seconds'>;

export class Swarm implements Workflow {
  readonly name = 'swarm';
  private initial: ModelRef | null;
  private readonly opts: Omit<SwarmOptions, 'initialModel'>;

  constructor(opts: SwarmOptions) {
    validateRounds(opts);
    const { initialModel, ...rest } = opts;
    this.opts = rest;
    this.initial = initialModel;
  }

  /** The rounds; the final model in memory. */
  async run(ctx: WorkflowContext): Promise<{ model: TensorDict; rounds: RoundSummary[] }> {
    const r = await this.runRef(ctx);
    return { model: await r.model.take(), rounds: r.rounds };
  }

  /** The rounds; the final model as the file of its last round. */
  async runRef(ctx: WorkflowContext): Promise<{ model: ModelRef; rounds: RoundSummary[] }> {
    const o = this.opts;
    const init = this.initial;
    if (!init) throw new Error('swarm ran already: a workflow runs once');
    this.initial = null;
    // the server never holds the model in memory: it is a file from which every task streams
    const first = await init.persist(join(ctx.workspace.serverDir, 'swarm', 'initial_model.safetensors'), { ...o.metadata });
    if (!init.onDisk) await init.take();
    let path = first.path!;
    const rounds: RoundSummary[] = [];
    const maxAttempts = o.maxAttempts ?? 3;
    const start = o.startRound ?? 0;
    if (!Number.isInteger(start) || start < 0 || start > o.rounds)
      throw new Error(`swarm: startRound must be an integer in 0..${o.rounds} (rounds), got ${start}`);
    for (let round = start; round < o.rounds; round++) {
      const started = Date.now();
      const failed: string[] = [];
      const failures: Record<string, string> = {};
      let summary: Attempt | null = null;
      for (let attempt = 0; summary === null; attempt++) {
        ctx.signal?.throwIfAborted();
        const connected = await ctx.controller.waitForSites(o.minClients, o.siteWaitMs ?? 60_000);
        const candidates = connected.filter((s) => !failed.includes(s));
        if (candidates.length === 0) throw new Error(`swarm round ${round}: no site left to aggregate (failed: ${failed.join(', ')})`);
        const aggregator = chooseAggregator(candidates, round, o.select ?? 'round_robin', o.seed ?? 0);
        ctx.log.info({ round, attempt, aggregator }, 'swarm round: aggregator chosen');
        try {
          summary = await this.attempt(ctx, round, attempt, aggregator, connected, path);
        } catch (e) {
          if (!(e instanceof AggregatorFailedError)) throw e;
          failed.push(e.site);
          failures[e.site] = `aggregator of attempt ${attempt + 1} failed: ${e.message}`;
          ctx.log.warn({ round, attempt, aggregator: e.site, error: e.message }, 'swarm aggregator failed: the round is redone');
          if (attempt + 1 >= maxAttempts)
            throw new Error(`swarm round ${round}: ${maxAttempts} aggregators failed: ${JSON.stringify(failures)}`, { cause: e });
        }
      }
      path = ctx.workspace.roundModelPath(round);
      // the latest model under its fixed name, replaced atomically
      await copyFile(path, `${ctx.workspace.globalModelPath}.tmp`);
      await rename(`${ctx.workspace.globalModelPath}.tmp`, ctx.workspace.globalModelPath);
      const full: RoundSummary = { ...summary, failures: { ...failures, ...summary.failures }, seconds: (Date.now() - started) / 1000 };
      await recordRound(ctx, full);
      rounds.push(full);
    }
    return { model: await ModelRef.file(path), rounds };
  }

  /** One try of a round with `aggregator`; throws AggregatorFailedError when the aggregator lets it down. */
  private async attempt(
    ctx: WorkflowContext,
    round: number,
    attempt: number,
    aggregator: string,
    trainers: string[],
    globalPath: string,
  ): Promise<Attempt> {
    const o = this.opts;
    const c: Controller = ctx.controller;
    const alive = (): boolean => c.sites().includes(aggregator);
    const id = `${round}.${attempt}`;
    const global = await fileSource(globalPath);
    const base: FLModelInfo = { paramsType: 'FULL', metrics: {}, meta: {}, currentRound: round, totalRounds: o.rounds };
    const aggTimeout = o.aggregatorTimeoutMs;

    const opened = await c.sendTo(
      aggregator,
      { name: SwarmTasks.open, info: { ...base, meta: { [SwarmMeta.id]: id, [SwarmMeta.offload]: o.offload ?? false } }, params: global },
      aggTimeout,
    );
    if (!opened.ok) throw new AggregatorFailedError(aggregator, `swarm.open: ${opened.error}`);

    const failures: Record<string, string> = {};
    const siteMetrics: Record<string, Record<string, number>> = {};
    const weights: Record<string, number> = {};
    const used: string[] = [];
    let aggFailure: string | null = null;
    const contributions: Promise<void>[] = [];
    const results = c.broadcast(
      { name: TaskNames.train, info: base, params: global },
      { targets: trainers, minResponses: 0, ...(o.taskTimeoutMs !== undefined && { timeoutMs: o.taskTimeoutMs }) },
    );
    let done = 0;
    for await (const r of results) {
      ctx.onProgress?.({ round, done: ++done, expected: trainers.length });
      if (!r.ok) {
        failures[r.site] = r.error;
        if (r.site === aggregator && !alive()) aggFailure ??= `it left while training: ${r.error}`;
        ctx.log.warn({ round, site: r.site, error: r.error }, 'site failed this round');
        continue;
      }
      if (aggFailure !== null || !r.params) {
        // the round is lost already (its results are dropped, so their senders stop) or the result is empty
        r.discard();
        if (!r.params) failures[r.site] = 'result carries no params';
        continue;
      }
      let weight: number;
      try {
        weight = updateWeight(r.info);
      } catch (e) {
        r.discard();
        failures[r.site] = (e as Error).message;
        continue;
      }
      const params = r.params;
      const relay = async (): Promise<void> => {
        const sent = Date.now();
        const meta = { ...r.info.meta, [SwarmMeta.id]: id, [SwarmMeta.from]: r.site };
        const k = await c.sendTo(
          aggregator,
          { name: SwarmTasks.contribute, info: { ...r.info, meta }, params: passOn(params) },
          aggTimeout,
        );
        if (k.ok) {
          used.push(r.site);
          siteMetrics[r.site] = r.info.metrics;
          weights[r.site] = weight;
          return;
        }
        r.discard();
        const timedOut = aggTimeout !== undefined && Date.now() - sent >= aggTimeout;
        // the aggregator gone, stuck, or without this aggregation (restarted): its fault, not the trainer's
        if (!alive() || timedOut || k.error.startsWith(`${SwarmTasks.contribute} for aggregation`))
          aggFailure ??= `the contribution of ${r.site}: ${k.error}`;
        else failures[r.site] = `refused by the aggregator ${aggregator}: ${k.error}`;
      };
      contributions.push(relay());
    }
    await Promise.all(contributions);
    if (aggFailure !== null) throw new AggregatorFailedError(aggregator, aggFailure);
    if (used.length < o.minClients)
      throw new Error(
        `swarm round ${round}: only ${used.length} usable results, ${o.minClients} required; failures: ${JSON.stringify(failures)}`,
      );

    const fin = await c.sendTo(
      aggregator,
      { name: SwarmTasks.finish, info: { ...base, meta: { [SwarmMeta.id]: id } }, params: null },
      aggTimeout,
    );
    if (!fin.ok) throw new AggregatorFailedError(aggregator, `swarm.finish: ${fin.error}`);
    if (!fin.params) throw new AggregatorFailedError(aggregator, 'swarm.finish returned no model');
    const wrong = sameTensors(global.header, fin.params.header);
    if (wrong !== null) {
      fin.discard();
      throw new AggregatorFailedError(aggregator, `swarm.finish returned a model that does not fit: ${wrong}`);
    }
    const metadata = { ...o.metadata, round: String(round), workflow: this.name, swarm_aggregator: aggregator };
    const mean: TensorStream = { header: { tensors: fin.params.header.tensors, metadata }, pieces: () => fin.params!.pieces() };
    try {
      await writeStreamToFile(ctx.workspace.roundModelPath(round), mean);
    } catch (e) {
      fin.discard();
      if (!alive()) throw new AggregatorFailedError(aggregator, `it left while sending the model: ${(e as Error).message}`);
      throw new AggregatorFailedError(aggregator, `its model could not be received: ${(e as Error).message}`);
    }
    return {
      round,
      totalRounds: o.rounds,
      sites: used.sort(),
      siteMetrics,
      metrics: meanMetrics(siteMetrics, weights),
      failures,
      aggregator,
      attempts: attempt + 1,
    };
  }
}
