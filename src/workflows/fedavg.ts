/**
 * Federated averaging (McMahan et al. 2017), as NVFlare's FedAvg: each round
 * the global model goes to the sites, each result is folded into one running
 * weighted sum as it arrives (weight = meta.NUM_STEPS_CURRENT_ROUND or
 * meta.numSamples), and the mean becomes the next global model, saved to the
 * workspace.
 */
import { type FLModelInfo, updateWeight } from '../core/fl-model.ts';
import { dictSource } from '../core/model-source.ts';
import type { TensorDict } from '../core/tensor.ts';
import { WeightedAverage } from '../aggregators/weighted-average.ts';
import { TaskNames } from '../client/api.ts';
import { type RoundSummary, type Workflow, type WorkflowContext, meanMetrics } from './workflow.ts';

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
}

export interface FedAvgResult {
  model: TensorDict;
  rounds: RoundSummary[];
}

export class FedAvg implements Workflow {
  readonly name = 'fedavg';
  model: TensorDict;

  constructor(private readonly opts: FedAvgOptions) {
    if (!Number.isInteger(opts.rounds) || opts.rounds < 1) throw new Error(`rounds must be an integer ≥ 1, got ${opts.rounds}`);
    if (!Number.isInteger(opts.minClients) || opts.minClients < 1) throw new Error(`minClients must be an integer ≥ 1, got ${opts.minClients}`);
    this.model = opts.initialModel;
  }

  async run(ctx: WorkflowContext): Promise<FedAvgResult> {
    const { controller, workspace, log } = ctx;
    const rounds: RoundSummary[] = [];
    const first = this.opts.startRound ?? 0;
    for (let round = first; round < this.opts.rounds; round++) {
      ctx.signal?.throwIfAborted();
      const started = Date.now();
      const sites = await controller.waitForSites(this.opts.minClients, this.opts.siteWaitMs ?? 60_000);
      const info: FLModelInfo = { paramsType: 'FULL', metrics: {}, meta: {}, currentRound: round, totalRounds: this.opts.rounds };
      const agg = new WeightedAverage(this.model);
      const siteMetrics: Record<string, Record<string, number>> = {};
      const weights: Record<string, number> = {};
      const failures: Record<string, string> = {};
      const used: string[] = [];
      const results = controller.broadcast(
        { name: this.opts.taskName ?? TaskNames.train, info, params: dictSource(this.model) },
        {
          targets: sites,
          minResponses: this.opts.minClients,
          ...(this.opts.roundTimeoutMs !== undefined && { timeoutMs: this.opts.roundTimeoutMs }),
          ...(this.opts.waitAfterMinMs !== undefined && { waitAfterMinMs: this.opts.waitAfterMinMs }),
        },
      );
      let done = 0;
      try {
        for await (const r of results) {
          done++;
          ctx.onProgress?.({ round, done, expected: sites.length });
          if (!r.ok) {
            failures[r.site] = r.error;
            log.warn({ round, site: r.site, error: r.error }, 'site failed this round');
            continue;
          }
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
        }
      } catch (e) {
        throw new Error(`round ${round}: ${(e as Error).message}; failures: ${JSON.stringify(failures)}`);
      }
      if (agg.count < this.opts.minClients) {
        throw new Error(`round ${round}: only ${agg.count} usable results, ${this.opts.minClients} required; failures: ${JSON.stringify(failures)}`);
      }
      this.model = agg.result();
      await workspace.saveGlobalModel(round, this.model, { workflow: this.name });
      const summary: RoundSummary = {
        round,
        totalRounds: this.opts.rounds,
        sites: used.sort(),
        siteMetrics,
        metrics: meanMetrics(siteMetrics, weights),
        failures,
        seconds: (Date.now() - started) / 1000,
      };
      workspace.appendMetrics({ type: 'round', ...summary });
      log.info({ round, sites: summary.sites, metrics: summary.metrics, seconds: summary.seconds }, 'round done');
      rounds.push(summary);
      ctx.onRound?.(summary);
    }
    return { model: this.model, rounds };
  }
}
