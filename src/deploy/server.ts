/**
 * The federation server process: the gRPC endpoint, the live site list
 * (sessions with heartbeats), the job store and queue, and one ServerRuntime
 * per running job — the same runtime and workflows the simulator uses, fed by
 * the job's own gRPC calls instead of in-memory links.
 *
 * Jobs run one at a time, on every site connected when the job starts (at
 * least the job's minClients); a queued job waits until enough sites are
 * connected.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { type AdminUser, ADMIN_COMMANDS, type AdminCommand, type Target, authorize, isRole } from './authz.ts';
import type { Kit, ServerConfig } from '../provision/kit.ts';
import { ServerRuntime } from '../runtime/controller.ts';
import { loadInitialModel, loadJob } from '../runtime/job.ts';
import { handOver, runWorkflows } from '../workflows/run-job.ts';
import { ServerWorkspace } from '../runtime/workspace.ts';
import { Channel } from '../streaming/channel.ts';
import type { GrpcLink } from '../transport/grpc/link.ts';
import { GrpcServer } from '../transport/grpc/server.ts';
import type { ConnectInfo, PeerIdentity } from '../transport/peer.ts';
import type { TlsLink } from '../transport/tls/link.ts';
import { TlsDataServer } from '../transport/tls/server.ts';
import type { AdminReplyWire, AdminRequestWire, DownloadPieceWire } from '../transport/grpc/wire.ts';
import type { Link, ServerTransport } from '../transport/link.ts';
import { AsyncQueue } from '../util/async-queue.ts';
import { type Logger, fileLogger, silentLogger } from '../util/log.ts';
import { describeZodError } from '../util/zod-error.ts';
import { listResults, sendResults } from './download.ts';
import { BundleError, packJob, unpackJob } from './job-bundle.ts';
import { allowJobImports } from './job-imports.ts';
import { type JobRecord, JobStore } from './job-store.ts';
import { SESSION_PROTOCOL, type ServerToSite, SiteToServer, naturalSort } from './session.ts';

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

interface Session {
  site: string;
  org: string;
  channel: Channel;
  /** the site's name for the session's channel (x-flotilla-channel): a reconnection naming it resumes the session */
  channelId: string | null;
  connectedAt: string;
  lastSeen: number;
  runningJobs: string[];
}

interface RunningJob {
  hub: JobHub;
  runtime: ServerRuntime;
  sites: Set<string>;
  abortReason: string | null;
  fail(e: Error): void;
}

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
  /** how long a started job waits for every deployed site to join it */
  siteJoinTimeoutMs?: number;
}

const JobArg = z.strictObject({ job: z.string().min(1).max(200) });
const SiteArg = z.strictObject({ site: z.string().min(1).max(64) });
const NoArgs = z.strictObject({});

class AdminFailure extends Error {}

export class FederationServer {
  readonly store: JobStore;
  readonly jobsDir: string;
  private readonly sessions = new Map<string, Session>();
  private readonly running = new Map<string, RunningJob>();
  private readonly grpc: GrpcServer;
  /** the data plane: jobs' connections over mutual TLS with the lean framing (null: jobs use gRPC) */
  private readonly data: TlsDataServer | null;
  private readonly log: Logger;
  private sweeper: NodeJS.Timeout | null = null;
  private scheduling = false;
  private stopped = false;
  port = 0;
  /** the data plane's bound port, once started (null without one) */
  dataPort: number | null = null;

  constructor(private readonly opts: FederationServerOptions) {
    const ws = resolve(opts.workspace);
    mkdirSync(ws, { recursive: true });
    this.log = opts.log ?? silentLogger();
    this.jobsDir = join(ws, 'jobs');
    mkdirSync(this.jobsDir, { recursive: true });
    allowJobImports(this.jobsDir);
    this.store = new JobStore(join(ws, 'jobs.sqlite'));
    const { kit } = opts;
    this.grpc = new GrpcServer({
      host: opts.host ?? kit.config.listen.host,
      port: opts.port ?? kit.config.listen.port,
      caPem: kit.caPem,
      certPem: kit.certPem,
      keyPem: kit.keyPem,
      log: this.log,
      handlers: { onConnect: (link, peer, info) => this.onConnect(link, peer, info), onAdmin: (peer, req) => this.onAdmin(peer, req), onDownload: (peer, req, write) => this.onDownload(peer, req, write) },
    });
    const dataPort = opts.dataPort !== undefined ? opts.dataPort : kit.config.dataPort !== null && opts.port !== undefined ? 0 : kit.config.dataPort;
    this.data =
      dataPort === null
        ? null
        : new TlsDataServer({
            host: opts.host ?? kit.config.listen.host,
            port: dataPort,
            caPem: kit.caPem,
            certPem: kit.certPem,
            keyPem: kit.keyPem,
            log: this.log,
            onConnect: (link, peer, info) => (info.purpose === 'job' ? this.onConnect(link, peer, info) : 'sessions use the gRPC port; the data plane carries jobs only'),
          });
  }

