/**
 * The dashboard of one simulation (`flotilla simulate --dashboard [port]`): its one job, its
 * simulated sites (connected while the run lasts), the server log of its workspace. The person who
 * started the run is its only user: the printed token makes them a project admin of it, whose
 * abort stops the run. Served over plain HTTP on loopback (a simulation has no certificate); the
 * token still guards every request.
 */
import { readdirSync, statSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join, relative, resolve, sep } from 'node:path';
import type { ActionOutcome, AuditRow, DashboardBackend, FileOutcome, JobDetail, JobRow, SiteRow } from '../dashboard/backend.ts';
import { tailLines } from '../dashboard/tail.ts';
import type { DashboardUser, TokenSigner } from '../dashboard/token.ts';
import type { RoundSummary } from '../workflows/workflow.ts';

function files(root: string): { path: string; size: number }[] {
  const out: { path: string; size: number }[] = [];
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push({ path: relative(root, p).split(sep).join('/'), size: statSync(p).size });
    }
  };
  walk(root);
  return out;
}

export class SimulationDashboard implements DashboardBackend {
  readonly title: string;
  readonly user: DashboardUser = { name: userInfo().username || 'you', org: 'local', role: 'project_admin' };
  private row: JobRow | null = null;
  private readonly events: JobDetail['events'] = [];
  private readonly auditRows: AuditRow[] = [];
  private rounds: RoundSummary[] = [];
  private readonly connectedAt = new Date().toISOString();

  constructor(private readonly o: { jobName: string; workspace: string; tokens: TokenSigner; abort: (reason: string) => void }) {
    this.title = `simulation · ${o.jobName}`;
  }

  /** A token for the person running the simulation. */
  token(): string {
    return this.o.tokens.issue(this.user).token;
  }

  started(jobId: string, sites: string[]): void {
    const at = new Date().toISOString();
    this.row = {
      id: jobId,
      name: this.o.jobName,
      state: 'RUNNING',
      submitter: this.user.name,
      submitterOrg: this.user.org,
      submittedAt: at,
      startedAt: at,
      endedAt: null,
      sites,
      detail: `simulated with ${sites.length} sites`,
    };
    this.events.push({ at, state: 'SUBMITTED', detail: null }, { at, state: 'RUNNING', detail: this.row.detail });
  }

  ended(state: 'FINISHED' | 'FAILED' | 'ABORTED', detail: string, rounds: RoundSummary[] = []): void {
    if (!this.row) return;
    const at = new Date().toISOString();
    this.row = { ...this.row, state, endedAt: at, detail };
    this.rounds = rounds;
    this.events.push({ at, state, detail });
  }

  verify(token: string): DashboardUser | string {
    return this.o.tokens.verify(token);
  }

  jobs(): JobRow[] {
    return this.row ? [this.row] : [];
  }

  job(id: string): JobDetail | null {
    return this.row?.id === id ? { ...this.row, events: [...this.events], rounds: this.rounds } : null;
  }

  sites(): SiteRow[] {
    const running = this.row?.state === 'RUNNING';
    return (this.row?.sites ?? []).map((site) => ({
      site,
      org: 'simulated',
      state: running ? 'connected' : 'disconnected',
      connectedAt: this.connectedAt,
      lastHeartbeat: running ? new Date().toISOString() : (this.row?.endedAt ?? this.connectedAt),
      runningJobs: running ? [this.row!.id] : [],
    }));
  }

  may(_user: DashboardUser, _action: 'abort' | 'download' | 'audit', jobId?: string): string | null {
    return jobId === undefined || this.row?.id === jobId ? null : `no job ${jobId}`;
  }

  audit(limit: number): AuditRow[] {
    return this.auditRows.slice(-limit);
  }

  private record(user: DashboardUser, command: string, args: unknown, outcome: string, allowed = true): void {
    this.auditRows.push({
      at: new Date().toISOString(),
      user: user.name,
      org: user.org,
      role: user.role,
      command,
      args: JSON.stringify(args),
      allowed,
      outcome,
    });
  }

  logs(jobId: string, maxLines: number): string[] {
    return this.row?.id === jobId ? tailLines(join(this.o.workspace, 'server', 'log.jsonl'), maxLines) : [];
  }

  async abort(user: DashboardUser, jobId: string): Promise<ActionOutcome> {
    if (this.row?.id !== jobId) return { ok: false, code: 'not_found', message: `no job ${jobId}` };
    if (this.row.state !== 'RUNNING') {
      this.record(user, 'abort', { job: jobId }, `job ${jobId} is already ${this.row.state}`);
      return { ok: false, code: 'conflict', message: `job ${jobId} is already ${this.row.state}` };
    }
    this.o.abort(`aborted by ${user.name}`);
    this.record(user, 'abort', { job: jobId }, 'ok');
    return { ok: true, message: `job ${jobId} aborted by ${user.name}` };
  }

  async files(user: DashboardUser, jobId: string) {
    if (this.row?.id !== jobId) return { ok: false as const, code: 'not_found', message: `no job ${jobId}` };
    this.record(user, 'download', { job: jobId }, 'ok');
    return { ok: true as const, files: files(join(this.o.workspace, 'server')) };
  }

  async file(user: DashboardUser, jobId: string, path: string): Promise<FileOutcome> {
    const r = await this.files(user, jobId);
    if (!r.ok) return r;
    const f = r.files.find((x) => x.path === path);
    const root = resolve(this.o.workspace, 'server');
    const abs = resolve(root, path);
    if (!f || !abs.startsWith(root + sep)) return { ok: false, code: 'not_found', message: `no result file ${path}` };
    return { ok: true, path: abs, size: f.size };
  }
}
