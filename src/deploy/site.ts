/**
 * The site daemon (what `flotilla client <kit>` runs): dials the server, keeps a session with
 * heartbeats (reconnecting with backoff when it drops), and runs every job the
 * server deploys: the job folder arrives over the session, the site's trainer
 * is built from it exactly as in the simulator, and the job runs over its own
 * connection through runSite(): a data plane connection (mutual TLS, lean framing)
 * when the server offers one in its welcome, else a gRPC call.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { ClientConfig, Kit } from '../provision/kit.ts';
import { createTrainerHost, executorSpecFor, loadJob } from '../runtime/job.ts';
import { describeZodError } from '../util/zod-error.ts';
import { runSite } from '../runtime/site.ts';
import { loadJobFilters } from '../runtime/filters.ts';
import { siteHeContext } from './he-keys.ts';
import { policyRefusal } from '../filters/policy.ts';
import { Channel, type Payload } from '../streaming/index.ts';
import { GrpcClient } from '../transport/grpc/client.ts';
import { FallbackDialer, dialerFor } from '../transport/dialer.ts';
import type { Link } from '../transport/link.ts';
import { type Logger, fileLogger, silentLogger } from '../util/log.ts';
import { BUNDLE_LIMITS } from './job-bundle.ts';
import { receiveJobStream } from './job-stream.ts';
import { allowJobImports } from '../runtime/job-imports.ts';
import { SESSION_PROTOCOL, ServerToSite } from './session.ts';
import { type Reclaimed, cleanJobScratch, cleanLeftovers, markJobDir } from './site-scratch.ts';
import { lockFolder } from '../util/process-identity.ts';

export interface FederationSiteOptions {
  kit: Kit<ClientConfig>;
  workspace: string;
  /** overrides the kit's server address (tests, benchmarks) */
  host?: string;
  port?: number;
  /**
   * where job connections go: a data plane port on the server's host (tests put a proxy there),
   * or null for the gRPC port whatever the server offers. Unset: what the server's welcome says.
   */
  dataPort?: number | null;
  log?: Logger;
  onConnected?: () => void;
  /** largest job folder accepted from the server (default: the kit's maxJobBytes, which provision copies from the server's) */
  maxJobBytes?: number;
  /** bytes that must stay free on the workspace's disk after a job folder or a payload is written (default: disk-space.ts) */
  minFreeBytes?: number;
  /** how long a dropped session tries to resume (same channel, new call) before starting over (default 30 s) */
  sessionResumeMs?: number;
}

export class FederationSite {
  readonly site: string;
  private readonly grpc: GrpcClient;
  private readonly log: Logger;
  private readonly jobsDir: string;
  private readonly jobs = new Map<string, Promise<void>>();
  private session: Channel | null = null;
  private stopping = false;
  private wake: (() => void) | null = null;
  /** the data plane port the server offered in its last welcome (null: jobs over gRPC) */
  private offeredDataPort: number | null = null;
  /** why the last session ended (diagnostics) */
  lastError: string | null = null;

  constructor(private readonly opts: FederationSiteOptions) {
    const { kit } = opts;
    this.site = kit.config.name;
    this.log = opts.log ?? silentLogger();
    this.jobsDir = join(resolve(opts.workspace), 'jobs');
    allowJobImports(this.jobsDir);
    this.grpc = new GrpcClient({
      host: opts.host ?? kit.config.server.host,
      port: opts.port ?? kit.config.server.port,
      serverName: kit.config.serverName,
      caPem: kit.caPem,
      certPem: kit.certPem,
      keyPem: kit.keyPem,
    });
  }

  /**
   * Runs until stop() or the server asks this site to shut down; returns the reason. The workspace
   * is locked (site.lock) meanwhile: a second process on it is refused, and what a killed
   * process left in its job folders is removed first (site-scratch.ts).
   */
  async run(): Promise<string> {
    const ws = resolve(this.opts.workspace);
    mkdirSync(ws, { recursive: true });
    const lock = lockFolder(join(ws, 'site.lock'), `the site workspace ${ws}`);
    try {
      if (lock.tookOver)
        this.log.warn(
          { holder: lock.tookOver },
          `took over the workspace lock of process ${lock.tookOver.pid}, which is no longer running`,
        );
      const left = cleanLeftovers(this.jobsDir);
      if (left.jobs.length > 0)
        this.log.info(
          { files: left.files, bytes: left.bytes, jobs: left.jobs },
          `removed ${left.files} task and job files (${left.bytes} bytes) a previous run of this site left in ${left.jobs.length} job folders`,
        );
      return await this.loop();
    } finally {
      lock.release();
    }
  }

