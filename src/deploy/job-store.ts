/**
 * The server's durable state (design §4): jobs, their state transitions and
 * the admin audit log in one SQLite file. Every state change is one
 * transaction that updates the job and appends an event, so the history never
 * disagrees with the current state. On open, a job left RUNNING by a previous
 * server process is marked ABORTED_BY_RESTART (it can be requeued explicitly).
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { AuditRow } from '../dashboard/backend.ts';
import { TrackingStore } from '../tracking/store.ts';

export const JOB_STATES = ['SUBMITTED', 'RUNNING', 'FINISHED', 'FAILED', 'ABORTED', 'ABORTED_BY_RESTART'] as const;
export type JobState = (typeof JOB_STATES)[number];
export const FINAL_STATES: readonly JobState[] = ['FINISHED', 'FAILED', 'ABORTED', 'ABORTED_BY_RESTART'];

export interface JobRecord {
  id: string;
  name: string;
  submitter: string;
  submitterOrg: string;
  state: JobState;
  submittedAt: string;
  startedAt: string | null;
  endedAt: string | null;
  sites: string[];
  detail: string | null;
  /** job summary (rounds, metrics) once finished */
  result: unknown;
}

export interface JobEvent {
  at: string;
  state: JobState;
  detail: string | null;
}

/** One admin command as the audit log keeps it: the dashboard's row (its backend reads this store). */
export type AuditEntry = AuditRow;

interface JobRow {
  id: string;
  name: string;
  submitter: string;
  submitter_org: string;
  state: JobState;
  submitted_at: string;
  started_at: string | null;
  ended_at: string | null;
  sites: string | null;
  detail: string | null;
  result: string | null;
}

function toRecord(r: JobRow): JobRecord {
  return {
    id: r.id,
    name: r.name,
    submitter: r.submitter,
    submitterOrg: r.submitter_org,
    state: r.state,
    submittedAt: r.submitted_at,
    startedAt: r.started_at,
    endedAt: r.ended_at,
    sites: r.sites ? (JSON.parse(r.sites) as string[]) : [],
    detail: r.detail,
    result: r.result ? (JSON.parse(r.result) as unknown) : null,
  };
}

