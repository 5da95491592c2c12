/**
 * job.yaml `filters:` and a site's privacy policy: one entry per filter, validated strictly, each
 * error naming its field (`filters.0.bits: must be 16, 8 or 4`).
 */
import { z } from 'zod';
import { JsonValueSchema } from '../core/fl-model.ts';
import type { QuantFormat } from './codecs.ts';
import { NamePatternSchema } from './patterns.ts';

const RelPath = z
  .string()
  .min(1)
  .refine((p) => !p.startsWith('/') && !p.split(/[\\/]/).includes('..'), 'must be a path inside the job folder (relative, no "..")');

/** Which way a filter acts: on tasks (server → site), on results (site → server), or both. */
const DirectionSpec = z.enum(['task', 'result', 'both']);
/** Only these tasks (default: every task). */
const Tasks = z.array(z.string().min(1)).min(1).optional();
const Patterns = z.array(NamePatternSchema).min(1);

const isPow2 = (n: number): boolean => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;

export const QuantizeSpecSchema = z
  .strictObject({
    type: z.literal('quantize'),
    /** 16: float16 or bfloat16; 8: blockwise int8; 4: nf4 or fp4 (each with a float32 absmax per block) */
    bits: z.number().refine((b) => b === 16 || b === 8 || b === 4, 'must be 16, 8 or 4'),
    format: z.enum(['float16', 'bfloat16', 'blockwise', 'nf4', 'fp4']).optional(),
    /** elements per block (8- and 4-bit): a power of two, 16 to 65536; default 256 (8-bit), 64 (4-bit) */
    blockSize: z
      .number()
      .refine(isPow2, 'must be a power of two')
      .refine((n) => n >= 16 && n <= 65536, 'must be between 16 and 65536')
      .optional(),
    /** tensors sent as they are (glob or /regex/) */
    exclude: Patterns.optional(),
    direction: DirectionSpec.default('both'),
    tasks: Tasks,
  })
  .superRefine((q, ctx) => {
    const allowed = q.bits === 16 ? ['float16', 'bfloat16'] : q.bits === 8 ? ['blockwise'] : ['nf4', 'fp4'];
    if (q.format !== undefined && !allowed.includes(q.format))
      ctx.addIssue({ code: 'custom', path: ['format'], message: `${q.bits} bits take ${allowed.join(' or ')}, not ${q.format}` });
    if (q.bits === 16 && q.blockSize !== undefined)
      ctx.addIssue({ code: 'custom', path: ['blockSize'], message: '16-bit floats have no blocks: leave blockSize out' });
  });
export type QuantizeSpec = z.infer<typeof QuantizeSpecSchema>;

export const ExcludeSpecSchema = z.strictObject({
  type: z.literal('exclude'),
  /** tensor names that never leave the sender (glob or /regex/) */
  patterns: Patterns,
  direction: DirectionSpec.default('result'),
  tasks: Tasks,
});

/** A filter module of the job: exports (as `export`, default `default`) defineFilter({ name, schema, create }). */
export const CustomFilterSpecSchema = z.strictObject({
  type: z.literal('custom'),
  module: RelPath,
  export: z.string().min(1).default('default'),
  args: z.record(z.string(), JsonValueSchema).default({}),
  direction: DirectionSpec,
  tasks: Tasks,
});

/** Privacy filters act on a site's results (and keep the task's model to compute the update); default: train tasks. */
const ResultOnly = z.literal('result', { error: 'privacy filters act on results: leave direction out' }).default('result');
const Positive = z.number().positive('must be > 0');

export const DpGaussianSpecSchema = z
  .strictObject({
    type: z.literal('dp_gaussian'),
    /** L2 norm bound of each site's update (all float tensors together) */
    clip: Positive,
    /** σ: the noise's standard deviation is σ · clip; or give epsilon and rounds */
    noiseMultiplier: Positive.optional(),
    /** the ε to reach after `rounds` releases at delta (the noise multiplier is derived) */
    epsilon: Positive.optional(),
    rounds: z.number().int().min(1).optional(),
    delta: z.number().gt(0, 'must be in (0, 1)').lt(1, 'must be in (0, 1)').default(1e-5),
    direction: ResultOnly,
    tasks: Tasks,
  })
  .superRefine((d, ctx) => {
    if ((d.noiseMultiplier === undefined) === (d.epsilon === undefined))
      ctx.addIssue({ code: 'custom', path: ['noiseMultiplier'], message: 'give either noiseMultiplier or epsilon (with rounds)' });
    if (d.epsilon !== undefined && d.rounds === undefined)
      ctx.addIssue({ code: 'custom', path: ['rounds'], message: 'epsilon needs the number of rounds it must last' });
  });
