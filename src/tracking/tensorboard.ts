/**
 * TensorBoard exporter: one run per site under the job's log dir (`<logdir>/site-1/`,
 * `<logdir>/server/` for the round means), each an `events.out.tfevents.*` file that
 * `tensorboard --logdir <logdir>` reads. Scalars are scalar summaries at step = the row's step, or
 * its round when the trainer gave none; texts are text summaries; params are texts tagged
 * `params/<name>` at step 0. A job resumed after a server restart rewrites its runs from the store
 * (`rewrite`) before going on, so what the interrupted round had written is not there twice.
 */
import { appendFileSync, existsSync, fsyncSync, mkdirSync, openSync, closeSync, readdirSync, renameSync, rmSync, writeSync } from 'node:fs';
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
    // one append per site and batch: a record is never split by a crash between two writes of it
    for (const [site, records] of bySite(rows)) appendFileSync(this.file(site), Buffer.concat(records));
  }

  close(): void {}

  /**
   * Replaces every run under the log dir with one event file holding exactly `rows` (a job's rows
   * in the store), before any write: a resumed job's runs then hold each row once, whatever the
   * stopped server had written. Each new file is written under a name TensorBoard ignores, synced,
   * and renamed in place after the old files are removed; a crash midway leaves a run short, and
   * the next resume rewrites it again from the store.
   */
  rewrite(rows: readonly TrackedRow[]): void {
    const sites = bySite(rows);
    const dirs = new Map<string, string | null>([...sites.keys()].map((s) => [siteLabel(s), s]));
    if (existsSync(this.logdir))
      for (const d of readdirSync(this.logdir, { withFileTypes: true })) if (d.isDirectory() && !dirs.has(d.name)) dirs.set(d.name, null);
    for (const [label, site] of dirs) {
      const dir = join(this.logdir, label);
      mkdirSync(dir, { recursive: true });
      const old = readdirSync(dir).filter((f) => f.includes('tfevents'));
      if (site === null) {
        for (const f of old) rmSync(join(dir, f), { force: true });
        continue;
      }
      const { name, at } = this.fileName(dir);
      const tmp = join(dir, `.rewrite-${process.pid}.tmp`);
      const fd = openSync(tmp, 'w');
      try {
        writeSync(fd, Buffer.concat([tfRecord(fileVersionEvent(at)), ...sites.get(site)!]));
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      for (const f of old) rmSync(join(dir, f), { force: true });
      renameSync(tmp, name);
      this.files.set(site, name);
    }
  }

  private fileName(dir: string): { name: string; at: number } {
    const at = Date.now() / 1000;
    return { name: join(dir, `events.out.tfevents.${Math.floor(at)}.${hostname()}.${process.pid}.flotilla`), at };
  }

  /** The run's event file, created with its version record on first use. */
  private file(site: string): string {
    let f = this.files.get(site);
    if (!f) {
      const dir = join(this.logdir, siteLabel(site));
      mkdirSync(dir, { recursive: true });
      const { name, at } = this.fileName(dir);
      f = name;
      appendFileSync(f, tfRecord(fileVersionEvent(at)));
      this.files.set(site, f);
    }
    return f;
  }
}

/** Each site's rows as TFRecords of summary events, in order. */
function bySite(rows: readonly TrackedRow[]): Map<string, Buffer[]> {
  const out = new Map<string, Buffer[]>();
  for (const r of rows) {
    const value: SummaryValue = r.kind === 'scalar' ? { tag: exportTag(r), scalar: r.value! } : { tag: exportTag(r), text: r.text ?? '' };
    const records = out.get(r.site) ?? [];
    out.set(r.site, records);
    records.push(tfRecord(summaryEvent(r.at / 1000, exportStep(r), value)));
  }
  return out;
}
