/**
 * The site session: one long-lived call per connected site, separate from the
 * per-job calls. The site says hello and sends heartbeats; the server answers,
 * deploys jobs (the job folder travels as the message's payload stream) and
 * can ask the site process to shut down. Messages are validated both ways.
 */
import { z } from 'zod';

export const SESSION_PROTOCOL = 1;

const JobId = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$/);

export const SiteToServer = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('hello'), site: z.string().min(1).max(64), protocol: z.number().int() }),
  z.strictObject({ type: z.literal('heartbeat'), runningJobs: z.array(JobId).max(1000) }),
  z.strictObject({ type: z.literal('job_failed'), jobId: JobId, error: z.string().max(65536) }),
]);
export type SiteToServer = z.infer<typeof SiteToServer>;

export const ServerToSite = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('welcome'),
    site: z.string(),
    heartbeatSeconds: z.number().positive().max(86_400),
    /** where the site opens its job connections: the data plane's port, or null for the gRPC port */
    dataPort: z.number().int().min(1).max(65535).nullable().default(null),
  }),
  z.strictObject({ type: z.literal('refused'), reason: z.string() }),
  z.strictObject({ type: z.literal('deploy'), jobId: JobId, siteIndex: z.number().int().min(0), numSites: z.number().int().min(1) }),
  z.strictObject({ type: z.literal('shutdown'), reason: z.string() }),
]);
export type ServerToSite = z.infer<typeof ServerToSite>;

/** Sorts site names the way people number them (site-2 before site-10). */
export function naturalSort(names: Iterable<string>): string[] {
  return [...names].sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
}