  private async loop(): Promise<string> {
    let backoff = 500;
    while (!this.stopping) {
      const t0 = Date.now();
      try {
        await this.sessionOnce();
      } catch (e) {
        this.lastError = (e as Error).message;
        this.log.warn({ err: this.lastError }, 'session ended');
      }
      if (this.stopping) break;
      if (Date.now() - t0 > 30_000) backoff = 500;
      await new Promise<void>((r) => {
        const t = setTimeout(r, backoff);
        this.wake = () => {
          clearTimeout(t);
          r();
        };
      });
      backoff = Math.min(backoff * 2, 10_000);
    }
    await Promise.allSettled(this.jobs.values());
    this.grpc.close();
    return this.lastError ?? 'stopped';
  }

  stop(reason = 'stopped'): void {
    this.stopping = true;
    this.lastError = reason;
    this.session?.close(reason);
    this.wake?.();
  }

  private async sessionOnce(): Promise<void> {
    // A dropped connection resumes the same session over a new call (the channel id tells the
    // server which session it is); only if that fails within sessionResumeMs does run() start over.
    const info = { purpose: 'session' as const, jobId: null, channelId: randomBytes(12).toString('base64url') };
    const channel = new Channel(this.grpc.open(info), {
      onMalformed: (e) => this.log.warn({ err: e.detail }, 'malformed session message from server ignored'),
      resume: {
        timeoutMs: this.opts.sessionResumeMs ?? 30_000,
        redial: () => this.grpc.open(info),
        onLinkLost: (reason) => this.log.warn({ reason }, 'session connection lost; resuming'),
        onResumed: (r) => this.log.info({ seconds: +r.seconds.toFixed(3) }, 'session resumed'),
      },
    });
    this.session = channel;
    let heartbeat: NodeJS.Timeout | null = null;
    try {
      await channel.send({ type: 'hello', site: this.site, protocol: SESSION_PROTOCOL });
      for await (const env of channel.messages()) {
        const parsed = ServerToSite.safeParse(env.msg);
        if (!parsed.success) {
          env.payload?.cancel('malformed');
          this.log.warn({ err: describeZodError(parsed.error) }, 'malformed session message from server ignored');
          continue;
        }
        const m = parsed.data;
        switch (m.type) {
          case 'welcome':
            this.lastError = null;
            this.offeredDataPort = m.dataPort;
            heartbeat = setInterval(
              () => void channel.send({ type: 'heartbeat', runningJobs: [...this.jobs.keys()] }).catch(() => undefined),
              m.heartbeatSeconds * 1000,
            );
            this.log.info({ site: m.site }, 'connected to the server');
            this.opts.onConnected?.();
            break;
          case 'refused':
            throw new Error(`server refused the session: ${m.reason}`);
          case 'shutdown':
            this.log.warn({ reason: m.reason }, 'server asked this site to shut down');
            this.stop(`shut down by the server: ${m.reason}`);
            return;
          case 'deploy':
            if (!env.payload) {
              await channel
                .send({ type: 'job_failed', jobId: m.jobId, error: 'deploy message without the job folder' })
                .catch(() => undefined);
              break;
            }
            this.startJob(channel, m, env.payload);
            break;
        }
      }
      throw new Error(`session closed: ${channel.closeReason ?? (await channel.link.closed)}`);
    } finally {
      if (heartbeat) clearInterval(heartbeat);
      channel.close('session over');
      if (this.session === channel) this.session = null;
    }
  }

  /**
   * Opens a job's connection (again, on a resume): over the data plane when there is one, else a
   * gRPC call. When the data port cannot be reached at all (a firewall that lets only the gRPC port
   * through), the transport's FallbackDialer carries the job over gRPC, at about half the
   * throughput, and the logs say which port to open; the choice made on the first dial is kept.
   */
  private jobConnector(jobId: string, channelId: string, siteLog: Logger): () => Promise<Link> {
    const dataPort = this.opts.dataPort !== undefined ? this.opts.dataPort : this.offeredDataPort;
    const { kit } = this.opts;
    const info = { purpose: 'job' as const, jobId, channelId };
    const overGrpc = dialerFor(`grpc://${this.serverHost()}:${this.opts.port ?? kit.config.server.port}`, { grpc: this.grpc });
    if (dataPort === null) return () => overGrpc.dial(info);
    const host = this.serverHost();
    const dataPlane = dialerFor(
      { scheme: 'tls', host, port: dataPort },
      { serverName: kit.config.serverName, caPem: kit.caPem, certPem: kit.certPem, keyPem: kit.keyPem, timeoutMs: 10_000 },
    );
    const dialer = new FallbackDialer(dataPlane, overGrpc, (e) => {
      const warning = `data plane port ${host}:${dataPort} is unreachable from this site; this job's payloads go over the gRPC port instead (about half the throughput): open TCP port ${dataPort} to this site, or run the server with dataPort: null`;
      for (const l of [this.log, siteLog]) l.warn({ job: jobId, error: e.message }, warning);
    });
    return () => dialer.dial(info);
  }

