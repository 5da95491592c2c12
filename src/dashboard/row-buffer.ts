/**
 * Tracked rows kept in memory, as the dashboard reads them (MetricRows): the simulation's dashboard
 * is fed each row as the simulator's tracking store records it (simulate's onTracked), so it needs
 * no second connection to that store's file.
 */
import type { TrackedRow } from '../tracking/types.ts';
import type { MetricRows } from './views.ts';

/** Rows kept: past this the oldest go. */
const MAX_ROWS = 1_000_000;

export class RowBuffer implements MetricRows {
  private readonly rows: TrackedRow[] = [];
  private readonly listeners = new Set<{ jobId: string | null; fn: (rows: readonly TrackedRow[]) => void }>();

  add(r: TrackedRow): void {
    this.rows.push(r);
    if (this.rows.length > MAX_ROWS) this.rows.splice(0, this.rows.length - MAX_ROWS);
    for (const l of this.listeners) if (l.jobId === null || l.jobId === r.jobId) l.fn([r]);
  }

  metricsSince(jobId: string, afterId = 0, limit = 10_000): TrackedRow[] {
    // ids only grow: the first row after afterId by bisection
    let lo = 0;
    let hi = this.rows.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.rows[mid]!.id <= afterId) lo = mid + 1;
      else hi = mid;
    }
    const out: TrackedRow[] = [];
    for (let i = lo; i < this.rows.length && out.length < limit; i++) if (this.rows[i]!.jobId === jobId) out.push(this.rows[i]!);
    return out;
  }

  params(jobId: string): Record<string, Record<string, string>> {
    const out: Record<string, Record<string, string>> = {};
    for (const r of this.rows) if (r.jobId === jobId && r.kind === 'param' && r.text !== null) (out[r.site] ??= {})[r.key] = r.text;
    return out;
  }

  subscribe(jobId: string | null, fn: (rows: readonly TrackedRow[]) => void): () => void {
    const l = { jobId, fn };
    this.listeners.add(l);
    return () => void this.listeners.delete(l);
  }
}
