/**
 * The tracking store: every scalar, text and param a job's sites log, one row each, in SQLite
 * (the server's jobs.sqlite, or the simulator's server/tracking.sqlite). Rows get their id when
 * they are recorded and reach listeners at once; they are written to the database in batches (one
 * transaction per `flushMs`, or per `batchRows` rows), so a trainer logging every step costs one
 * fsync per batch, not per value. Reads flush first, so `metricsSince` always sees every recorded
 * row. One process writes a store file (the server holds its workspace lock).
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { TRACKING_LIMITS, type TrackedInput, type TrackedKind, type TrackedRow } from './types.ts';

/** Named schema changes, applied once each, in order (recorded in schema_migrations). */
const MIGRATIONS: { name: string; sql: string }[] = [
  {
    name: '001-tracking',
    sql: `
      CREATE TABLE IF NOT EXISTS tracking (
        id INTEGER PRIMARY KEY, job_id TEXT NOT NULL, site TEXT NOT NULL, round INTEGER, step INTEGER,
        kind TEXT NOT NULL, key TEXT NOT NULL, value REAL, text TEXT, at INTEGER NOT NULL);
      CREATE INDEX IF NOT EXISTS tracking_job ON tracking(job_id, id);`,
  },
];

/** Applies the migrations this database lacks; returns the names applied now. */
export function migrate(db: Database.Database): string[] {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)`);
  const done = new Set((db.prepare(`SELECT name FROM schema_migrations`).all() as { name: string }[]).map((r) => r.name));
  const applied: string[] = [];
  for (const m of MIGRATIONS) {
    if (done.has(m.name)) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.prepare(`INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)`).run(m.name, new Date().toISOString());
    })();
    applied.push(m.name);
  }
  return applied;
}

export type TrackingListener = (rows: readonly TrackedRow[]) => void;

export interface TrackingStoreOptions {
  /** longest a recorded row waits before it is written (default 200 ms) */
  flushMs?: number;
  /** rows that trigger a write at once (default 1000) */
  batchRows?: number;
  /** rows kept per job (default TRACKING_LIMITS.rowsPerJob) */
  maxRowsPerJob?: number;
  /** told once per job when rows are dropped past the limit */
  onDropped?: (jobId: string, limit: number) => void;
}

interface Row {
  id: number;
  job_id: string;
  site: string;
  round: number | null;
  step: number | null;
  kind: TrackedKind;
  key: string;
  value: number | null;
  text: string | null;
  at: number;
}

const toRow = (r: Row): TrackedRow => ({
  id: r.id,
  jobId: r.job_id,
  site: r.site,
  round: r.round,
  step: r.step,
  kind: r.kind,
  key: r.key,
  value: r.value,
  text: r.text,
  at: r.at,
});

export class TrackingStore {
  private readonly pending: TrackedRow[] = [];
  private timer: NodeJS.Timeout | null = null;
  private nextId: number;
  private readonly counts = new Map<string, number>();
  private readonly dropped = new Set<string>();
  private readonly listeners = new Set<{ jobId: string | null; fn: TrackingListener }>();
  /** told after each write, with the rows it committed (exporters: what they get is on disk) */
  private readonly writtenListeners = new Set<{ jobId: string | null; fn: TrackingListener }>();
  private readonly insert: Database.Statement;
  /** long polls in progress, ended by close() */
  private readonly waiters = new Set<() => void>();
  private closed = false;

  /** A store in its own database file (the simulator's). */
  static open(path: string, opts: TrackingStoreOptions = {}): TrackingStore {
    mkdirSync(dirname(path), { recursive: true });
    const db = new Database(path);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    const s = new TrackingStore(db, opts);
    s.ownsDb = true;
    return s;
  }

  private ownsDb = false;

  /** A store in an open database (the job store's), which it migrates. */
  constructor(
    private readonly db: Database.Database,
    private readonly opts: TrackingStoreOptions = {},
  ) {
    migrate(db);
    this.nextId = ((db.prepare(`SELECT MAX(id) AS m FROM tracking`).get() as { m: number | null }).m ?? 0) + 1;
    this.insert = db.prepare(
      `INSERT INTO tracking (id, job_id, site, round, step, kind, key, value, text, at)
       VALUES (@id, @jobId, @site, @round, @step, @kind, @key, @value, @text, @at)`,
    );
  }

  /**
   * Records one row (written within flushMs) and hands it to the listeners now. Returns it, or
   * null when the job is past its row limit.
   */
  record(jobId: string, input: TrackedInput): TrackedRow | null {
    if (this.closed) return null;
    const limit = this.opts.maxRowsPerJob ?? TRACKING_LIMITS.rowsPerJob;
    const n = this.count(jobId);
    if (n >= limit) {
      if (!this.dropped.has(jobId)) {
        this.dropped.add(jobId);
        this.opts.onDropped?.(jobId, limit);
      }
      return null;
    }
    this.counts.set(jobId, n + 1);
    const row: TrackedRow = {
      id: this.nextId++,
      jobId,
      site: input.site,
      round: input.kind === 'param' ? null : (input.round ?? null),
      step: input.kind === 'param' ? null : (input.step ?? null),
      kind: input.kind,
      key: input.key,
      value: input.kind === 'scalar' ? input.value : null,
      text: input.kind === 'scalar' ? null : input.text,
      at: input.at ?? Date.now(),
    };
    this.pending.push(row);
    if (this.pending.length >= (this.opts.batchRows ?? 1000)) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), this.opts.flushMs ?? 200).unref();
    for (const l of this.listeners) if (l.jobId === null || l.jobId === jobId) l.fn([row]);
    return row;
  }

  /** Writes the recorded rows now (one transaction). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (!this.pending.length || this.closed) return;
    const rows = this.pending.splice(0);
    this.db.transaction(() => {
      for (const r of rows) this.insert.run(r);
    })();
    for (const l of this.writtenListeners) {
      const mine = l.jobId === null ? rows : rows.filter((r) => r.jobId === l.jobId);
      if (mine.length) l.fn(mine);
    }
  }

  /** The id of the last row recorded (in any job); 0 when there is none. */
  lastId(): number {
    return this.nextId - 1;
  }

  /** A job's rows with id > afterId, oldest first, at most `limit`. */
  metricsSince(jobId: string, afterId = 0, limit = 10_000): TrackedRow[] {
    this.flush();
    const rows = this.db
      .prepare(`SELECT * FROM tracking WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?`)
      .all(jobId, afterId, Math.max(0, Math.floor(limit))) as Row[];
    return rows.map(toRow);
  }

  /** Every row of a job, oldest first. */
  all(jobId: string): TrackedRow[] {
    const out: TrackedRow[] = [];
    for (let after = 0; ;) {
      const rows = this.metricsSince(jobId, after, 50_000);
      out.push(...rows);
      if (rows.length < 50_000) return out;
      after = rows[rows.length - 1]!.id;
    }
  }

  /** The params each site logged (the last value of each key). */
  params(jobId: string): Record<string, Record<string, string>> {
    this.flush();
    const rows = this.db.prepare(`SELECT site, key, text FROM tracking WHERE job_id = ? AND kind = 'param' ORDER BY id`).all(jobId) as {
      site: string;
      key: string;
      text: string;
    }[];
    const out: Record<string, Record<string, string>> = {};
    for (const r of rows) (out[r.site] ??= {})[r.key] = r.text;
    return out;
  }

  /** Jobs with at least one row, by their first row. */
  jobs(): string[] {
    this.flush();
    return (this.db.prepare(`SELECT job_id FROM tracking GROUP BY job_id ORDER BY MIN(id)`).all() as { job_id: string }[]).map(
      (r) => r.job_id,
    );
  }

  /** Calls `fn` with each row as it is recorded (of one job, or of all with jobId null); returns the unsubscribe. */
  subscribe(jobId: string | null, fn: TrackingListener): () => void {
    const l = { jobId, fn };
    this.listeners.add(l);
    return () => void this.listeners.delete(l);
  }

  /**
   * Like `subscribe`, but called when the rows are written to the database (within flushMs of
   * being recorded): what an exporter sends on is never lost by a crash of this process, so a
   * restarted job knows everything any exporter may have received.
   */
  subscribeWritten(jobId: string | null, fn: TrackingListener): () => void {
    const l = { jobId, fn };
    this.writtenListeners.add(l);
    return () => void this.writtenListeners.delete(l);
  }

  /**
   * A job's rows after `afterId`; if there are none yet, waits up to `timeoutMs` for the next
   * (long polling: `admin metrics --follow`). Resolves [] on timeout or abort.
   */
  async waitForRows(jobId: string, afterId: number, timeoutMs: number, limit = 10_000, signal?: AbortSignal): Promise<TrackedRow[]> {
    const now = this.metricsSince(jobId, afterId, limit);
    if (now.length || timeoutMs <= 0 || signal?.aborted) return now;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        off();
        this.waiters.delete(done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const t = setTimeout(done, timeoutMs);
      const off = this.subscribe(jobId, done);
      this.waiters.add(done);
      signal?.addEventListener('abort', done);
    });
    return this.closed ? [] : this.metricsSince(jobId, afterId, limit);
  }

  /** Deletes a job's rows (a requeued job starts afresh). */
  deleteJob(jobId: string): void {
    this.flush();
    this.db.prepare(`DELETE FROM tracking WHERE job_id = ?`).run(jobId);
    this.counts.delete(jobId);
    this.dropped.delete(jobId);
  }

  /**
   * Deletes a job's rows with id > afterId and returns them: a job resumed after a restart drops
   * what the interrupted round logged (the round runs again and logs it again).
   */
  deleteAfter(jobId: string, afterId: number): TrackedRow[] {
    this.flush();
    const rows = (this.db.prepare(`SELECT * FROM tracking WHERE job_id = ? AND id > ? ORDER BY id`).all(jobId, afterId) as Row[]).map(
      toRow,
    );
    if (!rows.length) return rows;
    this.db.prepare(`DELETE FROM tracking WHERE job_id = ? AND id > ?`).run(jobId, afterId);
    this.counts.delete(jobId);
    return rows;
  }

  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    for (const w of [...this.waiters]) w();
    this.listeners.clear();
    this.writtenListeners.clear();
    if (this.ownsDb) this.db.close();
  }

  private count(jobId: string): number {
    let n = this.counts.get(jobId);
    if (n === undefined) {
      n = (this.db.prepare(`SELECT COUNT(*) AS n FROM tracking WHERE job_id = ?`).get(jobId) as { n: number }).n;
      this.counts.set(jobId, n);
    }
    return n;
  }
}
