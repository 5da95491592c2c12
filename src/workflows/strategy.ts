/**
 * The FedAvg family as one round loop with a pluggable server step, so each
 * algorithm (FedOpt, SCAFFOLD, robust aggregation) is a small strategy and the
 * options every broadcasting workflow shares live in one place: client sampling
 * (a seeded subset of the connected sites per round), FedProx's μ (sent to the
 * trainers in the task's `meta.fedprox_mu`, which the tfjs and PyTorch helpers
 * apply) and the aggregation rule (FedAvg's running mean, or a robust rule
 * with the results staged on disk).
 */
import { join, dirname } from 'node:path';
import type { JsonValue } from '../core/fl-model.ts';
import { dictSource } from '../core/model-source.ts';
import type { TensorDict } from '../core/tensor.ts';
import { WeightedAverage } from '../aggregators/weighted-average.ts';
import { RobustAggregator, type RobustRuleInput, RobustRuleSchema } from '../algorithms/robust.ts';
import { type SamplingInput, SamplingSchema, sampleSites } from '../algorithms/sampling.ts';
import { dictReader } from '../algorithms/tensor-io.ts';
import { FEDPROX_MU } from '../algorithms/fedprox.ts';
import type { ServerWorkspace } from '../runtime/workspace.ts';
import { type FedAvgOptions, fedAvgRound, recordRound, validateRounds } from './fedavg.ts';
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
  load?(dir: string, round: number): Promise<void>;
}

export interface StrategyOptions extends FedAvgOptions {
  /** a subset of the connected sites per round (default: all) */
  sampling?: SamplingInput;
  /** FedProx: the proximal coefficient the trainers apply (task meta `fedprox_mu`) */
  proxMu?: number;
  /** default `{ rule: 'mean' }`: FedAvg's weighted running mean */
  aggregation?: RobustRuleInput | { rule: 'mean' };
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
  model: TensorDict;
  private readonly opts: Omit<StrategyOptions, 'initialModel'>;

  constructor(
    opts: StrategyOptions,
    readonly strategy: ServerStrategy,
  ) {
    validateRounds(opts);
    if (opts.proxMu !== undefined && !(opts.proxMu >= 0 && Number.isFinite(opts.proxMu)))
      throw new Error(`proxMu must be a finite number ≥ 0, got ${opts.proxMu}`);
    if (opts.sampling) SamplingSchema.parse(opts.sampling);
    if (opts.aggregation && opts.aggregation.rule !== 'mean') RobustRuleSchema.parse(opts.aggregation);
    const { initialModel, ...rest } = opts;
    this.opts = rest;
    this.model = initialModel;
  }

  get name(): string {
    return this.strategy.name;
  }

  async run(ctx: WorkflowContext): Promise<{ model: TensorDict; rounds: RoundSummary[] }> {
    const o = this.opts;
    const start = o.startRound ?? 0;
    if (start > 0) await this.strategy.load?.(roundDir(ctx.workspace, start - 1), start - 1);
    const { select, meta, connected } = roundHooks(o, this.strategy.taskMeta);
    const rounds: RoundSummary[] = [];
    for (let round = start; round < o.rounds; round++) {
      ctx.signal?.throwIfAborted();
      const started = Date.now();
      const template = this.strategy.resultTemplate?.(this.model) ?? this.model;
      const rule = o.aggregation ?? { rule: 'mean' };
      const task = dictSource(this.strategy.taskParams?.(this.model) ?? this.model);
      let aggregate: TensorDict;
      let summary: Omit<RoundSummary, 'seconds'>;
      if (rule.rule === 'mean') {
        const agg = new WeightedAverage(template);
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
      this.model = await this.strategy.update(this.model, aggregate, { round, used: summary.sites.length, connected: connected() });
      await ctx.workspace.saveGlobalModel(round, this.model, { ...this.opts.metadata, workflow: this.name });
      await this.strategy.save?.(roundDir(ctx.workspace, round), round);
      const full = { ...summary, seconds: (Date.now() - started) / 1000 };
      recordRound(ctx, full);
      rounds.push(full);
    }
    return { model: this.model, rounds };
  }
}

/** FedAvg itself as a strategy: the aggregate is the next model. */
export const fedAvgStrategy: ServerStrategy = { name: 'fedavg', update: async (_g, aggregate) => aggregate };
