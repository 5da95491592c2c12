/**
 * The federation server process: the gRPC endpoint and the data plane, wired to three parts of
 * their own: the live site list (session-registry.ts), the job queue and runner
 * (job-scheduler.ts: one ServerRuntime per running job, the same runtime and workflows the
 * simulator uses, fed by the job's own connections), and the admin commands (admin-service.ts).
 *
 * Jobs run one at a time, on every site connected when the job starts (at least the job's
 * minClients); a queued job waits until enough sites are connected.
 */
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Kit, ServerConfig } from '../provision/kit.ts';
import type { GrpcLink } from '../transport/grpc/link.ts';
import { GrpcServer } from '../transport/grpc/server.ts';
import type { ConnectionLimits } from '../transport/guard.ts';
import type { ConnectInfo, PeerIdentity } from '../transport/peer.ts';
import type { TlsLink } from '../transport/tls/link.ts';
import { TlsDataServer } from '../transport/tls/server.ts';
import { type Logger, silentLogger } from '../util/log.ts';
import { lockFolder } from '../util/process-identity.ts';
import type { SiteEntry } from './admin-commands.ts';
import { AdminService } from './admin-service.ts';
import { allowJobImports } from '../runtime/job-imports.ts';
import { mlflowUriProblem } from '../tracking/mlflow-uri.ts';
import { JobScheduler } from './job-scheduler.ts';
import { JobStore } from './job-store.ts';
import { SessionRegistry } from './session-registry.ts';
import { Telemetry } from '../dashboard/telemetry.ts';
import { startMetricsEndpoint } from '../dashboard/metrics-endpoint.ts';
import type { WebServer } from '../dashboard/http.ts';
import { TokenSigner } from '../dashboard/token.ts';
import { startDashboard } from '../dashboard/web.ts';
import { DeployDashboard } from './dashboard-backend.ts';

export interface FederationServerOptions {
  kit: Kit<ServerConfig>;
  workspace: string;
  /** overrides the kit's listen address (tests, benchmarks) */
  host?: string;
  port?: number;
  /**
   * overrides the kit's data plane port: a port (0: any free one), or null to carry job payloads
   * over the gRPC port. Unset while `port` is overridden, a kit with a data plane gets any free port.
   */
  dataPort?: number | null;
  log?: Logger;
  /** handshake timeout and connection limit of both listeners (default: 10 s, from the descriptor limit) */
  connectionLimits?: ConnectionLimits;
  /** how long a started job waits for every deployed site to join it */
  siteJoinTimeoutMs?: number;
  /** Prometheus' /metrics over plain HTTP on this address (port 0: any free one); absent: not served */
  metrics?: { host?: string; port: number };
  /** the web dashboard over HTTPS with the server's certificate on this address (port 0: any free one); absent: not served */
  dashboard?: { host?: string; port: number; tickMs?: number };
  /**
   * a job left running by a previous server process resumes from its last completed round
   * (default); false: it is marked ABORTED_BY_RESTART and `admin requeue` runs it from round 0
   */
  resumeJobs?: boolean;
  /** export every job's tracked metrics to this MLflow tracking server (http://host:port) */
  mlflowUri?: string;
}

export class FederationServer {
  readonly store: JobStore;
  readonly jobsDir: string;
  private readonly sessions: SessionRegistry;
  private readonly scheduler: JobScheduler;
  private readonly admin: AdminService;
  private readonly grpc: GrpcServer;
  /** the data plane: jobs' connections over mutual TLS with the lean framing (null: jobs use gRPC) */
  private readonly data: TlsDataServer | null;
  private readonly log: Logger;
  /** what jobs and sites report, for /metrics and the dashboard */
  readonly telemetry: Telemetry;
  private metricsServer: WebServer | null = null;
  private dashboardServer: WebServer | null = null;
  private tokens: TokenSigner | null = null;
  /** the workspace's exclusive lock (server.lock): a second server on it would mark this one's running jobs aborted */
  private readonly lock: { release(): void };
  port = 0;
  /** the data plane's bound port, once started (null without one) */
  dataPort: number | null = null;
  /** /metrics' bound port, once started (null when not served) */
  metricsPort: number | null = null;
  /** the dashboard's bound port, once started (null when not served) */
  dashboardPort: number | null = null;

