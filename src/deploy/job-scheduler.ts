/**
 * The federation server's job scheduler: takes the oldest queued job once enough sites are
 * connected, deploys it to every live site, runs its workflows on a ServerRuntime fed by the job's
 * own connections, and records the outcome. One job at a time. A running job is cancelled through
 * its AbortController: an admin's abort, a site that cannot run it and the server's shutdown each
 * abort it with a typed reason, which decides the state it ends in.
 */
import { trackLogged, trackRound } from '../tracking/record.ts';
import { startJobExporters } from '../tracking/job-exporters.ts';
import { join } from 'node:path';
import { ServerRuntime } from '../runtime/controller.ts';
import { loadInitialModel, loadJob } from '../runtime/job.ts';
import { loadJobFilters } from '../runtime/filters.ts';
import { heFilterIndex } from '../filters/spec.ts';
import { serverHeContext } from './he-keys.ts';
import { ServerWorkspace } from '../runtime/workspace.ts';
import type { Link, ServerTransport } from '../transport/link.ts';
import type { ConnectInfo, PeerIdentity } from '../transport/peer.ts';
import { unlessAborted } from '../util/abort.ts';
import { AsyncQueue } from '../util/async-queue.ts';
import { type Logger, fileLogger } from '../util/log.ts';
import { readProgress } from '../workflows/progress.ts';
import { runWorkflows } from '../workflows/run-job.ts';
import { type Telemetry, totalRounds } from '../dashboard/telemetry.ts';
import type { JobSummary } from './admin-commands.ts';
import { type JobFile, listJobFiles } from './job-bundle.ts';
import { encodeJobStream } from './job-stream.ts';
import type { JobRecord, JobStore } from './job-store.ts';
import type { ServerToSite } from './session.ts';
import type { SessionRegistry } from './session-registry.ts';

/** The links of one job's calls, handed to that job's ServerRuntime. */
class JobHub implements ServerTransport {
  private readonly q = new AsyncQueue<Link>();
  push(l: Link): void {
    if (this.q.isEnded) l.close('job is over');
    else this.q.push(l);
  }
  accept(): AsyncIterable<Link> {
    return this.q.drain();
  }
  async close(): Promise<void> {
    this.q.end();
  }
}

/** A job stopped on purpose (admin abort, server shutdown): it ends ABORTED, not FAILED. */
export class JobAbortedError extends Error {
  override readonly name = 'JobAbortedError';
}

/** A site reported that it could not run the job: it ends FAILED with the site's error. */
export class SiteJobError extends Error {
  override readonly name = 'SiteJobError';
  constructor(
    readonly site: string,
    readonly error: string,
  ) {
    super(`site ${site} could not run the job: ${error}`);
  }
}

interface RunningJob {
  id: string;
  hub: JobHub;
  sites: readonly string[];
  /** the session (by its connectedAt) each site was last given the job on: a new session gets it again (rejoin) */
  deployedTo: Map<string, string>;
  /** the packed job folder, once deployed */
  /** the job folder's files, streamed to each site from disk (job-stream.ts) */
  bundle: JobFile[] | null;
  abort: AbortController;
  done: Promise<void>;
}

export interface JobSchedulerOptions {
  store: JobStore;
  /** the job folders: <jobsDir>/<id>/app (as submitted) and <id>/workspace (results) */
  jobsDir: string;
  sessions: SessionRegistry;
  log: Logger;
  /** how long a started job waits for every deployed site to join it */
  siteJoinTimeoutMs?: number;
  /** fed with each job's transfers, logged metrics and rounds (Prometheus, the dashboard) */
  telemetry?: Telemetry;
  /** an MLflow tracking server every job's tracked rows are exported to (docs/tracking.md) */
  mlflowUri?: string;
  /** the server's startup folder: its he_context.json (public key only) for jobs with the he filter */
  kitStartup?: string;
}

export class JobScheduler {
  private readonly running = new Map<string, RunningJob>();
  private stopped = false;

  constructor(private readonly opts: JobSchedulerOptions) {}

  jobDir(id: string): string {
    return join(this.opts.jobsDir, id);
  }

  /** Starts the oldest queued job once enough sites are connected. Safe to call at any time. */
  schedule(): void {
    if (this.stopped) return;
    for (const rj of this.running.values()) this.redeploy(rj);
    if (this.running.size > 0) return;
    const { store, sessions } = this.opts;
    const next = store.queued()[0];
    if (!next) return;
    let minClients: number;
    let heartbeatTimeoutSeconds: number | undefined;
    try {
      ({ minClients, heartbeatTimeoutSeconds } = loadJob(join(this.jobDir(next.id), 'app')).config);
    } catch (e) {
      store.transition(next.id, 'FAILED', `job folder unreadable: ${(e as Error).message}`);
      setImmediate(() => this.schedule());
      return;
    }
    if (sessions.liveSites().length < minClients) return; // a site connecting (or resuming) calls schedule() again
    this.start(next, (heartbeatTimeoutSeconds ?? sessions.heartbeatTimeoutSeconds) * 1000);
  }

