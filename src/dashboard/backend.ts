/**
 * What the dashboard asks of the federation it shows: the deployment's server implements it over
 * its job store, sessions and admin service (src/deploy/dashboard-backend.ts), the simulator over
 * its one run. Every action takes the signed-in user and is authorized (and, for actions, audited)
 * by the implementation exactly like the admin command of the same name.
 */
import type { RoundSummary } from '../workflows/workflow.ts';
import type { DashboardUser } from './token.ts';

export interface JobRow {
  id: string;
  name: string;
  state: string;
  submitter: string;
  submitterOrg: string;
  submittedAt: string;
  startedAt: string | null;
  endedAt: string | null;
  sites: string[];
  detail: string | null;
}

export interface JobDetail extends JobRow {
  events: { at: string; state: string; detail: string | null }[];
  /** rounds of a finished job (its summary); a running job's come from the telemetry */
  rounds: RoundSummary[];
}

export interface SiteRow {
  site: string;
  org: string;
  state: 'connected' | 'disconnected';
  connectedAt: string | null;
  /** when its last heartbeat (or any message) arrived */
  lastHeartbeat: string;
  runningJobs: string[];
}

export interface AuditRow {
  at: string;
  user: string;
  org: string;
  role: string;
  command: string;
  args: string;
  allowed: boolean;
  outcome: string;
}

/** What the page may offer a user: null when allowed, else the reason it is not. */
export type Permission = string | null;

export type ActionOutcome = { ok: true; message: string } | { ok: false; code: string; message: string };

export type FileOutcome = { ok: true; path: string; size: number } | { ok: false; code: string; message: string };

export interface DashboardBackend {
  /** the deployment's or simulation's name, for the page title */
  readonly title: string;
  verify(token: string): DashboardUser | string;
  jobs(): JobRow[];
  job(id: string): JobDetail | null;
  sites(): SiteRow[];
  /** whether `user` may run `action` (on `jobId`): the admin command policy, checked without running anything */
  may(user: DashboardUser, action: 'abort' | 'download' | 'audit', jobId?: string): Permission;
  audit(limit: number): AuditRow[];
  /** the last lines of a job's server log (JSON lines), oldest first */
  logs(jobId: string, maxLines: number): string[];
  abort(user: DashboardUser, jobId: string): Promise<ActionOutcome>;
  /** the job's result files (authorized and audited as a download) */
  files(
    user: DashboardUser,
    jobId: string,
  ): Promise<{ ok: true; files: { path: string; size: number }[] } | { ok: false; code: string; message: string }>;
  /** one result file's absolute path, authorized and audited as a download */
  file(user: DashboardUser, jobId: string, path: string): Promise<FileOutcome>;
}
