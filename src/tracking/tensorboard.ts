/**
 * TensorBoard exporter: one run per site under the job's log dir (`<logdir>/site-1/`,
 * `<logdir>/server/` for the round means), each an `events.out.tfevents.*` file that
 * `tensorboard --logdir <logdir>` reads. Scalars are scalar summaries at step = the row's step, or
 * its round when the trainer gave none; texts are text summaries; params are texts tagged
 * `params/<name>` at step 0.
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { TrackingExporter } from './exporter.ts';
import { type SummaryValue, fileVersionEvent, summaryEvent, tfRecord } from './tfevents.ts';
import { type TrackedRow, siteLabel } from './types.ts';

/** The step a row is shown at, in TensorBoard and MLflow alike. */
export function exportStep(r: TrackedRow): number {
  return r.step ?? r.round ?? 0;
}

/** The tag a row is shown under. */
export function exportTag(r: TrackedRow): string {
  return r.kind === 'param' ? `params/${r.key}` : r.key;
}

export class TensorBoardExporter implements TrackingExporter {
  readonly name = 'tensorboard';
  private readonly files = new Map<string, string>();

  constructor(readonly logdir: string) {}

  write(rows: readonly TrackedRow[]): void {
    const bySite = new Map<string, Buffer[]>();
    for (const r of rows) {
      const value: SummaryValue = r.kind === 'scalar' ? { tag: exportTag(r), scalar: r.value! } : { tag: exportTag(r), text: r.text ?? '' };
      const records = bySite.get(r.site) ?? [];
      bySite.set(r.site, records);
      records.push(tfRecord(summaryEvent(r.at / 1000, exportStep(r), value)));
    }
    // one append per site and batch: a record is never split by a crash between two writes of it
    for (const [site, records] of bySite) appendFileSync(this.file(site), Buffer.concat(records));
  }

  close(): void {}

  /** The run's event file, created with its version record on first use. */
  private file(site: string): string {
    let f = this.files.get(site);
    if (!f) {
      const dir = join(this.logdir, siteLabel(site));
      mkdirSync(dir, { recursive: true });
      const now = Date.now() / 1000;
      f = join(dir, `events.out.tfevents.${Math.floor(now)}.${hostname()}.${process.pid}.flotilla`);
      appendFileSync(f, tfRecord(fileVersionEvent(now)));
      this.files.set(site, f);
    }
    return f;
  }
}
