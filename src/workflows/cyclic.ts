/**
 * Cyclic weight transfer: the model visits the sites one after another, each
 * training it further; one round = one pass over all sites.
 */
import type { FLModelInfo } from '../core/fl-model.ts';
import { dictSource } from '../core/model-source.ts';
import { streamToDict } from '../core/tensor-stream.ts';
import type { TensorDict } from '../core/tensor.ts';
import { TaskNames } from '../client/api.ts';
import { applyResult } from './apply-result.ts';
import { type RoundSummary, type Workflow, type WorkflowContext } from './workflow.ts';

export interface CyclicOptions {
  rounds: number;
  minClients: number;
  initialModel: TensorDict;
  /** site order; default: sorted connected sites */
  order?: string[];
  taskTimeoutMs?: number;
  siteWaitMs?: number;
}

export class Cyclic implements Workflow {
  readonly name = 'cyclic';
  model: TensorDict;

  constructor(private readonly opts: CyclicOptions) {
    this.model = opts.initialModel;
  }

  async run(ctx: WorkflowContext): Promise<{ model: TensorDict; rounds: RoundSummary[] }> {
    const rounds: RoundSummary[] = [];
    for (let round = 0; round < this.opts.rounds; round++) {
      const started = Date.now();
      const connected = await ctx.controller.waitForSites(this.opts.minClients, this.opts.siteWaitMs ?? 60_000);
      const order = this.opts.order ?? connected;
      const siteMetrics: Record<string, Record<string, number>> = {};
      const failures: Record<string, string> = {};
      const used: string[] = [];
      for (const site of order) {
        ctx.signal?.throwIfAborted();
        const info: FLModelInfo = { paramsType: 'FULL', metrics: {}, meta: {}, currentRound: round, totalRounds: this.opts.rounds };
        const r = await ctx.controller.sendTo(site, { name: TaskNames.train, info, params: dictSource(this.model) }, this.opts.taskTimeoutMs);
        if (!r.ok || !r.params) {
          // a failed site is skipped: the model goes on to the next one unchanged
          failures[site] = r.ok ? 'result carries no params' : r.error;
          ctx.log.warn({ round, site, error: failures[site] }, 'site skipped');
          continue;
        }
        this.model = applyResult(this.model, await streamToDict(r.params), r.info.paramsType);
        siteMetrics[site] = r.info.metrics;
        used.push(site);
      }
      if (used.length < this.opts.minClients) throw new Error(`round ${round}: only ${used.length} sites trained, ${this.opts.minClients} required; failures: ${JSON.stringify(failures)}`);
      await ctx.workspace.saveGlobalModel(round, this.model, { workflow: this.name });
      const last = used[used.length - 1]!;
      const summary: RoundSummary = { round, totalRounds: this.opts.rounds, sites: used, siteMetrics, metrics: siteMetrics[last] ?? {}, failures, seconds: (Date.now() - started) / 1000 };
      ctx.workspace.appendMetrics({ type: 'round', ...summary });
      rounds.push(summary);
      ctx.onRound?.(summary);
    }
    return { model: this.model, rounds };
  }
}