  async start(): Promise<number> {
    const recovered = this.store.recoverAfterRestart();
    if (recovered.length) this.log.warn({ jobs: recovered }, 'jobs that were running when the server stopped are marked ABORTED_BY_RESTART');
    this.port = await this.grpc.start();
    try {
      this.dataPort = this.data ? await this.data.start() : null;
    } catch (e) {
      await this.grpc.close(0);
      this.store.close();
      throw new Error(`${(e as Error).message} (the data plane's port: dataPort in project.yml, or server start --data-port <port|none>)`);
    }
    const timeoutMs = this.opts.kit.config.heartbeatTimeoutSeconds * 1000;
    this.sweeper = setInterval(() => {
      const now = Date.now();
      for (const s of this.sessions.values()) {
        if (now - s.lastSeen > timeoutMs) {
          this.log.warn({ site: s.site }, `no heartbeat for ${timeoutMs} ms: site considered gone`);
          s.channel.close('heartbeat timeout');
          this.dropSession(s);
        }
      }
    }, Math.min(1000, timeoutMs / 3));
    this.sweeper.unref();
    this.log.info({ port: this.port, dataPort: this.dataPort }, 'server listening');
    void this.schedule();
    return this.port;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.sweeper) clearInterval(this.sweeper);
    for (const [id, j] of this.running) {
      j.abortReason = 'server shutting down';
      j.fail(new Error('server shutting down'));
      this.log.warn({ job: id }, 'job stopped by server shutdown');
    }
    for (const s of this.sessions.values()) s.channel.close('server shutting down');
    await Promise.all([this.grpc.close(), this.data?.close()]);
    // give the job runners a moment to record their final state
    await new Promise((r) => setTimeout(r, 50));
    this.store.close();
  }

  /** Sites whose session has a connection now (one that dropped and is resuming does not count). */
  private liveSites(): string[] {
    return naturalSort([...this.sessions.values()].filter((s) => !s.channel.isDetached).map((s) => s.site));
  }

  /** Connected sites, in natural order. */
  siteList(): { site: string; org: string; connectedAt: string; lastSeenMsAgo: number; runningJobs: string[] }[] {
    return this.liveSites().map((k) => {
      const s = this.sessions.get(k)!;
      return { site: s.site, org: s.org, connectedAt: s.connectedAt, lastSeenMsAgo: Date.now() - s.lastSeen, runningJobs: s.runningJobs };
    });
  }

  // ---- site connections -------------------------------------------------

  private onConnect(link: GrpcLink | TlsLink, peer: PeerIdentity, info: ConnectInfo): string | null {
    if (info.purpose === 'session') {
      const live = this.sessions.get(peer.name);
      if (info.channelId !== null && live?.channelId === info.channelId && !live.channel.isClosed) {
        // the same site's session over a new call: it continues where it stopped
        live.channel.attach(link);
        this.log.info({ site: peer.name }, 'session resumed over a new connection');
        return null;
      }
      // a site that names its channel can resume it; waiting longer than the heartbeat timeout is pointless
      const resume = info.channelId !== null ? { timeoutMs: this.opts.kit.config.heartbeatTimeoutSeconds * 1000, onResumed: () => void this.schedule() } : undefined;
      void this.serveSession(new Channel(link, resume ? { resume } : {}), peer, info.channelId);
      return null;
    }
    const job = this.running.get(info.jobId ?? '');
    if (!job) return `no running job ${info.jobId}`;
    if (!job.sites.has(peer.name)) return `job ${info.jobId} was not deployed to ${peer.name}`;
    link.resumeId = info.channelId;
    job.hub.push(link);
    return null;
  }

  private async serveSession(channel: Channel, peer: PeerIdentity, channelId: string | null): Promise<void> {
    let session: Session | null = null;
    const send = (m: ServerToSite): Promise<void> => channel.send(m);
    try {
      for await (const env of channel.messages()) {
        env.payload?.cancel('sessions carry no payloads from sites');
        const parsed = SiteToServer.safeParse(env.msg);
        if (!parsed.success) {
          // bad input from one site fails that site's session, never the server
          const reason = `malformed session message: ${describeZodError(parsed.error)}`;
          this.log.warn({ site: peer.name, reason }, 'session closed');
          await send({ type: 'refused', reason }).catch(() => undefined);
          channel.close(reason);
          return;
        }
        const m = parsed.data;
        if (session === null) {
          let reason: string | null = null;
          if (m.type !== 'hello') reason = `expected hello, got ${m.type}`;
          else if (m.protocol !== SESSION_PROTOCOL) reason = `site speaks session protocol ${m.protocol}, server speaks ${SESSION_PROTOCOL}`;
          else if (m.site !== peer.name) reason = `site name ${m.site} does not match the certificate's common name ${peer.name}`;
          if (reason !== null) {
            this.log.warn({ site: peer.name, reason }, 'session refused');
            await send({ type: 'refused', reason }).catch(() => undefined);
            channel.close(reason);
            return;
          }
          const old = this.sessions.get(peer.name);
          if (old) {
            old.channel.close('replaced by a new session of the same site');
            this.dropSession(old);
          }
          session = { site: peer.name, org: peer.org, channel, channelId, connectedAt: new Date().toISOString(), lastSeen: Date.now(), runningJobs: [] };
          this.sessions.set(peer.name, session);
          await send({ type: 'welcome', site: peer.name, heartbeatSeconds: Math.max(1, this.opts.kit.config.heartbeatTimeoutSeconds / 4), dataPort: this.dataPort });
          this.log.info({ site: peer.name, org: peer.org }, 'site connected');
          void this.schedule();
          continue;
        }
        session.lastSeen = Date.now();
        if (m.type === 'heartbeat') session.runningJobs = m.runningJobs;
        else if (m.type === 'job_failed') {
          const j = this.running.get(m.jobId);
          if (j?.sites.has(peer.name)) j.fail(new Error(`site ${peer.name} could not run the job: ${m.error}`));
        }
      }
    } catch (e) {
      this.log.warn({ site: peer.name, err: (e as Error).message }, 'session failed');
    } finally {
      if (session) this.dropSession(session);
    }
  }

  private dropSession(s: Session): void {
    if (this.sessions.get(s.site) !== s) return;
    this.sessions.delete(s.site);
    this.log.warn({ site: s.site }, 'site disconnected');
  }

  // ---- jobs ---------------------------------------------------------------

  private jobDir(id: string): string {
    return join(this.jobsDir, id);
  }

  /** Starts the oldest queued job once enough sites are connected. One job at a time. */
  private async schedule(): Promise<void> {
    if (this.scheduling || this.stopped || this.running.size > 0) return;
    this.scheduling = true;
    try {
      const next = this.store.queued()[0];
      if (!next) return;
      let minClients: number;
      try {
        minClients = loadJob(join(this.jobDir(next.id), 'app')).config.minClients;
      } catch (e) {
        this.store.transition(next.id, 'FAILED', `job folder unreadable: ${(e as Error).message}`);
        setImmediate(() => void this.schedule());
        return;
      }
      if (this.liveSites().length < minClients) return; // a site connecting (or resuming) calls schedule() again
      void this.runJob(next);
    } finally {
      this.scheduling = false;
    }
  }

  private async runJob(rec: JobRecord): Promise<void> {
    const dir = this.jobDir(rec.id);
    const app = join(dir, 'app');
    const sites = this.liveSites();
    const sws = new ServerWorkspace(join(dir, 'workspace'));
    const log = fileLogger(join(sws.serverDir, 'log.jsonl'), 'server');
    const hub = new JobHub();
    const runtime = new ServerRuntime(hub, { jobId: rec.id, log, onMetric: (m) => sws.appendMetrics({ type: 'metric', ...m }) });
    let fail!: (e: Error) => void;
    const failed = new Promise<never>((_, reject) => (fail = reject));
    failed.catch(() => undefined);
    const rj: RunningJob = { hub, runtime, sites: new Set(sites), abortReason: null, fail };
    this.running.set(rec.id, rj);
    this.store.transition(rec.id, 'RUNNING', `deployed to ${sites.join(', ')}`, { sites });
    this.log.info({ job: rec.id, sites }, 'job started');
    const started = Date.now();
    runtime.start();
    try {
      const job = loadJob(app);
      // loaded before anything is deployed (a bad model fails the job at once), then handed over
      const initial = handOver(await loadInitialModel(job));
      const bundle = packJob(app);
      await Promise.race([
        Promise.all(
          sites.map((site, i) => {
            const s = this.sessions.get(site);
            if (!s) throw new Error(`site ${site} disconnected before the job was deployed`);
            return s.channel.send({ type: 'deploy', jobId: rec.id, siteIndex: i, numSites: sites.length } satisfies ServerToSite, (async function* () {
              yield bundle;
            })());
          }),
        ),
        failed,
      ]);
      await Promise.race([runtime.waitForSites(sites.length, this.opts.siteJoinTimeoutMs ?? 120_000), failed]);
      const outcome = await Promise.race([runWorkflows(job, initial, { controller: runtime, workspace: sws, log }), failed]);
      const summary = { jobId: rec.id, job: job.config.name, sites, rounds: outcome.rounds, crossSite: outcome.crossSite, seconds: (Date.now() - started) / 1000 };
      await sws.writeJson('summary.json', summary);
      this.store.transition(rec.id, 'FINISHED', `${outcome.rounds.length} rounds on ${sites.length} sites`, { result: summary });
      this.log.info({ job: rec.id }, 'job finished');
    } catch (e) {
      const aborted = rj.abortReason !== null;
      const detail = aborted ? rj.abortReason! : (e as Error).message;
      if (!this.stopped) this.store.transition(rec.id, aborted ? 'ABORTED' : 'FAILED', detail);
      this.log.warn({ job: rec.id, detail }, aborted ? 'job aborted' : 'job failed');
    } finally {
      await runtime.end(rj.abortReason ?? 'job finished').catch(() => undefined);
      await runtime.close().catch(() => undefined);
      this.running.delete(rec.id);
      log.flush?.();
      setImmediate(() => void this.schedule());
    }
  }

  // ---- admin ----------------------------------------------------------------

  /** Admin.Download: the download command, authorized and audited like any other, with its files streamed. */
  private async onDownload(peer: PeerIdentity, req: AdminRequestWire, write: (p: DownloadPieceWire) => Promise<void>): Promise<void> {
    if (req.command !== 'download') throw new Error(`Admin.Download serves the download command, not "${req.command}"`);
    const reply = await this.onAdmin(peer, req, write);
    if (!reply.ok) throw new Error(JSON.parse(reply.json) as string);
  }

  private async onAdmin(peer: PeerIdentity, req: AdminRequestWire, write?: (p: DownloadPieceWire) => Promise<void>): Promise<AdminReplyWire> {
    const command = req.command;
    const argsText = req.args_json || '{}';
    const auditArgs = argsText.slice(0, 2000);
    if (!isRole(peer.kind)) {
      const why = `certificate of ${peer.name} is a ${peer.kind} certificate, not an admin's`;
      this.store.audit({ user: peer.name, org: peer.org, role: peer.kind, command, args: auditArgs, allowed: false, outcome: why });
      return { ok: false, json: JSON.stringify(why), blob: new Uint8Array(0) };
    }
    const user: AdminUser = { name: peer.name, org: peer.org, role: peer.kind };
    let allowed = true;
    try {
      if (!(ADMIN_COMMANDS as readonly string[]).includes(command)) throw new AdminFailure(`unknown command "${command}" (known: ${ADMIN_COMMANDS.join(', ')})`);
      let args: unknown;
      try {
        args = JSON.parse(argsText);
      } catch {
        throw new AdminFailure('arguments are not valid JSON');
      }
      const check = (t: Target): void => {
        const denied = authorize(user, command as AdminCommand, t);
        if (denied) {
          allowed = false;
          throw new AdminFailure(`permission denied: ${denied}`);
        }
      };
      const reply = await this.runCommand(command as AdminCommand, args, req.blob, user, check, write);
      this.store.audit({ user: user.name, org: user.org, role: user.role, command, args: auditArgs, allowed: true, outcome: 'ok' });
      return { ok: true, json: JSON.stringify(reply.json), blob: reply.blob ?? new Uint8Array(0) };
    } catch (e) {
      const msg = e instanceof AdminFailure || e instanceof BundleError || (e as Error).name === 'JobConfigError' ? (e as Error).message : `internal error: ${(e as Error).message}`;
      this.store.audit({ user: user.name, org: user.org, role: user.role, command, args: auditArgs, allowed, outcome: msg.slice(0, 2000) });
      return { ok: false, json: JSON.stringify(msg), blob: new Uint8Array(0) };
    }
  }

  private parse<T>(schema: z.ZodType<T>, args: unknown, command: string): T {
    const r = schema.safeParse(args);
    if (!r.success) throw new AdminFailure(`${command}: bad arguments: ${describeZodError(r.error)}`);
    return r.data;
  }

  private jobOrThrow(id: string): JobRecord {
    const j = this.store.get(id);
    if (!j) throw new AdminFailure(`no job ${id}`);
    return j;
  }

  private async runCommand(cmd: AdminCommand, args: unknown, blob: Uint8Array, user: AdminUser, check: (t: Target) => void, write?: (p: DownloadPieceWire) => Promise<void>): Promise<{ json: unknown; blob?: Uint8Array }> {
    switch (cmd) {
      case 'submit': {
        this.parse(NoArgs, args, cmd);
        check({});
        const incoming = join(this.jobsDir, `.incoming-${randomBytes(6).toString('hex')}`);
        try {
          const config = unpackJob(blob, join(incoming, 'app'), this.opts.kit.config.maxJobBytes);
          const id = `${config.name}-${randomBytes(4).toString('hex')}`;
          renameSync(incoming, this.jobDir(id));
          this.store.create({ id, name: config.name, submitter: user.name, submitterOrg: user.org });
          this.log.info({ job: id, by: user.name }, 'job submitted');
          void this.schedule();
          return { json: { jobId: id } };
        } finally {
          rmSync(incoming, { recursive: true, force: true });
        }
      }
      case 'list':
        this.parse(NoArgs, args, cmd);
        check({});
        return { json: this.store.list().map(({ result: _r, ...j }) => j) };
      case 'status': {
        const { job } = this.parse(JobArg, args, cmd);
        check({});
        const j = this.jobOrThrow(job);
        return { json: { ...j, events: this.store.events(job) } };
      }
      case 'sites':
        this.parse(NoArgs, args, cmd);
        check({});
        return { json: this.siteList() };
      case 'audit':
        this.parse(NoArgs, args, cmd);
        check({});
        return { json: this.store.auditLog() };
      case 'abort': {
        const { job } = this.parse(JobArg, args, cmd);
        const j = this.jobOrThrow(job);
        check({ job: j });
        const reason = `aborted by ${user.name}`;
        if (j.state === 'SUBMITTED') this.store.transition(job, 'ABORTED', reason);
        else if (j.state === 'RUNNING') {
          const r = this.running.get(job);
          if (r) {
            r.abortReason = reason;
            r.fail(new Error(reason));
          }
        } else throw new AdminFailure(`job ${job} is already ${j.state}`);
        return { json: { jobId: job, aborted: true } };
      }
      case 'requeue': {
        const { job } = this.parse(JobArg, args, cmd);
        const j = this.jobOrThrow(job);
        check({ job: j });
        if (!['ABORTED_BY_RESTART', 'FAILED', 'ABORTED'].includes(j.state)) throw new AdminFailure(`job ${job} is ${j.state}; only ABORTED_BY_RESTART, FAILED or ABORTED jobs can be requeued`);
        rmSync(join(this.jobDir(job), 'workspace'), { recursive: true, force: true });
        this.store.transition(job, 'SUBMITTED', `requeued by ${user.name}`);
        void this.schedule();
        return { json: { jobId: job, state: 'SUBMITTED' } };
      }
      case 'download': {
        const { job } = this.parse(JobArg, args, cmd);
        const j = this.jobOrThrow(job);
        check({ job: j });
        const root = join(this.jobDir(job), 'workspace', 'server');
        if (!existsSync(root)) throw new AdminFailure(`job ${job} (${j.state}) has no results yet`);
        // over Admin.Download the files stream (any size); a plain command gets the list only
        const files = write ? await sendResults(root, write) : await listResults(root);
        return { json: { jobId: job, state: j.state, files } };
      }
      case 'shutdown-site': {
        const { site } = this.parse(SiteArg, args, cmd);
        const s = this.sessions.get(site);
        if (!s) throw new AdminFailure(`site ${site} is not connected`);
        check({ site: { org: s.org } });
        await s.channel.send({ type: 'shutdown', reason: `requested by ${user.name}` } satisfies ServerToSite);
        return { json: { site, shutdown: true } };
      }
    }
  }
}
