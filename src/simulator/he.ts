/**
 * The simulator's HE keys (jobs with the he filter): made for each run, the sites' context (with
 * the secret key) in <workspace>/he/he_context.json for the site threads and workers to load,
 * the server's (public only) kept in memory. A deployment gets them from provisioning instead.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HE_CONTEXT_FILE, HeContext, generateHeKeys, heContextFromFile } from '../filters/he-context.ts';
import { heFilterIndex } from '../filters/spec.ts';
import type { Job } from '../runtime/job.ts';

const sitePath = (workspace: string): string => join(workspace, 'he', HE_CONTEXT_FILE);

/** For a job with the he filter: a fresh key set, the server's context returned. */
export async function prepareSimulatedHe(job: Job, workspace: string): Promise<HeContext | undefined> {
  if (heFilterIndex(job.config.filters) < 0) return undefined;
  const keys = await generateHeKeys();
  mkdirSync(join(workspace, 'he'), { recursive: true, mode: 0o700 });
  writeFileSync(sitePath(workspace), `${JSON.stringify(keys.site)}\n`, { mode: 0o600 });
  return HeContext.load(keys.server);
}

/** A simulated site's context, written by prepareSimulatedHe. */
export function simulatedSiteHe(job: Job, workspace: string): Promise<HeContext> | undefined {
  return heFilterIndex(job.config.filters) < 0 ? undefined : heContextFromFile(sitePath(workspace));
}
