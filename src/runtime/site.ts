/**
 * One client site: a trainer host behind a ClientRunner on a link. Used by the
 * simulator (in the main thread or a worker) and by the real client process.
 */
import { mkdirSync } from 'node:fs';
import type { TrainerHost } from '../client/api.ts';
import type { ChannelOptions } from '../streaming/index.ts';
import type { Link } from '../transport/link.ts';
import type { Logger } from '../util/log.ts';
import { join } from 'node:path';
import { ClientRunner, type Executor, TASKS_DIR, trainerExecutor } from './executor.ts';
import { SWARM_CONCURRENT_TASKS, SWARM_DIR, swarmExecutor } from './swarm-site.ts';
import type { FilterChain } from '../filters/chain.ts';

export interface SiteOptions {
  site: string;
  jobId: string;
  workspace: string;
  host: TrainerHost;
  log?: Logger;
  /** how the trainer gets models: tensors in memory (default) or a safetensors file */
  params?: 'memory' | 'file';
  /** options of the site's channel to the server (e.g. resume with a redial) */
  channel?: ChannelOptions;
  /** the job's filters and the site's privacy policy (runtime/filters.ts loadJobFilters) */
  filters?: FilterChain;
}

/** A site workspace's folder of the filters' temporary files (the privacy filters' spooled models). */
export const FILTER_SPOOL_DIR = 'filter-spool';

/**
 * The folders of a site's job workspace that hold only Flotilla's own per-task files: what a job's
 * end and a restarted site remove (src/deploy/site-scratch.ts). Everything else there (log.jsonl,
 * what the trainer writes) is kept.
 */
export const SITE_SCRATCH_DIRS: readonly string[] = [TASKS_DIR, SWARM_DIR, FILTER_SPOOL_DIR];

/** Runs a site until the server ends the job; returns the reason. The trainer is stopped in all cases. */
export async function runSite(link: Link, opts: SiteOptions): Promise<string> {
  mkdirSync(opts.workspace, { recursive: true });
  let runner: ClientRunner | null = null;
  // Start the trainer (for a script: spawn it and wait for its hello) while registering;
  // if it cannot start, every task fails with the reason instead of the site never showing up.
  const started = opts.host
    .start({ siteName: opts.site, jobId: opts.jobId, workspace: opts.workspace, onMetric: (m) => runner?.metric(m) })
    .then(
      () => null,
      (e: Error) => e,
    );
  const inner = trainerExecutor(opts.host, { params: opts.params ?? 'memory', workspace: opts.workspace });
  const executor: Executor = {
    // a swarm job's round aggregator runs these on the site, beside its trainer (swarm-site.ts)
    ...swarmExecutor({ workspace: opts.workspace }),
    '*': async (task, signal) => {
      const err = await started;
      if (err) throw new Error(`trainer could not start: ${err.message}`);
      return inner['*']!(task, signal);
    },
  };
  runner = new ClientRunner(link, {
    site: opts.site,
    executor,
    concurrentTasks: SWARM_CONCURRENT_TASKS,
    ...(opts.log && { log: opts.log }),
    ...(opts.channel && { channel: opts.channel }),
    ...(opts.filters && { filters: opts.filters, filterScratchDir: join(opts.workspace, FILTER_SPOOL_DIR) }),
  });
  try {
    return await runner.run();
  } finally {
    if ((await started) === null) await opts.host.stop().catch(() => undefined);
    runner.close();
    await opts.filters?.close();
  }
}
