/**
 * What the dashboard's API and event stream answer: the backend's rows with the telemetry's live
 * state, and the metric points of a job read from the tracking store (src/tracking, docs/tracking.md).
 */
import type { TrackedRow } from '../tracking/types.ts';
import { RESULT_PREFIX } from '../tracking/record.ts';
import type { DashboardBackend } from './backend.ts';
import type { Telemetry } from './telemetry.ts';
import type { DashboardUser } from './token.ts';

/** What the dashboard reads of the tracking store: the server's TrackingStore, or the simulation's rows. */
export interface MetricRows {
  /** a job's rows with id > afterId, oldest first, at most `limit` */
  metricsSince(jobId: string, afterId?: number, limit?: number): TrackedRow[];
  /** the params each site logged */
  params(jobId: string): Record<string, Record<string, string>>;
  /** calls `fn` as rows are recorded; returns the unsubscribe */
  subscribe?(jobId: string | null, fn: (rows: readonly TrackedRow[]) => void): () => void;
}

/** One plotted value: a flare.log() scalar (with its step), or a metric a site sent with its round's result. */
export interface MetricPoint {
  seq: number;
  site: string;
  key: string;
  value: number;
  round: number | null;
  step: number | null;
  source: 'log' | 'result';
}

/** A text a site logged (flare.log(key, 'text')). */
export interface Note {
  seq: number;
  site: string;
  key: string;
  text: string;
  round: number | null;
  step: number | null;
}

/** Points sent at most per answer: a reconnecting page asks again from the last one. */
const MAX_ROWS = 200_000;

/**
 * A tracked row as the page plots it: a site's `result/<key>` is that site's result metric, the
 * server's own rows (site '') are the round's weighted mean, drawn as the series "mean".
 */
export function pointOf(r: TrackedRow): MetricPoint | null {
  if (r.kind !== 'scalar' || r.value === null) return null;
  if (r.site === '') return { seq: r.id, site: 'mean', key: r.key, value: r.value, round: r.round, step: null, source: 'result' };
  if (r.key.startsWith(RESULT_PREFIX))
    return {
      seq: r.id,
      site: r.site,
      key: r.key.slice(RESULT_PREFIX.length),
      value: r.value,
      round: r.round,
      step: null,
      source: 'result',
    };
  return { seq: r.id, site: r.site, key: r.key, value: r.value, round: r.round, step: r.step, source: 'log' };
}

/** A job's points and notes after row `afterId`, and the last row id read (the next call's `afterId`). */
export function jobPoints(rows: MetricRows, jobId: string, afterId = 0): { points: MetricPoint[]; notes: Note[]; lastId: number } {
  const points: MetricPoint[] = [];
  const notes: Note[] = [];
  let last = afterId;
  for (let read = 0; read < MAX_ROWS;) {
    const batch = rows.metricsSince(jobId, last, 10_000);
    for (const r of batch) {
      const p = pointOf(r);
      if (p) points.push(p);
      else if (r.kind === 'text' && r.text !== null)
        notes.push({ seq: r.id, site: r.site || 'server', key: r.key, text: r.text, round: r.round, step: r.step });
    }
    read += batch.length;
    if (batch.length) last = batch.at(-1)!.id;
    if (batch.length < 10_000) break;
  }
  return { points, notes, lastId: last };
}

export function overview(b: DashboardBackend, t: Telemetry): unknown {
  return { jobs: b.jobs().map((j) => ({ ...j, progress: t.progress(j.id) })), sites: b.sites(), transfers: t.transfers() };
}

export function jobView(
  b: DashboardBackend,
  t: Telemetry,
  rows: MetricRows,
  user: DashboardUser,
  id: string,
): Record<string, unknown> | null {
  const job = b.job(id);
  if (!job) return null;
  const live = t.roundSummaries(id);
  return {
    ...job,
    rounds: live.length ? live : job.rounds,
    progress: t.progress(id),
    params: rows.params(id),
    may: { abort: b.may(user, 'abort', id), download: b.may(user, 'download', id) },
  };
}
