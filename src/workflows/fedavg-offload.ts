/**
 * FedAvg with the global model and the running sum on disk (`offload: true`):
 * the model is streamed to the clients from its safetensors file and results
 * are folded into a file-backed accumulator, so the server's memory does not
 * grow with the model. Same rounds and math as FedAvg.
 */
import { copyFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { fileSource } from '../core/model-source.ts';
import { writeSafetensors } from '../core/safetensors.ts';
import type { TensorDict } from '../core/tensor.ts';
import { OffloadedAverage } from '../aggregators/offloaded-average.ts';
import { type FedAvgOptions, fedAvgRound, recordRound, validateRounds } from './fedavg.ts';
import type { RoundSummary, Workflow, WorkflowContext } from './workflow.ts';

export interface OffloadedFedAvgOptions extends Omit<FedAvgOptions, 'initialModel'> {
  /** the initial global model: a safetensors file, or tensors that are written to one first */
  initialModel: string | TensorDict;
}

export class OffloadedFedAvg implements Workflow {
  readonly name = 'fedavg';

  constructor(private readonly opts: OffloadedFedAvgOptions) {
    validateRounds(opts);
  }

  async run(ctx: WorkflowContext): Promise<{ modelPath: string; rounds: RoundSummary[] }> {
    const scratch = join(ctx.workspace.serverDir, 'offload');
    let path: string;
    if (typeof this.opts.initialModel === 'string') {
      path = this.opts.initialModel;
    } else {
      path = join(scratch, 'initial_model.safetensors');
      await writeSafetensors(path, this.opts.initialModel, this.opts.metadata);
    }
    const rounds: RoundSummary[] = [];
    for (let round = this.opts.startRound ?? 0; round < this.opts.rounds; round++) {
      ctx.signal?.throwIfAborted();
      const started = Date.now();
      const agg = await OffloadedAverage.open(path, scratch);
      let summary: Omit<RoundSummary, 'seconds'>;
      try {
        summary = await fedAvgRound(ctx, this.opts, round, await fileSource(path), agg);
      } catch (e) {
        await agg.close();
        throw e;
      }
      const out = ctx.workspace.roundModelPath(round);
      await agg.writeResult(out, { round: String(round), workflow: this.name });
      // the latest model under its fixed name, replaced atomically
      await copyFile(out, `${ctx.workspace.globalModelPath}.tmp`);
      await rename(`${ctx.workspace.globalModelPath}.tmp`, ctx.workspace.globalModelPath);
      path = out;
      const full = { ...summary, seconds: (Date.now() - started) / 1000 };
      recordRound(ctx, full);
      rounds.push(full);
    }
    return { modelPath: path, rounds };
  }
}