export class JobStore {
  private readonly db: Database.Database;
  /** what the jobs' sites logged, in the same file (table `tracking`, docs/tracking.md) */
  readonly tracking: TrackingStore;

  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
    let db: Database.Database | null = null;
    try {
      db = new Database(path);
      this.db = db;
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = FULL');
      this.db.exec(`
        CREATE TABLE IF NOT EXISTS jobs (
          id TEXT PRIMARY KEY, name TEXT NOT NULL, submitter TEXT NOT NULL, submitter_org TEXT NOT NULL,
          state TEXT NOT NULL, submitted_at TEXT NOT NULL, started_at TEXT, ended_at TEXT,
          sites TEXT, detail TEXT, result TEXT);
        CREATE TABLE IF NOT EXISTS job_events (
          id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL REFERENCES jobs(id),
          at TEXT NOT NULL, state TEXT NOT NULL, detail TEXT);
        CREATE TABLE IF NOT EXISTS audit (
          id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, user TEXT NOT NULL, org TEXT NOT NULL, role TEXT NOT NULL,
          command TEXT NOT NULL, args TEXT NOT NULL, allowed INTEGER NOT NULL, outcome TEXT NOT NULL);
      `);
      // a jobs.sqlite of an older version gains the tracking table here (src/tracking/store.ts: migrate)
      this.tracking = new TrackingStore(this.db);
    } catch (e) {
      db?.close();
      // sqlite's own words ("file is not a database") name neither the file nor a way out
      throw new Error(
        `cannot open the job store ${path}: ${(e as Error).message}: if the file is damaged, move it (and any ${path}-wal, ${path}-shm) aside to start with an empty job store, or restore it from a backup`,
      );
    }
  }

  /**
   * Jobs a previous process left RUNNING: queued again to resume from their last completed round
   * (`resume`), else marked ABORTED_BY_RESTART (a requeue runs them from round 0). Returns their ids.
   */
  recoverAfterRestart(resume = false): string[] {
    const running = this.db.prepare(`SELECT id FROM jobs WHERE state = 'RUNNING'`).all() as { id: string }[];
    for (const { id } of running)
      if (resume)
        this.transition(id, 'SUBMITTED', 'the server restarted while the job was running: it resumes from its last completed round');
      else this.transition(id, 'ABORTED_BY_RESTART', 'the server stopped while the job was running; requeue it to run it again');
    return running.map((r) => r.id);
  }

  create(j: { id: string; name: string; submitter: string; submitterOrg: string }): JobRecord {
    const at = new Date().toISOString();
    this.db.transaction(() => {
      this.db
        .prepare(`INSERT INTO jobs (id, name, submitter, submitter_org, state, submitted_at) VALUES (?, ?, ?, ?, 'SUBMITTED', ?)`)
        .run(j.id, j.name, j.submitter, j.submitterOrg, at);
      this.db
        .prepare(`INSERT INTO job_events (job_id, at, state, detail) VALUES (?, ?, 'SUBMITTED', ?)`)
        .run(j.id, at, `submitted by ${j.submitter}`);
    })();
    return this.get(j.id)!;
  }

  transition(id: string, state: JobState, detail: string | null = null, extra: { sites?: string[]; result?: unknown } = {}): void {
    const at = new Date().toISOString();
    this.db.transaction(() => {
      const sets = ['state = @state', 'detail = @detail'];
      if (state === 'RUNNING') sets.push('started_at = @at', 'ended_at = NULL');
      if (FINAL_STATES.includes(state)) sets.push('ended_at = @at');
      if (extra.sites) sets.push('sites = @sites');
      if (extra.result !== undefined) sets.push('result = @result');
      this.db
        .prepare(`UPDATE jobs SET ${sets.join(', ')} WHERE id = @id`)
        .run({ id, state, detail, at, sites: JSON.stringify(extra.sites ?? []), result: JSON.stringify(extra.result ?? null) });
      this.db.prepare(`INSERT INTO job_events (job_id, at, state, detail) VALUES (?, ?, ?, ?)`).run(id, at, state, detail);
    })();
  }

  get(id: string): JobRecord | null {
    const r = this.db.prepare(`SELECT * FROM jobs WHERE id = ?`).get(id) as JobRow | undefined;
    return r ? toRecord(r) : null;
  }

  list(): JobRecord[] {
    return (this.db.prepare(`SELECT * FROM jobs ORDER BY submitted_at, rowid`).all() as JobRow[]).map(toRecord);
  }

  /** Jobs waiting to run, oldest first. */
  queued(): JobRecord[] {
    return (this.db.prepare(`SELECT * FROM jobs WHERE state = 'SUBMITTED' ORDER BY submitted_at, rowid`).all() as JobRow[]).map(toRecord);
  }

  /** How many jobs are in each state (every state, zero included). */
  countByState(): Record<JobState, number> {
    const out = Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as Record<JobState, number>;
    const rows = this.db.prepare(`SELECT state, COUNT(*) AS n FROM jobs GROUP BY state`).all() as { state: JobState; n: number }[];
    for (const r of rows) out[r.state] = r.n;
    return out;
  }

  events(id: string): JobEvent[] {
    return this.db.prepare(`SELECT at, state, detail FROM job_events WHERE job_id = ? ORDER BY id`).all(id) as JobEvent[];
  }

  audit(e: Omit<AuditEntry, 'at'>): void {
    this.db
      .prepare(`INSERT INTO audit (at, user, org, role, command, args, allowed, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
      .run(new Date().toISOString(), e.user, e.org, e.role, e.command, e.args, e.allowed ? 1 : 0, e.outcome);
  }

  auditLog(limit = 1000): AuditEntry[] {
    const rows = this.db
      .prepare(`SELECT at, user, org, role, command, args, allowed, outcome FROM audit ORDER BY id DESC LIMIT ?`)
      .all(limit) as (Omit<AuditEntry, 'allowed'> & { allowed: number })[];
    return rows.reverse().map((r) => ({ ...r, allowed: r.allowed === 1 }));
  }

  close(): void {
    this.tracking.close();
    this.db.close();
  }
}
