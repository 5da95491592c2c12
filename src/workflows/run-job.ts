/**
 * Runs a job's chain of server workflows (job.json `workflows`) in order, each taking over the
 * model the previous one produced. Lives with the workflows, not in the runtime, so the runtime
 * never depends on the layer above it; shared by the simulator and the deployment's server.
 */
import { SafetensorsFile, readSafetensors } from '../core/safetensors.ts';
import type { TensorDict } from '../core/tensor.ts';
import type { InitialModel, Job } from '../runtime/job.ts';
import { CrossSiteEval } from './cross-site-eval.ts';
import { Cyclic } from './cyclic.ts';
import { FedOpt } from './fedopt.ts';
import { Scaffold } from './scaffold.ts';
import { StrategyWorkflow, fedAvgStrategy } from './strategy.ts';
import { OffloadedFedAvg } from './fedavg-offload.ts';
import type { RoundSummary, WorkflowContext } from './workflow.ts';

export interface JobOutcome {
  /** the final global model in memory; null when it was kept on disk (offload) */
  model: TensorDict | null;
  /** the final global model's file, when it was kept on disk */
  modelPath?: string;
  rounds: RoundSummary[];
  crossSite?: unknown;
}

/**
 * Hands `value` over once and forgets it: the caller's reference goes with it, so a model
 * handed to runWorkflows is not kept alive by the caller's frame for the whole job.
 */
export function handOver<T>(value: T): () => Promise<T> {
  let held: { value: T } | null = { value };
  return async () => {
    if (!held) throw new Error('the initial model was already handed over');
    const v = held.value;
    held = null;
    return v;
  };
}

/**
 * Runs the job's workflows in order; each hands its model to the next.
 * `offload` keeps FedAvg's global model and running sum on disk whatever the job says.
 */
export async function runWorkflows(
  job: Job,
  load: () => Promise<InitialModel>,
  ctx: WorkflowContext,
  offload = false,
): Promise<JobOutcome> {
  // the initial model is loaded here and referenced only by `model`, which each workflow takes
  // over (model = null before it runs): a caller's variable holding it would keep a whole model
  // alive for the job's duration
  let modelPath: string | undefined;
  let model: TensorDict | null = await load().then((m) => (typeof m === 'string' ? ((modelPath = m), null) : m));
  // the initial file's metadata (a model card, a format tag) goes into every global model saved
  const metadata = modelPath === undefined ? {} : await headerMetadata(modelPath);
  const rounds: RoundSummary[] = [];
  let crossSite: unknown;
  const minClients = job.config.minClients;
  for (const w of job.config.workflows) {
    switch (w.type) {
      case 'fedavg':
      case 'fedopt':
      case 'scaffold': {
        const common = {
          rounds: w.rounds,
          minClients,
          metadata,
          ...(w.roundTimeoutSeconds !== undefined && { roundTimeoutMs: w.roundTimeoutSeconds * 1000 }),
          ...(w.waitAfterMinSeconds !== undefined && { waitAfterMinMs: w.waitAfterMinSeconds * 1000 }),
          ...(w.sampling && { sampling: w.sampling }),
          ...(w.proxMu !== undefined && { proxMu: w.proxMu }),
        };
        const optimizer = w.type === 'fedopt' ? { optimizer: w.optimizer } : {};
        const robust = w.type !== 'scaffold' && w.aggregation.rule !== 'mean';
        if (robust && offload)
          throw new Error(
            `workflow ${w.type}: aggregation ${w.aggregation.rule} keeps the global model in memory and cannot run with --offload; drop --offload or use aggregation: {rule: mean}`,
          );
        if (w.type !== 'scaffold' && (w.offload || offload) && !robust) {
          const r = await new OffloadedFedAvg({ ...common, ...optimizer, initialModel: model ?? modelPath! }).run(ctx);
          model = null;
          modelPath = r.modelPath;
          rounds.push(...r.rounds);
        } else {
          const initialModel = model ?? (await readSafetensors(modelPath!)).tensors;
          model = null;
          const opts = { ...common, initialModel, ...(w.type !== 'scaffold' && { aggregation: w.aggregation }) };
          const wf =
            w.type === 'scaffold'
              ? new Scaffold(opts)
              : w.type === 'fedopt'
                ? new FedOpt({ ...opts, optimizer: w.optimizer })
                : new StrategyWorkflow(opts, fedAvgStrategy);
          const r = await wf.run(ctx);
          model = r.model;
          modelPath = undefined;
          rounds.push(...r.rounds);
        }
        break;
      }
      case 'cyclic': {
        const cyclic = new Cyclic({
          rounds: w.rounds,
          minClients,
          metadata,
          initialModel: model ?? (await readSafetensors(modelPath!)).tensors,
          ...(w.order && { order: w.order }),
          onSiteFailure: w.onSiteFailure,
          ...(w.taskTimeoutSeconds !== undefined && { taskTimeoutMs: w.taskTimeoutSeconds * 1000 }),
        });
        model = null;
        const r = await cyclic.run(ctx);
        model = r.model;
        modelPath = undefined;
        rounds.push(...r.rounds);
        break;
      }
      case 'cross_site_eval': {
        const r = await new CrossSiteEval({
          minClients,
          ...(w.includeGlobal && { globalModel: model ?? modelPath! }),
          ...(w.taskTimeoutSeconds !== undefined && { taskTimeoutMs: w.taskTimeoutSeconds * 1000 }),
        }).run(ctx);
        crossSite = r.matrix;
        break;
      }
    }
  }
  return { model, ...(modelPath !== undefined && { modelPath }), rounds, ...(crossSite !== undefined && { crossSite }) };
}

/** A safetensors file's metadata, without the keys each saved round sets itself. */
async function headerMetadata(path: string): Promise<Record<string, string>> {
  const f = await SafetensorsFile.open(path);
  try {
    const { round: _round, workflow: _workflow, ...rest } = f.metadata;
    return rest;
  } finally {
    await f.close();
  }
}
