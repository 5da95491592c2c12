/**
 * The built-in workflows as registry entries: each names its job.yaml schema (src/runtime/job-config.ts)
 * and builds its workflow from the validated settings and the model the chain hands it.
 */
import {
  CrossSiteEvalSpecSchema,
  CyclicSpecSchema,
  FedAvgSpecSchema,
  FedOptSpecSchema,
  ScaffoldSpecSchema,
  SwarmSpecSchema,
} from '../runtime/job-config.ts';
import type { z } from 'zod';
import { HE_KEY } from '../filters/he-stream.ts';
import { CrossSiteEval } from './cross-site-eval.ts';
import { Cyclic } from './cyclic.ts';
import { FedAvg } from './fedavg.ts';
import { FedOpt } from './fedopt.ts';
import { Scaffold } from './scaffold.ts';
import { Swarm } from './swarm.ts';
import { type ChainWorkflow, type WorkflowDefinition, type WorkflowInput, defineWorkflow } from './workflow.ts';

type Broadcasting = z.output<typeof FedAvgSpecSchema> | z.output<typeof FedOptSpecSchema> | z.output<typeof ScaffoldSpecSchema>;

/** FedAvg, FedOpt and SCAFFOLD: one round loop, the server step and the aggregator chosen by the settings. */
async function createBroadcasting(w: Broadcasting, input: WorkflowInput): Promise<ChainWorkflow> {
  const common = {
    rounds: w.rounds,
    minClients: input.minClients,
    metadata: input.metadata,
    ...(w.roundTimeoutSeconds !== undefined && { roundTimeoutMs: w.roundTimeoutSeconds * 1000 }),
    ...(w.waitAfterMinSeconds !== undefined && { waitAfterMinMs: w.waitAfterMinSeconds * 1000 }),
    ...(w.sampling && { sampling: w.sampling }),
    ...(w.proxMu !== undefined && { proxMu: w.proxMu }),
    ...(input.startRound !== undefined && { startRound: input.startRound }),
  };
  const robust = w.type !== 'scaffold' && w.aggregation.rule !== 'mean';
  if (robust && input.offload)
    throw new Error(
      `workflow ${w.type}: aggregation ${w.aggregation.rule} keeps the global model in memory and cannot run with --offload; drop --offload or use aggregation: {rule: mean}`,
    );
  const offload = w.type !== 'scaffold' && (w.offload || input.offload) && !robust;
  // offloaded, a file stays a file (streamed from disk each round); in memory, the tensors are taken
  // an encrypted model (a he job resumed from its checkpoint) keeps its description
  const he = input.model.metadata[HE_KEY];
  const initialModel = offload && input.model.onDisk ? input.model : await input.model.take();
  const opts = {
    ...common,
    initialModel,
    offload,
    ...(w.type !== 'scaffold' && { aggregation: w.aggregation }),
    ...(he !== undefined && { encryptedModel: { [HE_KEY]: he } }),
  };
  const wf =
    w.type === 'scaffold' ? new Scaffold(opts) : w.type === 'fedopt' ? new FedOpt({ ...opts, optimizer: w.optimizer }) : new FedAvg(opts);
  return { run: (ctx) => wf.runRef(ctx) };
}

export const BUILTIN_WORKFLOWS: readonly WorkflowDefinition<never>[] = [
  defineWorkflow({ name: 'fedavg', schema: FedAvgSpecSchema, create: createBroadcasting }),
  defineWorkflow({ name: 'fedopt', schema: FedOptSpecSchema, create: createBroadcasting }),
  defineWorkflow({ name: 'scaffold', schema: ScaffoldSpecSchema, create: createBroadcasting }),
  defineWorkflow({
    name: 'cyclic',
    schema: CyclicSpecSchema,
    async create(w, input) {
      const cyclic = new Cyclic({
        rounds: w.rounds,
        minClients: input.minClients,
        metadata: input.metadata,
        initialModel: await input.model.take(),
        ...(w.order && { order: w.order }),
        onSiteFailure: w.onSiteFailure,
        ...(input.startRound !== undefined && { startRound: input.startRound }),
        ...(w.taskTimeoutSeconds !== undefined && { taskTimeoutMs: w.taskTimeoutSeconds * 1000 }),
      });
      return { run: async (ctx) => cyclic.run(ctx) };
    },
  }),
  defineWorkflow({
    name: 'cross_site_eval',
    schema: CrossSiteEvalSpecSchema,
    create(w, input) {
      const evaluation = new CrossSiteEval({
        minClients: input.minClients,
        ...(w.includeGlobal && { globalModel: input.model }),
        ...(input.resumeState !== undefined && { resumeState: input.resumeState }),
        ...(w.taskTimeoutSeconds !== undefined && { taskTimeoutMs: w.taskTimeoutSeconds * 1000 }),
      });
      // the model passes on unchanged
      return { run: async (ctx) => ({ crossSite: (await evaluation.run(ctx)).matrix }) };
    },
  }),
  defineWorkflow({
    name: 'swarm',
    schema: SwarmSpecSchema,
    create(w, input) {
      const swarm = new Swarm({
        rounds: w.rounds,
        minClients: input.minClients,
        metadata: input.metadata,
        initialModel: input.model,
        select: w.aggregator.select,
        seed: w.aggregator.seed,
        maxAttempts: w.maxAttempts,
        offload: w.offload || input.offload,
        ...(input.startRound !== undefined && { startRound: input.startRound }),
        ...(w.taskTimeoutSeconds !== undefined && { taskTimeoutMs: w.taskTimeoutSeconds * 1000 }),
        ...(w.aggregatorTimeoutSeconds !== undefined && { aggregatorTimeoutMs: w.aggregatorTimeoutSeconds * 1000 }),
      });
      return { run: (ctx) => swarm.runRef(ctx) };
    },
  }),
] as unknown as WorkflowDefinition<never>[];
