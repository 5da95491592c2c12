/** What a server-side workflow is given and what it reports. */
import { z } from 'zod';
import type { JsonValue } from '../core/fl-model.ts';
import type { ModelRef } from '../core/model-ref.ts';
import type { TensorDict } from '../core/tensor.ts';
import type { HeContext } from '../filters/he-context.ts';
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
  /** swarm: the site that aggregated this round, and how many aggregators it took */
  aggregator: z.string().optional(),
  attempts: z.number().int().optional(),
});
export type RoundSummary = z.infer<typeof RoundSummarySchema>;

export interface WorkflowContext {
  controller: Controller;
  workspace: ServerWorkspace;
  log: Logger;
  /**
   * called after each round (simulator table, dashboard, the job's progress); a workflow awaits it
   * (recordRound) before it logs the round done and starts the next, so a round reported done is
   * one a restarted server resumes after
   */
  onRound?: (s: RoundSummary) => void | Promise<void>;
  /** read right after onRound and saved with the job's progress (the tracking store's last row id) */
  trackingMark?: () => number;
  /** called as results arrive within a round */
  onProgress?: (p: { round: number; done: number; expected: number }) => void;
  signal?: AbortSignal;
  /** a job with the he filter: the server's HE context (no secret key), with which FedAvg sums the encrypted results */
  he?: HeContext;
  /**
   * Persists the running workflow's own state with the job's progress (server/progress.json, atomically):
   * a server that restarts creates the workflow again with it as `WorkflowInput.resumeState`. Resolves once
   * written (a failed write is logged, not thrown: the job goes on, a resume redoes more). Absent where
   * a workflow runs outside a job's chain (simulateInProcess).
   */
  saveState?: (state: JsonValue) => Promise<void>;
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

/** What a workflow of a job's chain is created with. */
export interface WorkflowInput {
  /** the model the previous workflow produced (the job's initial model for the first); take() it to hold it in memory */
  model: ModelRef;
  minClients: number;
  /** the initial model file's metadata (a model card, a format tag), to keep in every global model saved */
  metadata: Readonly<Record<string, string>>;
  /** `--offload`: keep models on disk where the workflow can */
  offload: boolean;
  /** 0-based position in the job's chain */
  index: number;
  /** the job folder, for a workflow that reads files of its own */
  jobDir: string;
  /** resumed after a server restart: the first round to run (`model` is the global model after the round before) */
  startRound?: number;
  /** resumed after a server restart: the state this workflow last saved with `ctx.saveState` (from disk: validate it) */
  resumeState?: JsonValue;
}

/** What a workflow of a chain reports: the model it leaves to the next one (none: the input passes on), its rounds, any results. */
export interface WorkflowOutcome {
  model?: ModelRef | TensorDict;
  rounds?: RoundSummary[];
  /** cross-site evaluation's matrix (summary.json `crossSite`) */
  crossSite?: unknown;
}

export interface ChainWorkflow {
  run(ctx: WorkflowContext): Promise<WorkflowOutcome>;
}

/**
 * A workflow as the registry holds it: `schema` validates its settings from job.yaml (for a
 * job's own module, the entry's `args`), `create` builds it for one run.
 */
export interface WorkflowDefinition<Args = unknown> {
  readonly name: string;
  readonly schema: z.ZodType<Args>;
  create(args: Args, input: WorkflowInput): ChainWorkflow | Promise<ChainWorkflow>;
}

/** Types a workflow definition from its schema (the export of a job's workflow module). */
export function defineWorkflow<S extends z.ZodType>(def: {
  name: string;
  schema: S;
  create(args: z.output<S>, input: WorkflowInput): ChainWorkflow | Promise<ChainWorkflow>;
}): WorkflowDefinition<z.output<S>> {
  return def as WorkflowDefinition<z.output<S>>;
}
