/**
 * Cyclic weight transfer: the model visits the sites one after another, each
 * training it further; one round = one pass over all sites, run with the
 * Controller's relay primitive.
 */
import type { FLModelInfo } from '../core/fl-model.ts';
import type { TensorDict } from '../core/tensor.ts';
import { TaskNames } from '../client/api.ts';
import { type RelayFailurePolicy, RelayAbortedError } from '../runtime/controller.ts';
import { recordRound } from './round.ts';
import { type RoundSummary, type Workflow, type WorkflowContext } from './workflow.ts';

export interface CyclicOptions {
  rounds: number;
  minClients: number;
  initialModel: TensorDict;
  /** first round number (resumed after a server restart: initialModel is the model after the round before) */
  startRound?: number;
  /** the initial model's safetensors metadata, kept in every global model saved */
  metadata?: Readonly<Record<string, string>>;
  /** site order; default: sorted connected sites */
  order?: string[];
  /** limit for each site's task */
  taskTimeoutMs?: number;
  siteWaitMs?: number;
  /**
   * a site that fails or times out: 'skip' (default) passes the model on
   * unchanged, and the round still needs minClients sites that trained;
   * 'abort' fails the round, naming the site
   */
  onSiteFailure?: RelayFailurePolicy;
}

export class Cyclic implements Workflow {
  readonly name = 'cyclic';
  model: TensorDict;

  private readonly opts: Omit<CyclicOptions, 'initialModel'>;

  constructor(opts: CyclicOptions) {
    // as in FedAvg: the initial model lives on as `model` only, never pinned by opts
    const { initialModel, ...rest } = opts;
    this.opts = rest;
    this.model = initialModel;
  }

  async run(ctx: WorkflowContext): Promise<{ model: TensorDict; rounds: RoundSummary[] }> {
    const rounds: RoundSummary[] = [];
    for (let round = this.opts.startRound ?? 0; round < this.opts.rounds; round++) {
      const started = Date.now();
      const connected = await ctx.controller.waitForSites(this.opts.minClients, this.opts.siteWaitMs ?? 60_000);
      const order = this.opts.order ?? connected;
      const siteMetrics: Record<string, Record<string, number>> = {};
      const failures: Record<string, string> = {};
      const used: string[] = [];
      const info: FLModelInfo = { paramsType: 'FULL', metrics: {}, meta: {}, currentRound: round, totalRounds: this.opts.rounds };
      const hops = ctx.controller.relay(
        { name: TaskNames.train, info, model: this.model },
        {
          order,
          onFailure: this.opts.onSiteFailure ?? 'skip',
          ...(this.opts.taskTimeoutMs !== undefined && { timeoutMs: this.opts.taskTimeoutMs }),
          ...(ctx.signal && { signal: ctx.signal }),
        },
      );
      try {
        for await (const hop of hops) {
          if (!hop.ok) {
            // 'skip': the model goes on to the next site unchanged
            failures[hop.site] = hop.error;
            ctx.log.warn({ round, site: hop.site, error: hop.error }, 'site skipped');
            continue;
          }
          this.model = hop.model;
          siteMetrics[hop.site] = hop.info.metrics;
          used.push(hop.site);
        }
      } catch (e) {
        if (e instanceof RelayAbortedError) throw new Error(`cyclic round ${round}: ${e.message}`, { cause: e });
        throw e;
      }
      if (used.length < this.opts.minClients)
        throw new Error(
          `round ${round}: only ${used.length} sites trained, ${this.opts.minClients} required; failures: ${JSON.stringify(failures)}`,
        );
      await ctx.workspace.saveGlobalModel(round, this.model, { ...this.opts.metadata, workflow: this.name });
      const last = used[used.length - 1]!;
      const summary: RoundSummary = {
        round,
        totalRounds: this.opts.rounds,
        sites: used,
        siteMetrics,
        metrics: siteMetrics[last] ?? {},
        failures,
        seconds: (Date.now() - started) / 1000,
      };
      await recordRound(ctx, summary);
      rounds.push(summary);
    }
    return { model: this.model, rounds };
  }
}
