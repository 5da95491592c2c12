/**
 * A site's own privacy policy (its startup kit, `privacy` in fed_client.json, from project.yml):
 * filters the site applies to every result it sends, after the job's own, so no job can remove
 * or weaken them. A job whose result filters ask for less than the policy (quantization with more
 * bits than the policy allows) is refused by the site with the reason, rather than silently run
 * with other settings than its owner expects.
 */
import { z } from 'zod';
import {
  DpGaussianSpecSchema,
  ExcludeSpecSchema,
  type FilterSpec,
  PercentilePrivacySpecSchema,
  QuantizeSpecSchema,
  SvtPrivacySpecSchema,
  heFilterIndex,
} from './spec.ts';

const PolicyFilterSchema = z.discriminatedUnion(
  'type',
  [QuantizeSpecSchema, ExcludeSpecSchema, DpGaussianSpecSchema, PercentilePrivacySpecSchema, SvtPrivacySpecSchema],
  {
    error: (iss) =>
      iss.code === 'invalid_union'
        ? 'a privacy policy takes the built-in filters quantize, exclude, dp_gaussian, percentile_privacy, svt_privacy'
        : undefined,
  },
);

export const PrivacyPolicySchema = z.strictObject({
  /** applied to every result this site sends, whatever the job says */
  filters: z
    .array(PolicyFilterSchema)
    .min(1)
    .superRefine((fs, ctx) =>
      fs.forEach((f, i) => {
        if (f.direction === 'task')
          ctx.addIssue({
            code: 'custom',
            path: [i, 'direction'],
            message: "a site's policy filters what it sends: results (leave direction out)",
          });
      }),
    ),
});
export type PrivacyPolicy = z.infer<typeof PrivacyPolicySchema>;

/** Policy filters act on results only, whatever their direction says. */
export function policyFilters(policy: PrivacyPolicy | undefined): FilterSpec[] {
  return (policy?.filters ?? []).map((f): FilterSpec =>
    f.type === 'quantize' || f.type === 'exclude' ? { ...f, direction: 'result' as const } : f,
  );
}

/**
 * Why `site` refuses a job with these filters under its policy, or null when it runs it. Refused:
 * result quantization with more bits than the policy's, and an he job at a site with any policy
 * (an he result is the encrypted FULL model of every float tensor: ciphertexts do not quantize, an
 * excluded tensor or a DP update would make the server's sum fail every round, so the policy
 * could not be applied as written).
 */
export function policyRefusal(site: string, jobFilters: readonly FilterSpec[], policy: PrivacyPolicy | undefined): string | null {
  if (!policy) return null;
  const he = heFilterIndex(jobFilters);
  if (he >= 0) {
    const p = policy.filters[0]!;
    return `${site}'s privacy policy (filters.0: ${p.type}) cannot apply to the job's filters.${he} (he), which sends the encrypted full model of every float tensor: this site runs no he jobs while its policy holds`;
  }
  for (const p of policy.filters) {
    if (p.type !== 'quantize') continue;
    for (const [i, f] of jobFilters.entries()) {
      if (f.type !== 'quantize' || f.direction === 'task' || f.bits <= p.bits) continue;
      if (p.tasks && f.tasks && !f.tasks.some((t) => p.tasks!.includes(t))) continue;
      return `${site}'s privacy policy sends results quantized to ${p.bits} bits at most; the job's filters.${i} asks for ${f.bits} bits: lower its bits to ${p.bits} or leave the quantize filter out`;
    }
  }
  return null;
}
