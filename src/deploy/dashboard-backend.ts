/**
 * The deployment's side of the web dashboard (src/dashboard): its views read the job store and the
 * live sessions; its actions (abort, the result files of a download) run as the admin commands of
 * the same name through the AdminService, with the token's user as the caller, so they are
 * authorized by the same policy (authz.ts) and written to the same audit log.
 */
import { statSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import type { ActionOutcome, AuditRow, DashboardBackend, FileOutcome, JobDetail, JobRow, SiteRow } from '../dashboard/backend.ts';
import { tailLines } from '../dashboard/tail.ts';
import type { DashboardUser, TokenSigner } from '../dashboard/token.ts';
import type { PeerIdentity } from '../transport/peer.ts';
import { JobSummarySchema } from './admin-commands.ts';
import type { AdminService } from './admin-service.ts';
import { type AdminUser, authorize, isRole } from './authz.ts';
import type { JobScheduler } from './job-scheduler.ts';
import type { JobRecord, JobStore } from './job-store.ts';
import type { SessionRegistry } from './session-registry.ts';

export interface DeployDashboardOptions {
  title: string;
  store: JobStore;
  scheduler: JobScheduler;
  sessions: SessionRegistry;
  admin: AdminService;
  tokens: TokenSigner;
}

function row(j: JobRecord): JobRow {
  const { result: _r, ...rest } = j;
  return rest;
}

export class DeployDashboard implements DashboardBackend {
  readonly title: string;
  /** every site seen since the server started: one that left stays listed as disconnected */
  private readonly seen = new Map<string, SiteRow>();

  constructor(private readonly o: DeployDashboardOptions) {
    this.title = o.title;
  }

  verify(token: string): DashboardUser | string {
    const u = this.o.tokens.verify(token);
    if (typeof u === 'string') return u;
    return isRole(u.role) ? u : `token names role ${u.role}, not an admin role`;
  }

  jobs(): JobRow[] {
    return this.o.store.list().map(row);
  }

  job(id: string): JobDetail | null {
    const j = this.o.store.get(id);
    if (!j) return null;
    const summary = JobSummarySchema.safeParse(j.result);
    return { ...row(j), events: this.o.store.events(id), rounds: summary.success ? summary.data.rounds : [] };
  }

  sites(): SiteRow[] {
    const now = Date.now();
    const live = new Set<string>();
    for (const s of this.o.sessions.list()) {
      live.add(s.site);
      this.seen.set(s.site, {
        site: s.site,
        org: s.org,
        state: 'connected',
        connectedAt: s.connectedAt,
        lastHeartbeat: new Date(now - s.lastSeenMsAgo).toISOString(),
        // the server's running jobs on it are known at once; the site's heartbeat says so only seconds later
        runningJobs: [...new Set([...this.o.scheduler.runningOn(s.site), ...s.runningJobs])],
      });
    }
    for (const [k, s] of this.seen) if (!live.has(k)) this.seen.set(k, { ...s, state: 'disconnected', runningJobs: [] });
    return [...this.seen.values()].sort((a, b) => a.site.localeCompare(b.site, undefined, { numeric: true }));
  }

  may(user: DashboardUser, action: 'abort' | 'download' | 'audit', jobId?: string): string | null {
    if (!isRole(user.role)) return `${user.role} is not an admin role`;
    const u: AdminUser = { name: user.name, org: user.org, role: user.role };
    if (action === 'audit') return authorize(u, 'audit');
    const j = jobId === undefined ? null : this.o.store.get(jobId);
    if (!j) return `no job ${jobId}`;
    return authorize(u, action, { job: j });
  }

  audit(limit: number): AuditRow[] {
    return this.o.store.auditLog(limit);
  }

  logs(jobId: string, maxLines: number): string[] {
    return tailLines(join(this.o.scheduler.jobDir(jobId), 'workspace', 'server', 'log.jsonl'), maxLines);
  }

  /** Runs an admin command as the token's user: authorized and audited by the AdminService. */
  private async command(user: DashboardUser, command: string, args: Record<string, unknown>) {
    const peer: PeerIdentity = { name: user.name, org: user.org, kind: user.role };
    const r = await this.o.admin.command(peer, { command, args_json: JSON.stringify(args), blob: new Uint8Array(0) });
    const json = JSON.parse(r.json) as unknown;
    return r.ok ? { ok: true as const, json } : { ok: false as const, ...(json as { code: string; message: string }) };
  }

  async abort(user: DashboardUser, jobId: string): Promise<ActionOutcome> {
    const r = await this.command(user, 'abort', { job: jobId });
    return r.ok ? { ok: true, message: `job ${jobId} aborted by ${user.name}` } : r;
  }

  async files(user: DashboardUser, jobId: string) {
    const r = await this.command(user, 'download', { job: jobId });
    if (!r.ok) return r;
    return { ok: true as const, files: (r.json as { files: { path: string; size: number }[] }).files };
  }

  async file(user: DashboardUser, jobId: string, path: string): Promise<FileOutcome> {
    const r = await this.files(user, jobId);
    if (!r.ok) return r;
    const f = r.files.find((x) => x.path === path);
    if (!f) return { ok: false, code: 'not_found', message: `job ${jobId} has no result file ${path}` };
    const root = resolve(this.o.scheduler.jobDir(jobId), 'workspace', 'server');
    const abs = resolve(root, path);
    if (!abs.startsWith(root + sep)) return { ok: false, code: 'bad_arguments', message: `${path} is outside the job's results` };
    return { ok: true, path: abs, size: statSync(abs).size };
  }
}
