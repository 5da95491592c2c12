/**
 * Where a job's chain of workflows stands, persisted after every completed round and every
 * completed workflow (`server/progress.json`, written atomically), so a server that restarts
 * resumes the job from its last completed round (docs/reliability.md):
 *
 *   index      the workflow of the chain to run next (or still running)
 *   round      its last completed round (null: none yet)
 *   modelPath  the global model to go on from: that round's checkpoint, or the model the
 *              previous workflow left
 *   rounds     the summaries of every completed round so far (the job's record)
 *   crossSite  cross-site results of completed workflows
 *   trackedId  the tracking store's last row id when that round completed (WorkflowContext.trackingMark):
 *              a resumed job drops the rows after it, which the interrupted round logged
 *   state      the running workflow's own state (`ctx.saveState`: cross-site evaluation's models in and rows
 *              done), handed back to it on resume as `resumeState`
 *
 * A progress file is written after the round's checkpoint, so it never points past what is on disk.
 */
import { readJsonFile } from '../util/json-file.ts';
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import { z } from 'zod';
import { JsonValueSchema } from '../core/fl-model.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { RoundSummarySchema } from './workflow.ts';

export const ProgressSchema = z.strictObject({
  index: z.number().int().min(0),
  round: z.number().int().min(0).nullable(),
  modelPath: z.string().min(1).nullable(),
  rounds: z.array(RoundSummarySchema),
  crossSite: JsonValueSchema.optional(),
  trackedId: z.number().int().min(0).optional(),
  state: JsonValueSchema.optional(),
});
export type Progress = z.infer<typeof ProgressSchema>;

export function progressPath(serverDir: string): string {
  return join(serverDir, 'progress.json');
}

/** The progress a previous run left, or null (none, or a file that does not parse: start afresh). */
export function readProgress(serverDir: string): Progress | null {
  return readJsonFile(progressPath(serverDir), ProgressSchema);
}

export async function writeProgress(serverDir: string, p: Progress): Promise<void> {
  await writeFileAtomic(progressPath(serverDir), `${JSON.stringify(p)}\n`);
}

/** Forgets the progress (a job requeued from round 0). */
export async function clearProgress(serverDir: string): Promise<void> {
  await rm(progressPath(serverDir), { force: true });
}
