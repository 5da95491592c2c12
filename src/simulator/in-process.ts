/**
 * Programmatic simulation with trainer functions (examples, experiments,
 * tests): the same runtime as `flotilla simulate`, every site in this thread.
 */
import type { FilterChain } from '../filters/chain.ts';
import { randomUUID } from 'node:crypto';
import { join, resolve } from 'node:path';
import type { Trainer, TrainerHost } from '../client/api.ts';
import { InProcessTrainerHost } from '../client/host/in-process-host.ts';
import { ServerRuntime } from '../runtime/controller.ts';
import { runSite } from '../runtime/site.ts';
import { ServerWorkspace } from '../runtime/workspace.ts';
import { InMemoryHub } from '../transport/in-memory.ts';
import { type Logger, fileLogger } from '../util/log.ts';
import type { RoundSummary, WorkflowContext } from '../workflows/workflow.ts';

/** A site running a trainer function in this thread, or any trainer host (e.g. an ex-process Python script). */
export type InProcessSite = { name: string; trainer: Trainer } | { name: string; host: TrainerHost };

/**
 * Programmatic simulation with trainer functions (examples and experiments):
 * the same runtime, all sites in this thread.
 */
export async function simulateInProcess<R extends object>(opts: {
  workflow: { readonly name: string; run(ctx: WorkflowContext): Promise<R> };
  sites: InProcessSite[];
  workspace: string;
  onRound?: (s: RoundSummary) => void;
  log?: Logger;
  /** the job's filters, on the server and every site (each site gets its own chain: a filter keeps per-site state) */
  filters?: () => FilterChain;
}): Promise<R & { jobId: string }> {
  const workspace = resolve(opts.workspace);
  const jobId = `${opts.workflow.name}-${randomUUID().slice(0, 8)}`;
  const log = opts.log ?? fileLogger(join(workspace, 'server', 'log.jsonl'), 'server');
  const hub = new InMemoryHub();
  const sws = new ServerWorkspace(workspace);
  const server = new ServerRuntime(hub, {
    jobId,
    log,
    onMetric: (m) => sws.appendMetrics({ type: 'metric', ...m }),
    ...(opts.filters && { filters: opts.filters() }),
  });
  server.start();
  const clients = Promise.all(
    opts.sites.map((s) =>
      runSite(hub.connect(s.name), {
        site: s.name,
        jobId,
        workspace: join(workspace, s.name),
        host: 'host' in s ? s.host : new InProcessTrainerHost(s.trainer),
        log,
        ...(opts.filters && { filters: opts.filters() }),
      }),
    ),
  );
  try {
    await server.waitForSites(opts.sites.length, 60_000);
    const r = await opts.workflow.run({ controller: server, workspace: sws, log, ...(opts.onRound && { onRound: opts.onRound }) });
    return { ...r, jobId };
  } finally {
    await server.end('job finished');
    await clients.catch(() => undefined);
    await server.close();
  }
}
