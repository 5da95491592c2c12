/**
 * The simulator: the real runtime with an in-process transport. The server
 * workflow runs in this thread; the N client sites run here too (threads = 0)
 * or spread over T worker threads, each site on its own link, so one job
 * folder runs unchanged in the simulator and in a real deployment.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { MessageChannel, Worker } from 'node:worker_threads';
import { type MetricEvent, ServerRuntime } from '../runtime/controller.ts';
import { type SiteSettings, createTrainerHost, executorSpecFor, loadInitialModel, loadJob } from '../runtime/job.ts';
import { type JobOutcome, runWorkflows } from '../workflows/run-job.ts';
import { runSite } from '../runtime/site.ts';
import { loadJobFilters } from '../runtime/filters.ts';
import { prepareSimulatedHe, simulatedSiteHe } from './he.ts';
import { ServerWorkspace } from '../runtime/workspace.ts';
import type { TransferProgress } from '../streaming/index.ts';
import { InMemoryHub, MessagePortLink } from '../transport/in-memory.ts';
import { unlessAborted } from '../util/abort.ts';
import { fileLogger } from '../util/log.ts';
import { TrackingStore, type TrackedRow, startJobExporters, tensorboardDir, trackLogged, trackRound } from '../tracking/index.ts';
import type { RoundSummary, WorkflowContext } from '../workflows/workflow.ts';
import type { WorkerInput, WorkerMessage } from './worker.ts';

export interface SimulateOptions {
  jobDir: string;
  /** number of client sites (named site-1 … site-N) or their names */
  clients: number | string[];
  /** worker threads for the clients; 0 runs them in this thread (default: min(N, 2)) */
  threads?: number;
  workspace: string;
  /** keep FedAvg's global model and running sum on disk */
  offload?: boolean;
  onRound?: (s: RoundSummary) => void;
  onProgress?: WorkflowContext['onProgress'];
  /** progress of model transfers between the server and the sites */
  onTransfer?: (t: TransferProgress) => void;
  /** each row tracking records (what the sites log, each round's metrics), as it is recorded */
  onTracked?: (row: TrackedRow) => void;
  /** record what the sites log in <workspace>/server/tracking.sqlite and TensorBoard runs in <workspace>/server/tensorboard (default true) */
  tracking?: boolean;
  /** also export to this MLflow tracking server (http://host:port) */
  mlflowUri?: string;
  /** the simulated sites' Python interpreter, `{python}` in script executors (FLOTILLA_PYTHON overrides it) */
  python?: string;
  /** values the sites log with flare.log() */
  onMetric?: (m: MetricEvent) => void;
  /** the run's job id and sites, once the job is loaded (the dashboard) */
  onStart?: (info: { jobId: string; name: string; sites: string[]; workflows: ReturnType<typeof loadJob>['config']['workflows'] }) => void;
  /** stops the run (the dashboard's abort): the workflows end with the signal's reason */
  signal?: AbortSignal;
}

export interface SimulationResult extends JobOutcome {
  jobId: string;
  workspace: string;
  seconds: number;
}

export function siteNames(clients: number | string[]): string[] {
  if (Array.isArray(clients)) return clients;
  if (!Number.isInteger(clients) || clients < 1) throw new Error(`--clients must be a positive integer, got ${clients}`);
  return Array.from({ length: clients }, (_, i) => `site-${i + 1}`);
}

/** Runs a job folder with N simulated clients. */
export async function simulate(opts: SimulateOptions): Promise<SimulationResult> {
  const started = Date.now();
  const job = loadJob(opts.jobDir);
  const sites = siteNames(opts.clients);
  if (sites.length < job.config.minClients)
    throw new Error(`job ${job.config.name} needs at least ${job.config.minClients} clients, --clients gave ${sites.length}`);
  const workspace = resolve(opts.workspace);
  mkdirSync(workspace, { recursive: true });
  const jobId = `${job.config.name}-${randomUUID().slice(0, 8)}`;
  const log = fileLogger(join(workspace, 'server', 'log.jsonl'), 'server');
  const threads = Math.min(opts.threads ?? Math.min(sites.length, 2), sites.length);
  const initial = await loadInitialModel(job);
  opts.onStart?.({ jobId, name: job.config.name, sites, workflows: job.config.workflows });
  const filters = await loadJobFilters(job);
  const he = await prepareSimulatedHe(job, workspace);

  const settings: SiteSettings = opts.python !== undefined ? { python: opts.python } : {};
  const hub = new InMemoryHub();
  const sws = new ServerWorkspace(workspace);
  const tracking = opts.tracking === false ? null : TrackingStore.open(trackingPath(workspace));
  // this simulation's TensorBoard runs replace the previous one's (the store keeps every job)
  if (tracking) rmSync(tensorboardDir(sws.serverDir), { recursive: true, force: true });
  const exporters = tracking
    ? startJobExporters({ store: tracking, jobId, jobName: job.config.name, serverDir: sws.serverDir, mlflowUri: opts.mlflowUri, log })
    : null;
  let succeeded = false;
  const unsubscribe = opts.onTracked && tracking ? tracking.subscribe(jobId, (rows) => rows.forEach((r) => opts.onTracked!(r))) : null;
  const server = new ServerRuntime(hub, {
    jobId,
    log,
    filters,
    onMetric: (m) => {
      sws.appendMetrics({ type: 'metric', ...m });
      if (tracking) trackLogged(tracking, jobId, m);
      opts.onMetric?.(m);
    },
    ...(opts.onTransfer && { channel: { onTransfer: opts.onTransfer } }),
  });
  server.start();

  const clientsDone =
    threads === 0
      ? runSitesHere(job, sites, hub, jobId, workspace, settings)
      : runSitesInWorkers(job.dir, sites, threads, hub, jobId, workspace, settings);
  // a client side that dies early must not leave the server waiting forever
  const clients: { error: Error | null } = { error: null };
  void clientsDone.catch((e: Error) => (clients.error = e));

  try {
    // like NVFlare's simulator: start once every simulated site is up, so round 1 sees all of them
    // ...but a site that cannot come up (its trainer module fails to load, say) fails the run now, with its error
    await Promise.race([waitForAll(server, sites.length, 120_000, clients), clientsDone.then(() => new Promise<never>(() => undefined))]);
    const running = runWorkflows(
      job,
      initial,
      {
        controller: server,
        workspace: sws,
        log,
        onRound: (r) => {
          if (tracking) trackRound(tracking, jobId, r);
          opts.onRound?.(r);
        },
        ...(opts.onProgress && { onProgress: opts.onProgress }),
        ...(opts.signal && { signal: opts.signal }),
        ...(he && { he }),
      },
      opts.offload ?? false,
    );
    // aborted, the run ends at once (the workflows see the signal too, between rounds)
    const outcome = await (opts.signal ? unlessAborted(running, opts.signal) : running);
    succeeded = true;
    const result: SimulationResult = { ...outcome, jobId, workspace, seconds: (Date.now() - started) / 1000 };
    await sws.writeJson('summary.json', {
      jobId,
      job: job.config.name,
      sites,
      rounds: outcome.rounds,
      crossSite: outcome.crossSite,
      seconds: result.seconds,
    });
    return result;
  } catch (e) {
    if (clients.error && clients.error === e) throw new Error(`a simulated site failed: ${clients.error.message}`);
    if (clients.error) throw new Error(`${(e as Error).message} (clients: ${clients.error.message})`);
    throw e;
  } finally {
    await server.end('job finished');
    await clientsDone.catch(() => undefined);
    await server.close();
    await exporters?.close(succeeded ? 'FINISHED' : 'FAILED');
    unsubscribe?.();
    tracking?.close();
  }
}

