/**
 * Cross-site evaluation: every site's local model (and the server's global
 * model, if given) is evaluated on every site's data. The submitted models are
 * written to the workspace as they arrive and streamed from disk to each
 * evaluator, so the server holds no more than one model in flight.
 * Result: matrix[modelOwner][evaluatorSite] = metrics, saved as cross_site_val.json.
 */
import { join } from 'node:path';
import type { FLModelInfo } from '../core/fl-model.ts';
import { ModelRef } from '../core/model-ref.ts';
import { type ModelSource, dictSource, fileSource } from '../core/model-source.ts';
import { writeStreamToFile } from '../core/safetensors.ts';
import type { TensorDict } from '../core/tensor.ts';
import { TaskNames } from '../client/api.ts';
import type { Workflow, WorkflowContext } from './workflow.ts';

export interface CrossSiteEvalOptions {
  minClients: number;
  /** the server's model, evaluated as "server": tensors, a safetensors file, or a ModelRef */
  globalModel?: TensorDict | string | ModelRef;
  taskTimeoutMs?: number;
  siteWaitMs?: number;
}

export type EvalMatrix = Record<string, Record<string, Record<string, number> | { error: string }>>;

export class CrossSiteEval implements Workflow {
  readonly name = 'cross_site_eval';

  constructor(private readonly opts: CrossSiteEvalOptions) {}

  async run(ctx: WorkflowContext): Promise<{ matrix: EvalMatrix }> {
    const { controller, workspace, log } = ctx;
    const sites = await controller.waitForSites(this.opts.minClients, this.opts.siteWaitMs ?? 60_000);
    const info = (round = 0): FLModelInfo => ({ paramsType: 'FULL', metrics: {}, meta: {}, currentRound: round, totalRounds: 1 });
    const models = new Map<string, ModelSource>();
    const g = this.opts.globalModel;
    if (g !== undefined)
      models.set('server', g instanceof ModelRef ? await g.source() : typeof g === 'string' ? await fileSource(g) : dictSource(g));
    const timeout = this.opts.taskTimeoutMs !== undefined ? { timeoutMs: this.opts.taskTimeoutMs } : {};
    const matrix: EvalMatrix = {};

    for await (const r of controller.broadcast(
      { name: TaskNames.submitModel, info: info(), params: null },
      { targets: sites, minResponses: 0, ...timeout },
    )) {
      if (!r.ok || !r.params) {
        const error = r.ok ? 'submitted no model' : r.error;
        matrix[r.site] = { '*': { error } };
        log.warn({ site: r.site, error }, 'no local model from site');
        continue;
      }
      const path = join(workspace.serverDir, 'cross_site', 'models', `${r.site}.safetensors`);
      await writeStreamToFile(path, r.params);
      models.set(r.site, await fileSource(path));
    }

    for (const [owner, source] of models) {
      const row: Record<string, Record<string, number> | { error: string }> = {};
      for await (const r of controller.broadcast(
        { name: TaskNames.validate, info: { ...info(), meta: { modelOwner: owner } }, params: source },
        { targets: sites, minResponses: 0, ...timeout },
      )) {
        if (r.ok) r.discard();
        row[r.site] = r.ok ? r.info.metrics : { error: r.error };
      }
      matrix[owner] = row;
      workspace.appendMetrics({ type: 'cross_site_eval', model: owner, results: row });
    }
    await workspace.writeJson('cross_site_val.json', matrix);
    return { matrix };
  }
}