  /** Why a queued job has not started yet, in words; null when it is not queued. */
  waitingReason(jobId: string): string | null {
    const { store, sessions } = this.opts;
    const queued = store.queued();
    const at = queued.findIndex((j) => j.id === jobId);
    if (at < 0) return null;
    const running = [...this.running.keys()];
    if (running.length > 0) return `queued behind running job ${running.join(', ')}`;
    if (at > 0) return `queued behind ${queued[0]!.id}`;
    let minClients: number;
    try {
      ({ minClients } = loadJob(join(this.jobDir(jobId), 'app')).config);
    } catch {
      return null;
    }
    const live = sessions.liveSites();
    if (live.length >= minClients) return 'starting';
    return `waiting for ${minClients} sites, ${live.length} connected${live.length ? `: ${live.join(', ')}` : ''}`;
  }

  /** The running jobs deployed to a site. */
  runningOn(site: string): string[] {
    return [...this.running.values()].filter((j) => j.sites.includes(site)).map((j) => j.id);
  }

  /** A running job's progress (rounds done of total, the current round's results), when known. */
  progress(jobId: string): ReturnType<Telemetry['progress']> {
    return this.running.has(jobId) ? (this.opts.telemetry?.progress(jobId) ?? null) : null;
  }

  /** A job connection (gRPC call or data plane): routed to its running job, or refused with the reason. */
  route(link: Link & { resumeId: string | null }, peer: PeerIdentity, info: ConnectInfo): string | null {
    const job = this.running.get(info.jobId ?? '');
    if (!job) return `no running job ${info.jobId}`;
    if (!job.sites.includes(peer.name)) return `job ${info.jobId} was not deployed to ${peer.name}`;
    link.resumeId = info.channelId;
    job.hub.push(link);
    return null;
  }

  /** Aborts a running job; false when it is not running here. */
  abort(jobId: string, reason: string): boolean {
    const j = this.running.get(jobId);
    if (!j) return false;
    j.abort.abort(new JobAbortedError(reason));
    return true;
  }

  /** A site reported that it cannot run a job: the job fails (when the site is one of its sites). */
  siteFailed(jobId: string, site: string, error: string): void {
    const j = this.running.get(jobId);
    if (j?.sites.includes(site)) j.abort.abort(new SiteJobError(site, error));
  }

  /** Aborts every running job and waits until each has recorded its end. */
  async stop(reason: string): Promise<void> {
    this.stopped = true;
    const runners = [...this.running.entries()].map(([id, j]) => {
      j.abort.abort(new JobAbortedError(reason));
      this.opts.log.warn({ job: id }, 'job stopped by server shutdown');
      return j.done;
    });
    await Promise.allSettled(runners);
  }

  private start(rec: JobRecord, heartbeatTimeoutMs: number): void {
    const sites = this.opts.sessions.liveSites();
    const rj: RunningJob = {
      id: rec.id,
      hub: new JobHub(),
      sites,
      deployedTo: new Map(),
      bundle: null,
      abort: new AbortController(),
      done: Promise.resolve(),
    };
    this.running.set(rec.id, rj);
    rj.done = this.run(rec, rj, sites, heartbeatTimeoutMs).finally(() => {
      this.running.delete(rec.id);
      setImmediate(() => this.schedule());
    });
  }

  private deploy(rj: RunningJob, site: string): Promise<void> {
    const m = { type: 'deploy', jobId: rj.id, siteIndex: rj.sites.indexOf(site), numSites: rj.sites.length } satisfies ServerToSite;
    return this.opts.sessions.send(site, m, encodeJobStream(rj.bundle!));
  }

  /**
   * Rejoin: a site of a running job that connected with a new session (it restarted, or lost its
   * session for longer than resume covers) is given the job again; the job's runtime replaces its
   * old connection when it registers, and the next round's broadcast includes it.
   */
  private redeploy(rj: RunningJob): void {
    if (rj.bundle === null || rj.abort.signal.aborted) return;
    for (const s of this.opts.sessions.list()) {
      if (!rj.sites.includes(s.site) || rj.deployedTo.get(s.site) === s.connectedAt) continue;
      rj.deployedTo.set(s.site, s.connectedAt);
      this.opts.log.info({ job: rj.id, site: s.site }, 'site reconnected: the running job is deployed to it again');
      this.deploy(rj, s.site).catch((e: Error) => this.opts.log.warn({ job: rj.id, site: s.site, err: e.message }, 'redeploy failed'));
    }
  }

