/**
 * The job folder: one config file (`job.yaml`, `job.yml` or `job.json`) plus
 * the code and files it names. Validated strictly: unknown keys and wrong
 * types are refused with the file and the field in the message.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { JsonValueSchema } from '../core/fl-model.ts';
import { zodIssueLines } from '../util/zod-error.ts';
import { unionByKeys } from '../util/zod-union.ts';
import { RobustRuleSchema } from '../algorithms/robust.ts';
import { SamplingSchema } from '../algorithms/sampling.ts';
import { ServerOptimizerSchema } from '../algorithms/server-optimizer.ts';
import { DurationSeconds, DurationSecondsOrZero } from '../util/long-timer.ts';
import { FilterListSchema, heFilterIndex } from '../filters/spec.ts';

const RelPath = z
  .string()
  .min(1)
  .refine((p) => !p.startsWith('/') && !p.split(/[\\/]/).includes('..'), 'must be a path inside the job folder (relative, no "..")');

const TrainerSpec = unionByKeys([
  z.strictObject({ module: RelPath, export: z.string().min(1).default('default') }),
  z.strictObject({ module: RelPath, factory: z.string().min(1), args: z.record(z.string(), JsonValueSchema).default({}) }),
]);

const ScriptSpec = z.strictObject({
  command: z.string().min(1),
  args: z.array(z.string()).default([]),
  env: z.record(z.string(), z.string()).default({}),
  startTimeoutSeconds: DurationSeconds.default(120),
  /** how long the script may go on with a task the server cancelled before it is killed and started again */
  cancelGraceSeconds: DurationSeconds.default(10),
});

/** 'file': the trainer gets the model as a safetensors file path (models larger than memory). */
const ParamsMode = z.enum(['memory', 'file']).default('memory');

export const ExecutorSpecSchema = unionByKeys([
  z.strictObject({ trainer: TrainerSpec, params: ParamsMode }),
  z.strictObject({ script: ScriptSpec, params: ParamsMode }),
]);
export type ExecutorSpec = z.infer<typeof ExecutorSpecSchema>;

const Seconds = DurationSeconds;

/** What every workflow of the FedAvg family accepts: client sampling, FedProx's μ, the aggregation rule. */
const Broadcasting = {
  rounds: z.number().int().min(1),
  roundTimeoutSeconds: Seconds.optional(),
  waitAfterMinSeconds: DurationSecondsOrZero.optional(),
  /** a seeded subset of the connected sites per round: `{fraction | count, min, seed}` */
  sampling: SamplingSchema.optional(),
  /** FedProx: the proximal coefficient the trainers apply (sent in the task's meta.fedprox_mu) */
  proxMu: z.number().min(0).optional(),
};
const Aggregation = z.union([z.strictObject({ rule: z.literal('mean') }), RobustRuleSchema]).default({ rule: 'mean' });
const noRobustOffload = (w: { offload: boolean; aggregation: { rule: string } }): boolean => !(w.offload && w.aggregation.rule !== 'mean');
const noRobustOffloadMsg = {
  message: 'a robust aggregation rule keeps the global model in memory: set offload: false (its staged results are on disk anyway)',
  path: ['aggregation'],
};

// Each built-in workflow's settings; src/workflows/builtins.ts registers each with its schema here.
export const FedAvgSpecSchema = z
  .strictObject({
    type: z.literal('fedavg'),
    ...Broadcasting,
    /** keep the global model and the running sum on disk (models larger than memory) */
    offload: z.boolean().default(false),
    /** `mean` (FedAvg), or a robust rule: median, trimmed_mean {beta}, krum {byzantine, select} */
    aggregation: Aggregation,
  })
  .refine(noRobustOffload, noRobustOffloadMsg);
