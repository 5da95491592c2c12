/**
 * Exporters: where a job's tracked rows go besides the store (TensorBoard event files, an MLflow
 * server; W&B or others implement the same interface). An exporter is fed a job's rows in id order,
 * live while the job runs (`attachExporters`: as the store writes them, so an exporter never holds
 * a row the store could lose in a crash) or all at once afterwards (`exportJob`). A failing
 * exporter is logged and dropped; it never fails the job.
 */
import type { Logger } from '../util/log.ts';
import type { TrackingStore } from './store.ts';
import type { TrackedRow } from './types.ts';

/** How a job's export ends: KILLED when the server stops under it (a restart may resume it). */
export type ExportEnd = 'FINISHED' | 'FAILED' | 'KILLED';

export interface TrackingExporter {
  /** for logs: "tensorboard", "mlflow" */
  readonly name: string;
  /** the job's next rows, in id order (called again only after the previous call settled) */
  write(rows: readonly TrackedRow[]): Promise<void> | void;
  /** the job is over (or the server stops under it): write what is buffered, end runs, close files */
  close(status: ExportEnd): Promise<void> | void;
}

export interface AttachedExporters {
  /** waits for every row so far to be written, then closes the exporters */
  close(status: ExportEnd): Promise<void>;
}

/**
 * Feeds a job's rows to the exporters as they are recorded: batched (what arrives while a write is
 * under way goes in the next call), in order, each exporter on its own queue so a slow one (an
 * MLflow server far away) never holds up another.
 */
export function attachExporters(store: TrackingStore, jobId: string, exporters: TrackingExporter[], log: Logger): AttachedExporters {
  const feeds = exporters.map((e) => new Feed(e, log));
  const off = store.subscribeWritten(jobId, (rows) => feeds.forEach((f) => f.push(rows)));
  return {
    async close(status) {
      store.flush();
      off();
      await Promise.all(feeds.map((f) => f.close(status)));
    },
  };
}

/** Writes every row a job has in the store to the exporters, then closes them (an export after the fact). */
export async function exportJob(
  store: TrackingStore,
  jobId: string,
  exporters: TrackingExporter[],
  status: 'FINISHED' | 'FAILED',
): Promise<void> {
  for (const e of exporters) {
    for (let after = 0; ;) {
      const rows = store.metricsSince(jobId, after, 5000);
      if (!rows.length) break;
      await e.write(rows);
      after = rows[rows.length - 1]!.id;
    }
    await e.close(status);
  }
}

class Feed {
  private queued: TrackedRow[] = [];
  private running: Promise<void> | null = null;
  private failed = false;

  constructor(
    private readonly exporter: TrackingExporter,
    private readonly log: Logger,
  ) {}

  push(rows: readonly TrackedRow[]): void {
    if (this.failed) return;
    this.queued.push(...rows);
    this.running ??= this.drain();
  }

  private async drain(): Promise<void> {
    // a macrotask first, so rows recorded in the same tick go out in one call
    await new Promise((r) => setImmediate(r));
    while (this.queued.length && !this.failed) {
      const batch = this.queued;
      this.queued = [];
      try {
        await this.exporter.write(batch);
      } catch (e) {
        this.failed = true;
        this.log.warn(
          { exporter: this.exporter.name, err: (e as Error).message },
          'tracking exporter failed: it gets no more rows of this job',
        );
      }
    }
    this.running = null;
  }

  async close(status: ExportEnd): Promise<void> {
    while (this.running) await this.running;
    if (this.failed) return;
    try {
      await this.exporter.close(status);
    } catch (e) {
      this.log.warn({ exporter: this.exporter.name, err: (e as Error).message }, 'tracking exporter failed to close');
    }
  }
}
