/** A simulator worker thread: hosts some of the sites, each on its own MessagePort link to the server. */
import { join } from 'node:path';
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import { createTrainerHost, executorSpecFor, loadJob } from '../runtime/job.ts';
import { runSite } from '../runtime/site.ts';
import { MessagePortLink } from '../transport/in-memory.ts';
import { fileLogger } from '../util/log.ts';

export interface WorkerInput {
  entry: string;
  jobDir: string;
  jobId: string;
  workspace: string;
  numSites: number;
  sites: { name: string; index: number; port: MessagePort }[];
}

const input = workerData as WorkerInput;
const job = loadJob(input.jobDir);

const results = await Promise.allSettled(
  input.sites.map(async (s) => {
    const dir = join(input.workspace, s.name);
    const log = fileLogger(join(dir, 'log.jsonl'), s.name);
    const host = await createTrainerHost(job, s.name, s.index, input.numSites, dir, log);
    return runSite(new MessagePortLink('server', s.port), { site: s.name, jobId: input.jobId, workspace: dir, host, log, params: executorSpecFor(job, s.name).params });
  }),
);
const errors = results.flatMap((r, i) => (r.status === 'rejected' ? [`${input.sites[i]!.name}: ${(r.reason as Error).message}`] : []));
parentPort!.postMessage({ type: 'done', errors });