export const FedOptSpecSchema = z
  .strictObject({
    type: z.literal('fedopt'),
    ...Broadcasting,
    /** the server optimizer on the pseudo-gradient: {name: fedavgm | fedadam | fedyogi | fedadagrad, lr, ...} */
    optimizer: ServerOptimizerSchema,
    /** the global model, the running sum and the optimizer state on disk */
    offload: z.boolean().default(false),
    aggregation: Aggregation,
  })
  .refine(noRobustOffload, noRobustOffloadMsg);
export const ScaffoldSpecSchema = z.strictObject({
  type: z.literal('scaffold'),
  ...Broadcasting,
});
export const CyclicSpecSchema = z.strictObject({
  type: z.literal('cyclic'),
  rounds: z.number().int().min(1),
  order: z.array(z.string()).optional(),
  taskTimeoutSeconds: Seconds.optional(),
  /** a site that fails or times out: skip it (the model passes on unchanged) or abort the job */
  onSiteFailure: z.enum(['skip', 'abort']).default('skip'),
});
export const CrossSiteEvalSpecSchema = z.strictObject({
  type: z.literal('cross_site_eval'),
  /** also evaluate the global model coming out of the previous workflow */
  includeGlobal: z.boolean().default(true),
  taskTimeoutSeconds: Seconds.optional(),
});
/**
 * Swarm learning (src/workflows/swarm.ts): each round one site aggregates the others' results;
 * the server only routes the traffic, picks the aggregator and keeps each round's model.
 */
export const SwarmSpecSchema = z.strictObject({
  type: z.literal('swarm'),
  rounds: z.number().int().min(1),
  /** how each round's aggregator is picked among the connected sites: in turn by name, or seeded at random */
  aggregator: z
    .strictObject({ select: z.enum(['round_robin', 'random']).default('round_robin'), seed: z.number().int().default(0) })
    .default({ select: 'round_robin', seed: 0 }),
  /** a trainer that has not answered within this is skipped for the round (default: wait for it or its disconnection) */
  taskTimeoutSeconds: Seconds.optional(),
  /** each step of the aggregator (open, one contribution, finish); past it the aggregator is replaced and the round redone */
  aggregatorTimeoutSeconds: Seconds.optional(),
  /** how often a round may be redone with a new aggregator before the job fails */
  maxAttempts: z.number().int().min(1).max(100).default(3),
  /** the aggregator keeps the global model and the running sum on disk in its workspace */
  offload: z.boolean().default(false),
});
/**
 * A workflow module of the job itself: `module` exports (as `export`, default `default`) a
 * workflow definition `{ name, schema, create }` (defineWorkflow of flotilla/workflows); `args`
 * are checked against its schema when the job is validated and again when it runs.
 */
export const CustomWorkflowSpecSchema = z.strictObject({
  type: z.literal('custom'),
  module: RelPath,
  export: z.string().min(1).default('default'),
  args: z.record(z.string(), JsonValueSchema).default({}),
});

export const WorkflowSpecSchema = z.discriminatedUnion('type', [
  FedAvgSpecSchema,
  FedOptSpecSchema,
  ScaffoldSpecSchema,
  CyclicSpecSchema,
  CrossSiteEvalSpecSchema,
  SwarmSpecSchema,
  CustomWorkflowSpecSchema,
]);
export type WorkflowSpec = z.infer<typeof WorkflowSpecSchema>;

const ModelSpec = z.union([
  z.strictObject({ path: RelPath }),
  z.strictObject({
    module: RelPath,
    export: z.string().min(1).default('initialModel'),
    /** settings for a hook made with defineInitialModel, parsed by the schema it declares */
    args: z.record(z.string(), JsonValueSchema).default({}),
  }),
]);

/** Why each workflow other than FedAvg cannot run an he job (whose server holds no secret key). */
const HE_REFUSED: Record<string, string> = {
  fedopt: "fedopt's server optimizer steps on the plain pseudo-gradient",
  scaffold: "scaffold's control variates are updated from the plain results on the server",
  cyclic: 'cyclic needs the plain model on the server (each site continues from the previous one)',
  cross_site_eval: "cross_site_eval sends each site's plain model to the other sites",
  swarm: 'swarm has a site aggregate the plain results of the others',
  custom: 'a custom workflow needs the plain model on the server',
};

