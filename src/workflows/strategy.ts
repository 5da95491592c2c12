/**
 * The FedAvg family as one round loop with a pluggable server step, so each
 * algorithm (FedOpt, SCAFFOLD, robust aggregation) is a small strategy and the
 * options every broadcasting workflow shares live in one place: client sampling
 * (a seeded subset of the connected sites per round), FedProx's μ (sent to the
 * trainers in the task's `meta.fedprox_mu`, which the tfjs and PyTorch helpers
 * apply) and the aggregation rule (FedAvg's running mean, or a robust rule
 * with the results staged on disk).
 */
import { copyFile, rename } from 'node:fs/promises';
import { join, dirname } from 'node:path';
import type { JsonValue } from '../core/fl-model.ts';
import { ModelRef } from '../core/model-ref.ts';
import { dictSource, fileSource } from '../core/model-source.ts';
import type { TensorDict } from '../core/tensor.ts';
import { OffloadedAverage } from '../aggregators/offloaded-average.ts';
import { WeightedAverage } from '../aggregators/weighted-average.ts';
import { HeWeightedSum } from '../filters/he-stream.ts';
import { RobustAggregator, type RobustRuleInput, RobustRuleSchema } from '../algorithms/robust.ts';
import { type SamplingInput, SamplingSchema, sampleSites } from '../algorithms/sampling.ts';
import { dictReader } from '../algorithms/tensor-io.ts';
import { FEDPROX_MU } from '../algorithms/fedprox.ts';
import type { ServerWorkspace } from '../runtime/workspace.ts';
import { type FedAvgOptions, fedAvgRound, recordRound, validateRounds } from './round.ts';
import type { RoundSummary, Workflow, WorkflowContext } from './workflow.ts';

/** What the server step of a round is told. */
export interface RoundFacts {
  round: number;
  /** sites whose results were aggregated */
  used: number;
  /** sites connected when the round started (SCAFFOLD's N) */
  connected: number;
}

export interface ServerStrategy {
  readonly name: string;
  /** extra task meta each round (e.g. SCAFFOLD's marker) */
  readonly taskMeta?: Record<string, JsonValue>;
  /** the task's params: the global model plus whatever the algorithm sends along (default: the model) */
  taskParams?(global: TensorDict): TensorDict;
  /** the tensors results are aggregated into: the model's plus any extra ones results carry (default: the model) */
  resultTemplate?(global: TensorDict): TensorDict;
  /** the next global model from the current one and the round's aggregate (resultTemplate's tensors) */
  update(global: TensorDict, aggregate: TensorDict, facts: RoundFacts): Promise<TensorDict>;
  /** persists the strategy's state after round `round` into `dir` (that round's folder of the workspace) */
  save?(dir: string, round: number): Promise<void>;
  /** loads the state saved after round `round` (a job resumed at round + 1) */
  load?(dir: string, round: number, onDisk: boolean): Promise<void>;
  /**
   * The server step with the model on disk (`offload`): the next global model from the current
   * one's file and the round's on-disk sum, written to `io.out`. A strategy without it runs in memory only.
   */
  updateOnDisk?(io: DiskStep): Promise<void>;
}

/** What a server step on disk is given. */
export interface DiskStep {
  round: number;
  /** the global model's file */
  global: string;
  /** the round's running sum on disk */
  aggregate: OffloadedAverage;
  /** where the next global model goes (the round's checkpoint) */
  out: string;
  /** the round's checkpoint folder, for state of the strategy's own */
  dir: string;
  /** scratch space on the server */
  scratch: string;
  /** the model file's metadata */
  metadata: Record<string, string>;
}

export interface StrategyOptions extends Omit<FedAvgOptions, 'initialModel'> {
  /** the initial global model: tensors, a safetensors file (read, or streamed with offload) or a ModelRef */
  initialModel: TensorDict | string | ModelRef;
  /** keep the global model and the running sum on disk (OffloadedAverage), so memory does not grow with the model */
  offload?: boolean;
  /** a subset of the connected sites per round (default: all) */
  sampling?: SamplingInput;
  /** FedProx: the proximal coefficient the trainers apply (task meta `fedprox_mu`) */
  proxMu?: number;
  /** default `{ rule: 'mean' }`: FedAvg's weighted running mean */
  aggregation?: RobustRuleInput | { rule: 'mean' };
  /** he: the initial model is ciphertexts (a job resumed from an encrypted checkpoint) described by this metadata */
  encryptedModel?: Record<string, string>;
}