  constructor(private readonly opts: FederationServerOptions) {
    const mlflow = opts.mlflowUri === undefined ? null : mlflowUriProblem(opts.mlflowUri);
    if (mlflow) throw new Error(`mlflowUri: ${mlflow}`);
    const ws = resolve(opts.workspace);
    mkdirSync(ws, { recursive: true });
    const log = (this.log = opts.log ?? silentLogger());
    // taken before the job store is opened: a second server must not touch the first one's jobs
    const lock = lockFolder(join(ws, 'server.lock'), `the server workspace ${ws}`);
    this.lock = lock;
    if (lock.tookOver)
      log.warn({ holder: lock.tookOver }, `took over the workspace lock of process ${lock.tookOver.pid}, which is no longer running`);
    this.jobsDir = join(ws, 'jobs');
    try {
      mkdirSync(this.jobsDir, { recursive: true });
      this.store = new JobStore(join(ws, 'jobs.sqlite'));
    } catch (e) {
      lock.release();
      throw e;
    }
    allowJobImports(this.jobsDir);
    const { kit } = opts;
    this.sessions = new SessionRegistry({
      heartbeatTimeoutSeconds: kit.config.heartbeatTimeoutSeconds,
      log,
      dataPort: () => this.dataPort,
      onSitesChanged: () => this.scheduler.schedule(),
      onJobFailed: (jobId, site, error) => this.scheduler.siteFailed(jobId, site, error),
    });
    this.telemetry = new Telemetry({ connectedSites: () => this.sessions.liveSites().length, jobStates: () => this.store.countByState() });
    this.scheduler = new JobScheduler({
      telemetry: this.telemetry,
      store: this.store,
      jobsDir: this.jobsDir,
      sessions: this.sessions,
      log,
      kitStartup: kit.startup,
      ...(opts.siteJoinTimeoutMs !== undefined && { siteJoinTimeoutMs: opts.siteJoinTimeoutMs }),
      ...(opts.mlflowUri !== undefined && { mlflowUri: opts.mlflowUri }),
    });
    this.admin = new AdminService({
      store: this.store,
      scheduler: this.scheduler,
      sessions: this.sessions,
      maxJobBytes: kit.config.maxJobBytes,
      log,
      dashboard: { issue: (user) => this.signer().issue(user), dashboardPort: () => this.dashboardPort },
    });
    this.grpc = new GrpcServer({
      host: opts.host ?? kit.config.listen.host,
      port: opts.port ?? kit.config.listen.port,
      caPem: kit.caPem,
      certPem: kit.certPem,
      keyPem: kit.keyPem,
      log,
      ...(opts.connectionLimits && { limits: opts.connectionLimits }),
      handlers: {
        onConnect: (link, peer, info) => this.onConnect(link, peer, info),
        onAdmin: (peer, req) => this.admin.command(peer, req),
        onDownload: (peer, req, write) => this.admin.download(peer, req, write),
        onUpload: (peer, req, data) => this.admin.upload(peer, req, data),
      },
    });
    const dataPort =
      opts.dataPort !== undefined ? opts.dataPort : kit.config.dataPort !== null && opts.port !== undefined ? 0 : kit.config.dataPort;
    this.data =
      dataPort === null
        ? null
        : new TlsDataServer({
            host: opts.host ?? kit.config.listen.host,
            port: dataPort,
            caPem: kit.caPem,
            certPem: kit.certPem,
            keyPem: kit.keyPem,
            log,
            ...(opts.connectionLimits && { limits: opts.connectionLimits }),
            onConnect: (link, peer, info) =>
              info.purpose === 'job' ? this.onConnect(link, peer, info) : 'sessions use the gRPC port; the data plane carries jobs only',
          });
  }