  private async run(rec: JobRecord, rj: RunningJob, sites: string[], heartbeatTimeoutMs: number): Promise<void> {
    const { store, sessions } = this.opts;
    const dir = this.jobDir(rec.id);
    const sws = new ServerWorkspace(join(dir, 'workspace'));
    const log = fileLogger(join(sws.serverDir, 'log.jsonl'), 'server');
    const tm = this.opts.telemetry;
    const runtime = new ServerRuntime(rj.hub, {
      jobId: rec.id,
      log,
      heartbeatTimeoutMs,
      onMetric: (m) => {
        sws.appendMetrics({ type: 'metric', ...m });
        trackLogged(store.tracking, rec.id, m);
        tm?.metricLogged(rec.id, m);
      },
      ...(tm && { channel: { onTransfer: (t) => tm.transfer(rec.id, t) } }),
    });
    // a job the server restarted under goes on from its last completed round (requeue cleared this);
    // what its sites logged after that round is dropped: the round runs again and logs it again
    const resume = readProgress(sws.serverDir);
    // (no progress: no round completed, none of its rows count; a progress of an older version has no mark)
    const mark = resume ? resume.trackedId : 0;
    const stale = mark === undefined ? [] : store.tracking.deleteAfter(rec.id, mark);
    // TensorBoard runs in the job's server folder (downloaded with its results), MLflow if configured;
    // resumed, both go on from what the stopped server exported
    const exporters = startJobExporters({
      store: store.tracking,
      jobId: rec.id,
      jobName: rec.name,
      serverDir: sws.serverDir,
      mlflowUri: this.opts.mlflowUri,
      resumed: { stale: new Set(stale.map((r) => r.site)) },
      log,
    });
    let exported = false;
    const signal = rj.abort.signal;
    store.transition(rec.id, 'RUNNING', `deployed to ${sites.join(', ')}`, { sites });
    this.opts.log.info({ job: rec.id, sites }, 'job started');
    const started = Date.now();
    runtime.start();
    try {
      const job = loadJob(join(dir, 'app'));
      tm?.jobStarted(rec.id, job.config.name, totalRounds(job.config.workflows));
      runtime.limitResults(job.config.maxResultBytes);
      runtime.useFilters(await loadJobFilters(job));
      // a job with the he filter: the server sums ciphertexts with its kit's public context
      const he = this.opts.kitStartup ? await serverHeContext(this.opts.kitStartup, job.config.filters) : undefined;
      if (!he && heFilterIndex(job.config.filters) >= 0)
        throw new Error('the he filter needs a provisioned server (its kit holds the HE context)');
      // loaded before anything is deployed: a bad model fails the job at once
      const initial = await loadInitialModel(job);
      // the server's limit was enforced at submit: the folder is streamed as it is
      rj.bundle = listJobFiles(join(dir, 'app'), { maxBytes: Number.POSITIVE_INFINITY }).files;
      const connected = new Map(sessions.list().map((s) => [s.site, s.connectedAt]));
      const deployments = sites.map((site) => {
        rj.deployedTo.set(site, connected.get(site) ?? '');
        return this.deploy(rj, site);
      });
      await unlessAborted(Promise.all(deployments), signal);
      await unlessAborted(runtime.waitForSites(sites.length, this.opts.siteJoinTimeoutMs ?? 120_000), signal);
      if (resume)
        log.info(
          { job: rec.id, workflow: resume.index, lastRound: resume.round, rounds: resume.rounds.length },
          'job resumed from its last completed round',
        );
      const outcome = await unlessAborted(
        runWorkflows(
          job,
          initial,
          {
            controller: runtime,
            workspace: sws,
            log,
            signal,
            ...(he && { he }),
            onRound: (r) => {
              trackRound(store.tracking, rec.id, r);
              // on disk before the progress that says the round is done
              store.tracking.flush();
              tm?.roundCompleted(rec.id, r);
            },
            trackingMark: () => store.tracking.lastId(),
            ...(tm && { onProgress: (p) => tm.roundProgress(rec.id, p) }),
          },
          false,
          resume,
        ),
        signal,
      );
      const summary: JobSummary = {
        jobId: rec.id,
        job: job.config.name,
        sites,
        rounds: outcome.rounds,
        crossSite: outcome.crossSite,
        seconds: (Date.now() - started) / 1000,
      };
      await sws.writeJson('summary.json', summary);
      // every row exported and the runs finished before the job reads FINISHED (a reader may go look)
      exported = true;
      await exporters.close('FINISHED');
      store.transition(rec.id, 'FINISHED', `${outcome.rounds.length} rounds on ${sites.length} sites`, { result: summary });
      this.opts.log.info({ job: rec.id }, 'job finished');
    } catch (e) {
      const cause = signal.aborted ? (signal.reason as Error) : (e as Error);
      const aborted = cause instanceof JobAbortedError;
      // a job the server's shutdown stops stays RUNNING in the store: the next start marks it ABORTED_BY_RESTART
      if (!this.stopped) store.transition(rec.id, aborted ? 'ABORTED' : 'FAILED', cause.message);
      this.opts.log.warn({ job: rec.id, detail: cause.message }, aborted ? 'job aborted' : 'job failed');
    } finally {
      store.tracking.flush();
      // stopped by the server's shutdown: KILLED (MLflow's word), set RUNNING again if a restart resumes the job
      if (!exported) await exporters.close(this.stopped ? 'KILLED' : 'FAILED');
      await runtime.end(signal.aborted ? (signal.reason as Error).message : 'job finished').catch(() => undefined);
      await runtime.close().catch(() => undefined);
      tm?.jobEnded(rec.id);
      log.flush?.();
    }
  }
}
