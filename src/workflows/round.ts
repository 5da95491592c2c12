/**
 * One round of the FedAvg family: the global model goes to the sites, each result is folded
 * into the round's aggregator as it arrives (weight = meta.NUM_STEPS_CURRENT_ROUND or
 * meta.numSamples). The round loop around it is StrategyWorkflow's (strategy.ts).
 */
import { type FLModelInfo, type JsonValue, type ParamsType, updateWeight } from '../core/fl-model.ts';
import type { ModelSource } from '../core/model-source.ts';
import type { TensorStream } from '../core/tensor-stream.ts';
import type { TensorDict } from '../core/tensor.ts';
import { TaskNames } from '../client/api.ts';
import { type RoundSummary, type WorkflowContext, meanMetrics } from './workflow.ts';

export interface FedAvgOptions {
  rounds: number;
  minClients: number;
  initialModel: TensorDict;
  /** first round number (resume) */
  startRound?: number;
  /** per-round limit for results (default: none) */
  roundTimeoutMs?: number;
  /** after minClients results, how long to wait for the others (default: wait for all) */
  waitAfterMinMs?: number;
  /** how long to wait for minClients sites to connect */
  siteWaitMs?: number;
  taskName?: string;
  /** the initial model's safetensors metadata, kept in every global model saved */
  metadata?: Readonly<Record<string, string>>;
}

export interface FedAvgResult {
  model: TensorDict;
  rounds: RoundSummary[];
}

/** What one round needs of an aggregator: the in-memory and the on-disk one both fit. `add` may be called concurrently. */
export interface RoundAggregator {
  add(stream: TensorStream, weight: number, paramsType: ParamsType): Promise<void>;
  readonly count: number;
}

type RoundOptions = Pick<FedAvgOptions, 'rounds' | 'minClients' | 'roundTimeoutMs' | 'waitAfterMinMs' | 'siteWaitMs' | 'taskName'> & {
  /** the sites of this round out of the connected ones (client sampling); default: all */
  select?: (connected: string[], round: number) => string[];
  /** extra task meta (e.g. FedProx's mu) */
  meta?: Record<string, JsonValue>;
};

/**
 * One FedAvg round: broadcast the global model, fold each result into `agg`
 * as it arrives, and return the round's summary (without timing).
 */
export async function fedAvgRound(
  ctx: WorkflowContext,
  o: RoundOptions,
  round: number,
  global: ModelSource,
  agg: RoundAggregator,
): Promise<Omit<RoundSummary, 'seconds'>> {
  const { controller, log } = ctx;
  const connected = await controller.waitForSites(o.minClients, o.siteWaitMs ?? 60_000);
  const sites = o.select ? o.select(connected, round) : connected;
  const info: FLModelInfo = { paramsType: 'FULL', metrics: {}, meta: { ...o.meta }, currentRound: round, totalRounds: o.rounds };
  const siteMetrics: Record<string, Record<string, number>> = {};
  const weights: Record<string, number> = {};
  const failures: Record<string, string> = {};
  const used: string[] = [];
  const results = controller.broadcast(
    { name: o.taskName ?? TaskNames.train, info, params: global },
    {
      targets: sites,
      minResponses: Math.min(o.minClients, sites.length),
      ...(o.roundTimeoutMs !== undefined && { timeoutMs: o.roundTimeoutMs }),
      ...(o.waitAfterMinMs !== undefined && { waitAfterMinMs: o.waitAfterMinMs }),
    },
  );
  let done = 0;
  // the round has started: a terminal shows its progress from now, not from the first result
  ctx.onProgress?.({ round, done, expected: sites.length });
  // Results are folded concurrently as they arrive (WeightedAverage chunk by chunk, OffloadedAverage
  // taking turns per tensor): a result left unread while others are folded whole would stall its sender.
  const folding: { discard(): void; done: Promise<void> }[] = [];
  try {
    for await (const r of results) {
      done++;
      ctx.onProgress?.({ round, done, expected: sites.length });
      if (!r.ok) {
        failures[r.site] = r.error;
        log.warn({ round, site: r.site, error: r.error }, 'site failed this round');
        continue;
      }
      const fold = async (): Promise<void> => {
        try {
          if (!r.params) throw new Error('result carries no params');
          const w = updateWeight(r.info);
          await agg.add(r.params, w, r.info.paramsType);
          siteMetrics[r.site] = r.info.metrics;
          weights[r.site] = w;
          used.push(r.site);
        } catch (e) {
          r.discard();
          failures[r.site] = (e as Error).message;
          log.warn({ round, site: r.site, error: (e as Error).message }, 'result rejected');
        }
      };
      folding.push({ discard: () => r.discard(), done: fold() });
    }
  } catch (e) {
    for (const f of folding) f.discard();
    await Promise.allSettled(folding.map((f) => f.done));
    throw new Error(`round ${round}: ${(e as Error).message}; failures: ${JSON.stringify(failures)}`);
  }
  await Promise.all(folding.map((f) => f.done));
  if (agg.count < o.minClients) {
    throw new Error(`round ${round}: only ${agg.count} usable results, ${o.minClients} required; failures: ${JSON.stringify(failures)}`);
  }
  return { round, totalRounds: o.rounds, sites: used.sort(), siteMetrics, metrics: meanMetrics(siteMetrics, weights), failures };
}

/**
 * Records a finished round (its checkpoint already written): metrics file, callback (which persists
 * the job's progress), then the log line, so "round done" is said only of a round that is durable.
 */
export async function recordRound(ctx: WorkflowContext, summary: RoundSummary): Promise<void> {
  ctx.workspace.appendMetrics({ type: 'round', ...summary });
  await ctx.onRound?.(summary);
  ctx.log.info({ round: summary.round, sites: summary.sites, metrics: summary.metrics, seconds: summary.seconds }, 'round done');
}

export function validateRounds(o: Pick<FedAvgOptions, 'rounds' | 'minClients'>): void {
  if (!Number.isInteger(o.rounds) || o.rounds < 1) throw new Error(`rounds must be an integer ≥ 1, got ${o.rounds}`);
  if (!Number.isInteger(o.minClients) || o.minClients < 1) throw new Error(`minClients must be an integer ≥ 1, got ${o.minClients}`);
}