/** Where a simulation's tracking store is (the same tables as a server's jobs.sqlite). */
export function trackingPath(workspace: string): string {
  return join(workspace, 'server', 'tracking.sqlite');
}

/** waitForSites in 1 s slices, so a site that failed ends the wait (and leaves no long timer behind). */
async function waitForAll(server: ServerRuntime, n: number, timeoutMs: number, clients: { error: Error | null }): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (clients.error) throw clients.error;
    try {
      await server.waitForSites(n, Math.max(1, Math.min(1000, deadline - Date.now())));
      return;
    } catch (e) {
      if (Date.now() >= deadline) throw e;
    }
  }
}

async function runSitesHere(
  job: ReturnType<typeof loadJob>,
  sites: string[],
  hub: InMemoryHub,
  jobId: string,
  workspace: string,
  settings: SiteSettings,
): Promise<void> {
  await Promise.all(
    sites.map(async (site, i) => {
      const dir = join(workspace, site);
      const log = fileLogger(join(dir, 'log.jsonl'), site);
      const host = await createTrainerHost(job, site, i, sites.length, dir, log, settings);
      const filters = await loadJobFilters(job, undefined, await simulatedSiteHe(job, workspace));
      await runSite(hub.connect(site), { site, jobId, workspace: dir, host, log, params: executorSpecFor(job, site).params, filters });
    }),
  );
}

async function runSitesInWorkers(
  jobDir: string,
  sites: string[],
  threads: number,
  hub: InMemoryHub,
  jobId: string,
  workspace: string,
  settings: SiteSettings,
): Promise<void> {
  const groups: WorkerInput['sites'][] = Array.from({ length: threads }, () => []);
  const transfer: MessageChannel['port2'][][] = Array.from({ length: threads }, () => []);
  sites.forEach((name, index) => {
    const { port1, port2 } = new MessageChannel();
    hub.adopt(new MessagePortLink(name, port1));
    groups[index % threads]!.push({ name, index, port: port2 });
    transfer[index % threads]!.push(port2);
  });
  const entry = new URL(import.meta.url.endsWith('.ts') ? './worker.ts' : './worker.js', import.meta.url).href; // src (checkout) or dist (package)
  const workers: Worker[] = [];
  const running = Promise.all(
    groups.map(
      (group, t) =>
        new Promise<void>((resolvePromise, reject) => {
          const input: WorkerInput = { entry, jobDir, jobId, workspace, numSites: sites.length, sites: group, settings };
          const w = new Worker(new URL('./worker-boot.mjs', import.meta.url), { workerData: input, transferList: transfer[t]! });
          workers.push(w);
          w.on('message', (m: WorkerMessage) => {
            // a site that fails (its trainer cannot be created, say) fails the run at once: the
            // server would otherwise wait for it to connect
            if (m.type === 'site-failed') reject(new Error(`${m.site}: ${m.error}`));
            else if (m.errors.length) reject(new Error(m.errors.join('; ')));
            else resolvePromise();
          });
          w.on('error', reject);
          w.on('exit', (code) => (code === 0 ? resolvePromise() : reject(new Error(`client worker ${t} exited with code ${code}`))));
        }),
    ),
  );
  try {
    await running;
  } catch (e) {
    // a failed site fails the run: the other sites' workers would otherwise wait for tasks forever
    // and keep the process alive
    await Promise.all(workers.map((w) => w.terminate()));
    throw e;
  }
}
