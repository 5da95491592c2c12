/**
 * Cross-site evaluation: every site's local model (and the server's global
 * model, if given) is evaluated on every site's data. The submitted models are
 * written to the workspace as they arrive (atomically: a temp file renamed when
 * complete) and streamed from disk to each evaluator, so the server holds no
 * more than one model in flight.
 * Result: matrix[modelOwner][evaluatorSite] = metrics, saved as cross_site_val.json.
 *
 * Resumable: each model in and each finished row is saved with `ctx.saveState`
 * (CrossSiteState); a server that restarts mid-evaluation creates the workflow
 * again with that state, so it asks only the sites whose model is missing and
 * runs only the rows not done (docs/reliability.md).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import type { FLModelInfo } from '../core/fl-model.ts';
import { ModelRef } from '../core/model-ref.ts';
import { type ModelSource, dictSource, fileSource } from '../core/model-source.ts';
import { writeStreamToFile } from '../core/safetensors.ts';
import type { TensorDict } from '../core/tensor.ts';
import { TaskNames } from '../client/api.ts';
import { zodIssues } from '../util/zod-error.ts';
import type { Workflow, WorkflowContext } from './workflow.ts';

export interface CrossSiteEvalOptions {
  minClients: number;
  /** the server's model, evaluated as "server": tensors, a safetensors file, or a ModelRef */
  globalModel?: TensorDict | string | ModelRef;
  taskTimeoutMs?: number;
  siteWaitMs?: number;
  /** resumed after a server restart: the state the interrupted run saved (validated here; unusable: start over) */
  resumeState?: unknown;
}

const Cell = z.union([z.record(z.string(), z.number()), z.strictObject({ error: z.string() })]);
const Row = z.record(z.string(), Cell);

/** What cross-site evaluation saves as it goes (`ctx.saveState`), and resumes from. */
export const CrossSiteStateSchema = z.strictObject({
  /** sites whose model is complete in server/cross_site/models/<site>.safetensors, in arrival order */
  models: z.array(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'a site name')),
  /** the rows done: rows[modelOwner][evaluatorSite] */
  rows: z.record(z.string(), Row),
});
export type CrossSiteState = z.infer<typeof CrossSiteStateSchema>;

type Cell = z.infer<typeof Cell>;
export type EvalMatrix = Record<string, Record<string, Cell>>;

export class CrossSiteEval implements Workflow {
  readonly name = 'cross_site_eval';

  constructor(private readonly opts: CrossSiteEvalOptions) {}

  async run(ctx: WorkflowContext): Promise<{ matrix: EvalMatrix }> {
    const { controller, workspace, log } = ctx;
    const sites = await controller.waitForSites(this.opts.minClients, this.opts.siteWaitMs ?? 60_000);
    const info = (round = 0): FLModelInfo => ({ paramsType: 'FULL', metrics: {}, meta: {}, currentRound: round, totalRounds: 1 });
    const modelPath = (site: string): string => join(workspace.serverDir, 'cross_site', 'models', `${site}.safetensors`);
    const models = new Map<string, ModelSource>();
    const g = this.opts.globalModel;
    if (g !== undefined)
      models.set('server', g instanceof ModelRef ? await g.source() : typeof g === 'string' ? await fileSource(g) : dictSource(g));
    const timeout = this.opts.taskTimeoutMs !== undefined ? { timeoutMs: this.opts.taskTimeoutMs } : {};
    const matrix: EvalMatrix = {};
    const state: CrossSiteState = { models: [], rows: {} };
    const resumed = this.resumed(ctx);
    // the models in before the restart: a file gone or unreadable is asked for again
    for (const site of resumed?.models ?? []) {
      try {
        if (!existsSync(modelPath(site))) throw new Error('file missing');
        models.set(site, await fileSource(modelPath(site)));
        state.models.push(site);
      } catch (e) {
        log.warn({ site, error: (e as Error).message }, 'cross-site model saved before the restart is unusable: asking again');
      }
    }
    const save = async (): Promise<void> => {
      // a stopped job records nothing more: the failures its tasks show now are the stop's, not results
      ctx.signal?.throwIfAborted();
      await ctx.saveState?.(state);
    };

    // rows done before the restart stand as they are; their owners' models are not needed again
    for (const [owner, row] of Object.entries(resumed?.rows ?? {})) matrix[owner] = state.rows[owner] = row;
    const ask = sites.filter((s) => !models.has(s) && !state.rows[s]);
    if (ask.length > 0)
      for await (const r of controller.broadcast(
        { name: TaskNames.submitModel, info: info(), params: null },
        { targets: ask, minResponses: 0, ...timeout },
      )) {
        if (!r.ok || !r.params) {
          const error = r.ok ? 'submitted no model' : r.error;
          matrix[r.site] = { '*': { error } };
          log.warn({ site: r.site, error }, 'no local model from site');
          continue;
        }
        await writeStreamToFile(modelPath(r.site), r.params);
        models.set(r.site, await fileSource(modelPath(r.site)));
        state.models.push(r.site);
        await save();
        log.info({ site: r.site }, 'cross-site model in');
      }

    for (const [owner, source] of models) {
      if (state.rows[owner]) continue;
      const row: Record<string, Cell> = {};
      for await (const r of controller.broadcast(
        { name: TaskNames.validate, info: { ...info(), meta: { modelOwner: owner } }, params: source },
        { targets: sites, minResponses: 0, ...timeout },
      )) {
        if (r.ok) r.discard();
        row[r.site] = r.ok ? r.info.metrics : { error: r.error };
      }
      matrix[owner] = state.rows[owner] = row;
      await save();
      workspace.appendMetrics({ type: 'cross_site_eval', model: owner, results: row });
      log.info({ model: owner }, 'cross-site row done');
    }
    await workspace.writeJson('cross_site_val.json', matrix);
    return { matrix };
  }

  /** The state to resume from, when given and valid (else the evaluation starts over, saying why). */
  private resumed(ctx: WorkflowContext): CrossSiteState | null {
    if (this.opts.resumeState === undefined) return null;
    const r = CrossSiteStateSchema.safeParse(this.opts.resumeState);
    if (!r.success) {
      ctx.log.warn({ issues: zodIssues(r.error) }, 'cross-site state unusable: evaluation starts over');
      return null;
    }
    ctx.log.info({ models: r.data.models, rows: Object.keys(r.data.rows) }, 'cross-site evaluation resumed');
    return r.data;
  }
}