export const JobConfigSchema = z
  .strictObject({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'job names are 1–64 letters, digits, "_", "." or "-"'),
    minClients: z.number().int().min(1),
    model: ModelSpec,
    workflows: z.array(WorkflowSpecSchema).min(1),
    executor: ExecutorSpecSchema,
    /** per-site executor overrides, e.g. a Python trainer at one site */
    sites: z.record(z.string(), z.strictObject({ executor: ExecutorSpecSchema })).default({}),
    /** transforms of tasks and results: quantize, exclude, custom modules (docs/filters.md) */
    filters: FilterListSchema.default([]),
    /**
     * seconds a site may stay silent on the job's connection before it is dropped from the job (its
     * tasks fail, the rounds go on with the others while minClients holds). Default: the server's
     * heartbeatTimeoutSeconds (30 s in a provisioned kit).
     */
    heartbeatTimeoutSeconds: z
      .number()
      .min(0.5, 'must be at least 0.5 seconds (sites heartbeat four times per timeout)')
      .max(86_400, 'must be at most 86400 seconds (a day): a longer silence is not a heartbeat')
      .optional(),
    /** largest result a site may send for one task, in bytes (default: twice the model sent plus 64 MiB) */
    maxResultBytes: z
      .number()
      .int()
      .min(1024)
      .max(2 ** 50)
      .optional(),
  })
  .superRefine((j, ctx) => {
    // the server sums ciphertexts as FedAvg's running mean, in memory: no other server step can run on them
    const he = heFilterIndex(j.filters);
    if (he < 0) return;
    j.workflows.forEach((w, i) => {
      const why =
        w.type !== 'fedavg'
          ? (HE_REFUSED[w.type] ?? `${w.type} needs the plain model on the server`)
          : w.offload
            ? 'the encrypted sum is kept in memory: set offload: false'
            : w.aggregation.rule !== 'mean'
              ? `aggregation ${w.aggregation.rule} needs the plain values on the server: use {rule: mean}`
              : null;
      if (why)
        ctx.addIssue({
          code: 'custom',
          path: ['workflows', i],
          message: `filters.${he} (he) works with the fedavg workflow only (the server sums ciphertexts): ${why}`,
        });
    });
  });
export type JobConfig = z.infer<typeof JobConfigSchema>;

export const JOB_CONFIG_FILES = ['job.yaml', 'job.yml', 'job.json'] as const;

export class JobConfigError extends Error {
  override readonly name = 'JobConfigError';
}

/** Finds, parses and validates a job folder's config. Errors name the file and the field. */
export function readJobConfig(jobDir: string): { config: JobConfig; file: string } {
  const dir = resolve(jobDir);
  if (!existsSync(dir)) throw new JobConfigError(`job folder ${dir} does not exist`);
  const name = JOB_CONFIG_FILES.find((f) => existsSync(join(dir, f)));
  if (!name) throw new JobConfigError(`job folder ${dir} has no config file: create one of ${JOB_CONFIG_FILES.join(', ')}`);
  const file = join(dir, name);
  const text = readFileSync(file, 'utf8');
  let raw: unknown;
  try {
    raw = name.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new JobConfigError(`${file}: not valid ${name.endsWith('.json') ? 'JSON' : 'YAML'}: ${(e as Error).message}`);
  }
  return { config: parseJobConfig(raw, file), file };
}

export function parseJobConfig(raw: unknown, file = '<job config>'): JobConfig {
  const r = JobConfigSchema.safeParse(raw);
  if (!r.success) {
    throw new JobConfigError(`${file}: invalid job config\n${zodIssueLines(r.error)}`);
  }
  return r.data;
}