  private serverHost(): string {
    return this.opts.host ?? this.opts.kit.config.server.host;
  }

  /** A job's scratch, once it is over here; not while a newer run of the same job id (a requeue) owns the folder. */
  private cleanJob(jobId: string, dir: string): void {
    let got: Reclaimed;
    try {
      got = cleanJobScratch(dir, jobId);
    } catch (e) {
      this.log.warn({ job: jobId, error: (e as Error).message }, `could not remove the job's task files in ${dir}`);
      return;
    }
    if (got.files > 0) this.log.info({ job: jobId, ...got }, `job over: removed its ${got.files} task and job files (${got.bytes} bytes)`);
  }

  private startJob(channel: Channel, m: Extract<ServerToSite, { type: 'deploy' }>, payload: Payload): void {
    const dir = join(this.jobsDir, m.jobId);
    // declared before it is assigned: its own finally block compares against it, possibly synchronously
    let run: Promise<void> | undefined;
    // eslint-disable-next-line prefer-const
    run = (async () => {
      try {
        await markJobDir(dir, this.site, m.jobId);
        const { maxJobBytes, minFreeBytes } = this.opts;
        await receiveJobStream(payload, join(dir, 'app'), {
          maxBytes: maxJobBytes ?? this.opts.kit.config.maxJobBytes ?? BUNDLE_LIMITS.maxBytes,
          limitName: "this site's maxJobBytes",
          ...(minFreeBytes !== undefined && { minFreeBytes }),
        });
        const job = loadJob(join(dir, 'app'));
        // this site's privacy policy has the last word on what it sends; a job that asks for less is refused
        const privacy = this.opts.kit.config.privacy;
        const refusal = policyRefusal(this.site, job.config.filters, privacy);
        if (refusal) throw new Error(`job refused: ${refusal}`);
        const siteDir = join(dir, this.site);
        const filters = await loadJobFilters(job, privacy, await siteHeContext(this.opts.kit.startup, job.config.filters), siteDir);
        const siteLog = fileLogger(join(siteDir, 'log.jsonl'), this.site);
        const host = await createTrainerHost(job, this.site, m.siteIndex, m.numSites, siteDir, siteLog, {
          ...(this.opts.kit.config.python !== undefined && { python: this.opts.kit.config.python }),
        });
        // the job's call names its channel, so a dropped connection resumes mid-transfer instead of failing the task
        const connect = this.jobConnector(m.jobId, randomBytes(12).toString('base64url'), siteLog);
        const channel = {
          resume: {
            timeoutMs: this.opts.sessionResumeMs ?? 30_000,
            redial: connect,
            onLinkLost: (reason: string) => siteLog.warn({ reason }, 'job connection lost; resuming'),
            onResumed: (r: { seconds: number }) => siteLog.info({ seconds: +r.seconds.toFixed(3) }, 'job connection resumed'),
          },
        };
        this.log.info({ job: m.jobId }, 'job started');
        const link = await connect().catch((e: Error) => {
          // an unreachable data port already fell back to gRPC: this is a refusal, a TLS failure or gRPC itself
          throw new Error(
            `${e.message}: cannot open the job's connection (check this site's certificate and that the server still runs the job)`,
          );
        });
        const reason = await runSite(link, {
          site: this.site,
          jobId: m.jobId,
          workspace: siteDir,
          host,
          log: siteLog,
          params: executorSpecFor(job, this.site).params,
          channel,
          filters,
        });
        this.log.info({ job: m.jobId, reason }, 'job ended');
      } catch (e) {
        const error = (e as Error).message;
        this.log.warn({ job: m.jobId, error }, 'job failed on this site');
        await channel.send({ type: 'job_failed', jobId: m.jobId, error }).catch(() => undefined);
      } finally {
        // a job requeued after a server restart comes back under the same id: leave its new run's entry and files alone
        if (this.jobs.get(m.jobId) === run) {
          this.jobs.delete(m.jobId);
          this.cleanJob(m.jobId, dir);
        }
      }
    })();
    this.jobs.set(m.jobId, run);
  }
}
