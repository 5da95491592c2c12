/** What a server-side workflow is given and what it reports. */
import { z } from 'zod';
import type { Controller } from '../runtime/controller.ts';
import type { ServerWorkspace } from '../runtime/workspace.ts';
import type { Logger } from '../util/log.ts';

const Metrics = z.record(z.string(), z.number());

/** One finished round, as workflows report it (metrics.jsonl, summary.json, the admin's status reply). */
export const RoundSummarySchema = z.object({
  round: z.number().int(),
  totalRounds: z.number().int(),
  /** sites whose results were used */
  sites: z.array(z.string()),
  /** per-site metrics the trainers reported with their results */
  siteMetrics: z.record(z.string(), Metrics),
  /** weighted mean of each metric over the sites */
  metrics: Metrics,
  failures: z.record(z.string(), z.string()),
  seconds: z.number(),
  /** the workflow of the job's chain that ran this round, as "<index>-<type>" */
  workflow: z.string().optional(),
});
export type RoundSummary = z.infer<typeof RoundSummarySchema>;

export interface WorkflowContext {
  controller: Controller;
  workspace: ServerWorkspace;
  log: Logger;
  /** called after each round (simulator table, dashboard) */
  onRound?: (s: RoundSummary) => void;
  /** called as results arrive within a round */
  onProgress?: (p: { round: number; done: number; expected: number }) => void;
  signal?: AbortSignal;
}

export interface Workflow {
  readonly name: string;
  run(ctx: WorkflowContext): Promise<unknown>;
}

/** Weighted mean of each metric across sites (weights = update weights). */
export function meanMetrics(perSite: Record<string, Record<string, number>>, weights: Record<string, number>): Record<string, number> {
  const sum: Record<string, number> = {};
  const w: Record<string, number> = {};
  for (const [site, ms] of Object.entries(perSite)) {
    const sw = weights[site] ?? 1;
    for (const [k, v] of Object.entries(ms)) {
      sum[k] = (sum[k] ?? 0) + sw * v;
      w[k] = (w[k] ?? 0) + sw;
    }
  }
  const out: Record<string, number> = {};
  for (const k of Object.keys(sum)) out[k] = w[k]! > 0 ? sum[k]! / w[k]! : sum[k]!;
  return out;
}