  async start(): Promise<number> {
    const resume = this.opts.resumeJobs ?? true;
    const recovered = this.store.recoverAfterRestart(resume);
    if (recovered.length)
      this.log.warn(
        { jobs: recovered },
        resume
          ? 'jobs that were running when the server stopped are queued to resume from their last completed round'
          : 'jobs that were running when the server stopped are marked ABORTED_BY_RESTART',
      );
    try {
      this.port = await this.grpc.start();
    } catch (e) {
      this.store.close();
      this.lock.release();
      throw e;
    }
    try {
      this.dataPort = this.data ? await this.data.start() : null;
    } catch (e) {
      await this.grpc.close(0);
      this.store.close();
      this.lock.release();
      throw new Error(`${(e as Error).message} (the data plane's port: dataPort in project.yml, or server start --data-port <port|none>)`);
    }
    try {
      await this.startWeb();
    } catch (e) {
      await Promise.all([this.grpc.close(0), this.data?.close(), this.metricsServer?.close()]);
      this.store.close();
      this.lock.release();
      throw e;
    }
    this.sessions.start();
    this.log.info(
      { port: this.port, dataPort: this.dataPort, metricsPort: this.metricsPort, dashboardPort: this.dashboardPort },
      'server listening',
    );
    this.scheduler.schedule();
    return this.port;
  }

  /** The workspace's dashboard token signer (dashboard.key, made on first use). */
  private signer(): TokenSigner {
    return (this.tokens ??= TokenSigner.open(join(resolve(this.opts.workspace), 'dashboard.key')));
  }

  /** /metrics and the dashboard, each when asked for. */
  private async startWeb(): Promise<void> {
    const { metrics, dashboard, kit } = this.opts;
    const where = (what: string, flag: string) => (e: Error) => {
      throw new Error(`${e.message} (the ${what} port: server start ${flag} <port>)`);
    };
    if (metrics) {
      const host = metrics.host ?? '127.0.0.1';
      this.metricsServer = await startMetricsEndpoint({ host, port: metrics.port, telemetry: this.telemetry, log: this.log }).catch(
        where('metrics', '--metrics-port'),
      );
      this.metricsPort = this.metricsServer.port;
    }
    if (dashboard) {
      const backend = new DeployDashboard({
        title: `${kit.config.project} · ${kit.config.name}`,
        store: this.store,
        scheduler: this.scheduler,
        sessions: this.sessions,
        admin: this.admin,
        tokens: this.signer(),
      });
      this.dashboardServer = await startDashboard({
        host: dashboard.host ?? this.opts.host ?? kit.config.listen.host,
        port: dashboard.port,
        tls: { certPem: kit.certPem, keyPem: kit.keyPem },
        backend,
        telemetry: this.telemetry,
        rows: this.store.tracking,
        log: this.log,
        ...(dashboard.tickMs !== undefined && { tickMs: dashboard.tickMs }),
      }).catch(where('dashboard', '--dashboard-port'));
      this.dashboardPort = this.dashboardServer.port;
    }
  }

  async stop(): Promise<void> {
    const reason = 'server shutting down';
    const jobsEnded = this.scheduler.stop(reason);
    this.sessions.stop(reason);
    await Promise.all([this.grpc.close(), this.data?.close(), this.metricsServer?.close(), this.dashboardServer?.close()]);
    // each job runner records its end before the store closes
    await jobsEnded;
    this.store.close();
    this.lock.release();
  }

  /** Connected sites, in natural order. */
  siteList(): SiteEntry[] {
    return this.sessions.list();
  }

  private onConnect(link: GrpcLink | TlsLink, peer: PeerIdentity, info: ConnectInfo): string | null {
    if (info.purpose === 'session') {
      this.sessions.connect(link, peer, info.channelId, info.remote ?? 'an unknown address');
      return null;
    }
    return this.scheduler.route(link, peer, info);
  }
}
