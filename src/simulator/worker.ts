/** A simulator worker thread: hosts some of the sites, each on its own MessagePort link to the server. */
import { join } from 'node:path';
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import { type SiteSettings, createTrainerHost, executorSpecFor, loadJob } from '../runtime/job.ts';
import { runSite } from '../runtime/site.ts';
import { loadJobFilters } from '../runtime/filters.ts';
import { simulatedSiteHe } from './he.ts';
import { MessagePortLink } from '../transport/in-memory.ts';
import { fileLogger } from '../util/log.ts';

export interface WorkerInput {
  entry: string;
  jobDir: string;
  jobId: string;
  workspace: string;
  numSites: number;
  sites: { name: string; index: number; port: MessagePort }[];
  settings: SiteSettings;
}

const input = workerData as WorkerInput;
const job = loadJob(input.jobDir);

/** What a worker tells the simulator: a site that failed (at once), then the end of all its sites. */
export type WorkerMessage = { type: 'site-failed'; site: string; error: string } | { type: 'done'; errors: string[] };

const post = (m: WorkerMessage): void => parentPort!.postMessage(m);
const results = await Promise.allSettled(
  input.sites
    .map(async (s) => {
      const dir = join(input.workspace, s.name);
      const log = fileLogger(join(dir, 'log.jsonl'), s.name);
      const host = await createTrainerHost(job, s.name, s.index, input.numSites, dir, log, input.settings);
      return runSite(new MessagePortLink('server', s.port), {
        site: s.name,
        jobId: input.jobId,
        workspace: dir,
        host,
        log,
        params: executorSpecFor(job, s.name).params,
        filters: await loadJobFilters(job, undefined, await simulatedSiteHe(job, input.workspace)),
      });
    })
    .map((p, i) =>
      p.catch((e: unknown) => {
        post({ type: 'site-failed', site: input.sites[i]!.name, error: (e as Error).message });
        throw e;
      }),
    ),
);
const errors = results.flatMap((r, i) => (r.status === 'rejected' ? [`${input.sites[i]!.name}: ${(r.reason as Error).message}`] : []));
post({ type: 'done', errors });