/** fedAvgRound's hooks for client sampling and FedProx's μ (shared by the in-memory and the offloaded loops). */
export function roundHooks(
  o: Pick<StrategyOptions, 'sampling' | 'proxMu' | 'minClients'>,
  extraMeta: Record<string, JsonValue> = {},
): { select: (sites: string[], round: number) => string[]; meta: Record<string, JsonValue>; connected: () => number } {
  const sampling = o.sampling ? SamplingSchema.parse(o.sampling) : null;
  let connected = 0;
  return {
    select: (sites, round) => {
      connected = sites.length;
      return sampling ? sampleSites(sites, sampling, round, o.minClients) : sites;
    },
    meta: { ...extraMeta, ...(o.proxMu ? { [FEDPROX_MU]: o.proxMu } : {}) },
    connected: () => connected,
  };
}

/** The folder of round `round`'s checkpoint files in the workspace. */
export function roundDir(ws: ServerWorkspace, round: number): string {
  return dirname(ws.roundModelPath(round));
}

export class StrategyWorkflow implements Workflow {
  private initial: TensorDict | string | ModelRef | null;
  private readonly opts: Omit<StrategyOptions, 'initialModel'>;

  constructor(
    opts: StrategyOptions,
    readonly strategy: ServerStrategy,
  ) {
    validateRounds(opts);
    if (opts.proxMu !== undefined && !(opts.proxMu >= 0 && Number.isFinite(opts.proxMu)))
      throw new Error(`proxMu must be a finite number ≥ 0, got ${opts.proxMu}`);
    if (opts.sampling) SamplingSchema.parse(opts.sampling);
    if (opts.aggregation && opts.aggregation.rule !== 'mean') {
      RobustRuleSchema.parse(opts.aggregation);
      if (opts.offload) throw new Error(`aggregation ${opts.aggregation.rule} keeps the global model in memory: it cannot run offloaded`);
    }
    if (opts.offload && !strategy.updateOnDisk) throw new Error(`${strategy.name} keeps its state in memory: it cannot run offloaded`);
    // the initial model lives on only until run() takes it: a reference left in opts would keep
    // a whole extra model alive for every later round
    const { initialModel, ...rest } = opts;
    this.opts = rest;
    this.initial = initialModel;
  }

  get name(): string {
    return this.strategy.name;
  }

  /** The rounds; the global model in memory, or on disk with `offload`. */
  async run(ctx: WorkflowContext): Promise<{ model: TensorDict; rounds: RoundSummary[] }> {
    const r = await this.runRef(ctx);
    return { model: await r.model.take(), rounds: r.rounds };
  }

  private async takeInitial(): Promise<ModelRef> {
    const init = this.initial;
    if (init === null) throw new Error(`${this.name} ran already: a workflow runs once`);
    this.initial = null;
    return init instanceof ModelRef ? init : typeof init === 'string' ? ModelRef.file(init) : ModelRef.memory(init);
  }