export const PercentilePrivacySpecSchema = z.strictObject({
  type: z.literal('percentile_privacy'),
  /** values of |update| below this percentile become 0 */
  percentile: z.number().min(0, 'must be in [0, 100]').max(100, 'must be in [0, 100]').default(10),
  /** the rest are clipped to [−gamma, gamma] */
  gamma: Positive.default(0.01),
  direction: ResultOnly,
  tasks: Tasks,
});
export const SvtPrivacySpecSchema = z.strictObject({
  type: z.literal('svt_privacy'),
  fraction: z.number().gt(0, 'must be in (0, 1]').max(1, 'must be in (0, 1]').default(0.1),
  epsilon: Positive.default(0.1),
  noiseVar: Positive.default(0.1),
  gamma: Positive.default(1e-5),
  tau: z.number().min(0).default(1e-6),
  direction: ResultOnly,
  tasks: Tasks,
});

/**
 * Homomorphic encryption (CKKS): each site encrypts its results with its kit's context and
 * decrypts the server's encrypted aggregate when a task brings it; the server sums ciphertexts
 * (FedAvg only). Keys come from provisioning (project.yml `homomorphicEncryption: true`).
 */
export const HeSpecSchema = z.strictObject({
  type: z.literal('he'),
  direction: z.literal('both', { error: 'he encrypts results and decrypts tasks: leave direction out' }).default('both'),
  tasks: Tasks,
});

export const FILTER_TYPES = ['quantize', 'exclude', 'dp_gaussian', 'percentile_privacy', 'svt_privacy', 'he', 'custom'] as const;

export const FilterSpecSchema = z.discriminatedUnion(
  'type',
  [
    QuantizeSpecSchema,
    ExcludeSpecSchema,
    DpGaussianSpecSchema,
    PercentilePrivacySpecSchema,
    SvtPrivacySpecSchema,
    HeSpecSchema,
    CustomFilterSpecSchema,
  ],
  {
    error: (iss) => (iss.code === 'invalid_union' ? `unknown filter type: use one of ${FILTER_TYPES.join(', ')}` : undefined),
  },
);
export type FilterSpec = z.infer<typeof FilterSpecSchema>;

/** Filters that cannot run with he: the server sums encrypted FULL models of every tensor. */
const NOT_WITH_HE = new Set(['quantize', 'exclude', 'dp_gaussian', 'percentile_privacy', 'svt_privacy']);

export const FilterListSchema = z
  .array(FilterSpecSchema)
  .max(64)
  .superRefine((fs, ctx) => {
    const he = fs.findIndex((f) => f.type === 'he');
    if (he < 0) return;
    fs.forEach((f, i) => {
      if (f.type === 'he' && i !== he)
        ctx.addIssue({ code: 'custom', path: [i, 'type'], message: `he is already filters.${he}: give it once` });
      if (NOT_WITH_HE.has(f.type))
        ctx.addIssue({
          code: 'custom',
          path: [i, 'type'],
          message: `${f.type} cannot run with he (filters.${he}): the server sums encrypted FULL models of all float tensors${f.type === 'quantize' ? '; ciphertexts do not quantize' : f.type === 'exclude' ? '' : `, and ${f.type} sends DIFF updates`}`,
        });
    });
  });

/** The index of the job's he filter, or -1. */
export function heFilterIndex(filters: readonly FilterSpec[]): number {
  return filters.findIndex((f) => f.type === 'he');
}

/** The codec and block size a quantize entry means. */
export function quantFormat(q: QuantizeSpec): { format: QuantFormat; blockSize: number } {
  if (q.bits === 16) return { format: q.format === 'bfloat16' ? 'bfloat16' : 'float16', blockSize: 0 };
  if (q.bits === 8) return { format: 'int8', blockSize: q.blockSize ?? 256 };
  return { format: q.format === 'fp4' ? 'fp4' : 'nf4', blockSize: q.blockSize ?? 64 };
}
