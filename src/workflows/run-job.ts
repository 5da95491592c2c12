/**
 * Runs a job's chain of server workflows (job.yaml `workflows`) in order, each taking over the
 * model the previous one produced (a ModelRef: in memory or in a file). Each entry is resolved
 * through the workflow registry (registry.ts): a built-in by its `type`, or the job's own module
 * with `type: custom`. Lives with the workflows, not in the runtime, so the runtime never depends
 * on the layer above it; shared by the simulator and the deployment's server.
 */
import type { ModelRef } from '../core/model-ref.ts';
import { ModelRef as Ref } from '../core/model-ref.ts';
import type { TensorDict } from '../core/tensor.ts';
import type { Job } from '../runtime/job.ts';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { JsonValue } from '../core/fl-model.ts';
import { type Progress, writeProgress } from './progress.ts';
import { resolveWorkflow } from './registry.ts';
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
 * Runs the job's workflows in order; each hands its model to the next. `initial` is taken over:
 * the workflow that needs its tensors takes them from the ref, so the caller's reference to the
 * ref keeps no model alive. `offload` keeps FedAvg's global model and running sum on disk
 * whatever the job says.
 */
export async function runWorkflows(
  job: Job,
  initial: ModelRef,
  ctx: WorkflowContext,
  offload = false,
  resume: Progress | null = null,
): Promise<JobOutcome> {
  let model = initial;
  // the initial file's metadata (a model card, a format tag) goes into every global model saved
  const { round: _round, workflow: _workflow, ...metadata } = initial.metadata;
  const rounds: RoundSummary[] = [...(resume?.rounds ?? [])];
  let crossSite: unknown = resume?.crossSite;
  const chain = job.config.workflows;
  // cross-site evaluation writes no round checkpoints: fedavg then cross_site_eval keeps server/round-<r>/
  const separate = chain.filter((w) => w.type !== 'cross_site_eval').length > 1;
  // resumed: the workflows before resume.index are done; the model goes on from resume.modelPath
  if (resume?.modelPath) model = await Ref.file(resume.modelPath);
  let modelPath = resume?.modelPath ?? (initial.onDisk ? initial.path! : null);
  // the running workflow's own state (ctx.saveState), written with every progress of its index
  let state: JsonValue | undefined;
  const progress = (index: number, round: number | null, so: RoundSummary[], trackedId = ctx.trackingMark?.(), st = state): Promise<void> =>
    writeProgress(ctx.workspace.serverDir, {
      index,
      round,
      modelPath,
      rounds: so,
      ...(crossSite !== undefined && { crossSite: crossSite as JsonValue }),
      ...(trackedId !== undefined && { trackedId }),
      ...(st !== undefined && { state: st }),
    });
  let pending = Promise.resolve();
  for (let index = resume?.index ?? 0; index < chain.length; index++) {
    const { definition, args, label } = await resolveWorkflow(job, index);
    const resumed = resume?.index === index ? resume : null;
    const startRound = resumed && resumed.round !== null ? resumed.round + 1 : 0;
    state = resumed?.state;
    const wf = await definition.create(args, {
      model,
      minClients: job.config.minClients,
      metadata,
      offload,
      index,
      jobDir: job.dir,
      ...(startRound > 0 && { startRound }),
      ...(state !== undefined && { resumeState: state }),
    });
    // when several workflows write rounds, each one's checkpoints go to server/<index>-<type>/round-<r>/
    const wctx = separate ? { ...ctx, workspace: ctx.workspace.forWorkflow(label) } : ctx;
    const done: RoundSummary[] = [];
    let lastRound = startRound > 0 ? startRound - 1 : null;
    // what to write is taken now, not when the write runs: the next round's first rows must not count as this one's
    const save = (): Promise<void> => {
      const [round, so, mark, st] = [lastRound, [...rounds, ...done], ctx.trackingMark?.(), state];
      return (pending = pending
        .then(() => progress(index, round, so, mark, st))
        .catch((e: Error) => ctx.log.warn({ err: e.message }, 'progress not saved')));
    };
    const r = await wf.run({
      ...wctx,
      onRound: async (s) => {
        await ctx.onRound?.(s);
        const checkpoint = wctx.workspace.roundModelPath(s.round);
        // recordRound comes after the round's checkpoint: from now on, resume from there
        if (existsSync(checkpoint)) {
          done.push(separate ? { ...s, workflow: label } : s);
          modelPath = checkpoint;
          lastRound = s.round;
          await save();
        }
      },
      saveState: (next) => {
        // a job being stopped saves nothing more: what its workflow sees now (failed tasks) is no result
        if (ctx.signal?.aborted) return Promise.resolve();
        // a copy: the workflow goes on changing its own object
        state = structuredClone(next);
        return save();
      },
    });
    await pending;
    state = undefined;
    if (r.model) model = r.model instanceof Map ? Ref.memory(r.model) : r.model;
    for (const s of r.rounds ?? []) rounds.push(separate ? { ...s, workflow: label } : s);
    if (r.crossSite !== undefined) crossSite = r.crossSite;
    if (r.model) {
      // the model the next workflow starts from, on disk (its own file, else written once here)
      if (model.onDisk) modelPath = model.path!;
      else if (index + 1 < chain.length && !model.released)
        modelPath = (await model.persist(join(ctx.workspace.serverDir, `chain-${index}.safetensors`), { ...metadata })).path!;
    }
    await progress(index + 1, null, rounds);
  }
  const out = model.onDisk ? { model: null, modelPath: model.path! } : { model: model.released ? null : await model.take() };
  return { ...out, rounds, ...(crossSite !== undefined && { crossSite }) };
}
