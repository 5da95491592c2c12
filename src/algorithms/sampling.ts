/**
 * Client sampling (as Flower's fraction_fit / min_fit_clients): each round a
 * seeded subset of the connected sites gets the task. The choice depends only on
 * the seed, the round and the site names (each site ranked by a hash of
 * seed:round:name), not on the order sites connected in, so a resumed or
 * re-run job samples the same sites.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';

export const SamplingSchema = z
  .strictObject({
    /** fraction of the connected sites per round (rounded up) */
    fraction: z.number().gt(0).max(1).optional(),
    /** number of sites per round */
    count: z.number().int().min(1).optional(),
    /** never fewer than this many (the job's minClients is the floor) */
    min: z.number().int().min(1).default(1),
    seed: z.number().int().default(0),
  })
  .refine((s) => !(s.fraction !== undefined && s.count !== undefined), 'give fraction or count, not both');
export type Sampling = z.infer<typeof SamplingSchema>;
export type SamplingInput = z.input<typeof SamplingSchema>;

export class SamplingError extends Error {
  override readonly name = 'SamplingError';
}

/** How many of `available` sites a round uses. */
export function sampleSize(s: Sampling, available: number, minClients = 1): number {
  const floor = Math.max(s.min, minClients);
  const wanted = s.count ?? (s.fraction !== undefined ? Math.ceil(s.fraction * available - 1e-9) : available);
  const k = Math.min(available, Math.max(floor, wanted));
  if (k < floor) throw new SamplingError(`sampling needs at least ${floor} sites, ${available} are connected`);
  return k;
}

/** The sites of round `round`, sorted by name. */
export function sampleSites(available: readonly string[], s: Sampling, round: number, minClients = 1): string[] {
  const k = sampleSize(s, available.length, minClients);
  const rank = (site: string): string => createHash('sha256').update(`${s.seed}:${round}:${site}`).digest('hex');
  return [...new Set(available)]
    .map((site) => [rank(site), site] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .slice(0, k)
    .map(([, site]) => site)
    .sort();
}
