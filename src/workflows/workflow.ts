/** What a server-side workflow is given and what it reports. */
import type { Controller } from '../runtime/controller.ts';
import type { ServerWorkspace } from '../runtime/workspace.ts';
import type { Logger } from '../util/log.ts';

export interface RoundSummary {
  round: number;
  totalRounds: number;
  /** sites whose results were used */
  sites: string[];
  /** per-site metrics the trainers reported with their results */
  siteMetrics: Record<string, Record<string, number>>;
  /** weighted mean of each metric over the sites */
  metrics: Record<string, number>;
  failures: Record<string, string>;
  seconds: number;
}

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