  /** The round loop: one for every FedAvg-family workflow, the model and the running sum in memory or on disk. */
  async runRef(ctx: WorkflowContext): Promise<{ model: ModelRef; rounds: RoundSummary[] }> {
    const o = this.opts;
    const offload = o.offload ?? false;
    if (ctx.he && (offload || this.strategy !== fedAvgStrategy || (o.aggregation && o.aggregation.rule !== 'mean')))
      throw new Error(
        `he: the server sums ciphertexts with FedAvg's mean in memory; ${this.name}${offload ? ' offloaded' : ''} cannot run on them`,
      );
    // he: the encrypted global model's description (src/filters/he-stream.ts), sent with every task after the first round
    let heMeta: Record<string, string> = ctx.he ? { ...o.encryptedModel } : {};
    const scratch = join(ctx.workspace.serverDir, 'offload');
    const ref = await this.takeInitial();
    // in memory: the tensors; on disk: the model's file (tensors are written to one first). The
    // ref is emptied either way, so this frame keeps no copy of the initial model alive
    let model: TensorDict | null = offload ? null : await ref.take();
    let path: string | null = null;
    if (offload) {
      path = (await ref.persist(join(scratch, 'initial_model.safetensors'), { ...o.metadata })).path!;
      if (!ref.onDisk) await ref.take();
    }
    const start = o.startRound ?? 0;
    if (start > 0) await this.strategy.load?.(roundDir(ctx.workspace, start - 1), start - 1, offload);
    const { select, meta, connected } = roundHooks(o, this.strategy.taskMeta);
    const rounds: RoundSummary[] = [];
    for (let round = start; round < o.rounds; round++) {
      ctx.signal?.throwIfAborted();
      const started = Date.now();
      let summary: Omit<RoundSummary, 'seconds'>;
      if (path !== null) {
        const agg = await OffloadedAverage.open(path, scratch);
        const out = ctx.workspace.roundModelPath(round);
        try {
          summary = await fedAvgRound(ctx, { ...o, select, meta }, round, await fileSource(path), agg);
          const metadata = { round: String(round), workflow: this.name };
          await this.strategy.updateOnDisk!({
            round,
            global: path,
            aggregate: agg,
            out,
            dir: roundDir(ctx.workspace, round),
            scratch,
            metadata,
          });
        } finally {
          await agg.close();
        }
        // the latest model under its fixed name, replaced atomically
        await copyFile(out, `${ctx.workspace.globalModelPath}.tmp`);
        await rename(`${ctx.workspace.globalModelPath}.tmp`, ctx.workspace.globalModelPath);
        path = out;
      } else {
        const global = model!;
        const template = this.strategy.resultTemplate?.(global) ?? global;
        const rule = o.aggregation ?? { rule: 'mean' };
        const task = dictSource(this.strategy.taskParams?.(global) ?? global, heMeta);
        let aggregate: TensorDict;
        if (ctx.he) {
          const agg = new HeWeightedSum(ctx.he);
          summary = await fedAvgRound(ctx, { ...o, select, meta }, round, task, agg);
          const r = agg.result();
          if (!r) throw new Error(`round ${round}: no result with a weight above 0`);
          aggregate = r.model;
          heMeta = r.metadata;
        } else if (rule.rule === 'mean') {
          // results are staged until they end (a failed one counts for nothing); past one model's worth, on this disk
          const agg = new WeightedAverage(template, { stageDir: join(ctx.workspace.serverDir, 'staging') });
          summary = await fedAvgRound(ctx, { ...o, select, meta }, round, task, agg);
          aggregate = agg.result();
        } else {
          const agg = await RobustAggregator.open(dictReader(template), join(ctx.workspace.serverDir, 'staging'), rule);
          try {
            summary = await fedAvgRound(ctx, { ...o, select, meta }, round, task, agg);
            aggregate = await agg.result();
          } finally {
            await agg.close();
          }
        }
        model = await this.strategy.update(global, aggregate, { round, used: summary.sites.length, connected: connected() });
        await ctx.workspace.saveGlobalModel(round, model, { ...o.metadata, workflow: this.name, ...heMeta });
      }
      await this.strategy.save?.(roundDir(ctx.workspace, round), round);
      const full = { ...summary, seconds: (Date.now() - started) / 1000 };
      await recordRound(ctx, full);
      rounds.push(full);
    }
    return { model: path !== null ? await ModelRef.file(path) : ModelRef.memory(model!), rounds };
  }
}

/** FedAvg itself as a strategy: the aggregate is the next model. */
export const fedAvgStrategy: ServerStrategy = {
  name: 'fedavg',
  update: async (_g, aggregate) => aggregate,
  updateOnDisk: async (io) => io.aggregate.writeResult(io.out, io.metadata),
};
