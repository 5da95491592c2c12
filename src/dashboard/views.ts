/** What the dashboard's API and event stream answer: the backend's rows with the telemetry's live state. */
import type { DashboardBackend, JobDetail } from './backend.ts';
import type { MetricPoint, Telemetry } from './telemetry.ts';
import type { DashboardUser } from './token.ts';

/** A job's points: the telemetry's, or (a job that ran before this server started) its summary's rounds. */
export function jobPoints(telemetry: Telemetry, job: JobDetail, afterSeq = 0): MetricPoint[] {
  const live = telemetry.points(job.id, afterSeq);
  if (live.length > 0 || afterSeq > 0 || telemetry.progress(job.id)) return live;
  return job.rounds.flatMap((r) =>
    Object.entries(r.siteMetrics).flatMap(([site, ms]) =>
      Object.entries(ms).map(([key, value]) => ({ seq: 0, site, key, value, round: r.round, step: null, source: 'result' as const })),
    ),
  );
}

export function overview(b: DashboardBackend, t: Telemetry): unknown {
  return { jobs: b.jobs().map((j) => ({ ...j, progress: t.progress(j.id) })), sites: b.sites(), transfers: t.transfers() };
}

export function jobView(b: DashboardBackend, t: Telemetry, user: DashboardUser, id: string): Record<string, unknown> | null {
  const job = b.job(id);
  if (!job) return null;
  const live = t.roundSummaries(id);
  return {
    ...job,
    rounds: live.length ? live : job.rounds,
    progress: t.progress(id),
    may: { abort: b.may(user, 'abort', id), download: b.may(user, 'download', id) },
  };
}
