/**
 * The simulator's live progress on a terminal: a line for the round (sites done, bytes moved, rate,
 * ETA) from the moment it starts, and a line per site saying what it is doing — receiving the model,
 * training (for how long, and the last value it logged), sending its result, done. Redrawn by
 * cli-progress (a MultiBar, each line rendered from the state here), cleared when the round's row is
 * printed.
 */
import { MultiBar, type SingleBar } from 'cli-progress';
import type { Writable } from 'node:stream';

/** Site lines shown at most; the others are summed up in one line. */
export const MAX_SITE_LINES = 8;

interface Transfer {
  bytes: number;
  total?: number;
  done: boolean;
}

interface SiteState {
  model?: Transfer;
  result?: Transfer;
  /** when the model had arrived (training began) */
  trainingSince?: number;
  resultSince?: number;
  doneAt?: number;
  lastLog?: { key: string; value: number; step: number | null };
}

export interface TransferEvent {
  peer: string;
  stream: number;
  direction: string;
  bytes: number;
  total?: number;
  done?: boolean;
}

export class RoundProgress {
  private readonly sites = new Map<string, SiteState>();
  private readonly started = performance.now();
  private multi: MultiBar | null = null;
  private header: SingleBar | null = null;
  private readonly lines: SingleBar[] = [];
  private done = 0;
  private expected = 0;

  constructor(
    private readonly round: number | null,
    private readonly stream: Writable,
    /** draw even when the stream is not a terminal (tests) */
    private readonly force = false,
  ) {}

  /** Results so far (the workflow's onProgress; done 0 when the round starts). */
  progress(done: number, expected: number): void {
    this.done = done;
    this.expected = expected;
    this.draw();
  }

  transfer(t: TransferEvent): void {
    const s = this.site(t.peer);
    const now = performance.now();
    const x: Transfer = { bytes: t.bytes, ...(t.total !== undefined && { total: t.total }), done: t.done ?? false };
    if (t.direction === 'send') {
      s.model = x;
      if (x.done) s.trainingSince ??= now;
    } else {
      s.result = x;
      s.resultSince ??= now;
      if (x.done) s.doneAt ??= now;
    }
    this.draw();
  }

  /** A scalar the site logged while training: shown on its line. */
  logged(site: string, key: string, value: number, step: number | null): void {
    this.site(site).lastLog = { key, value, step };
  }

  stop(): void {
    this.multi?.stop();
    this.multi = null;
  }

  /** The lines as they would be drawn now (the header, then the sites). */
  render(): string[] {
    const now = performance.now();
    const names = [...this.sites.keys()].sort(compareSites);
    const shown = names.slice(0, MAX_SITE_LINES);
    const lines = [this.headerLine(now), ...shown.map((n) => siteLine(n, this.sites.get(n)!, now))];
    const rest = names.slice(MAX_SITE_LINES);
    if (rest.length) {
      const phases = new Map<string, number>();
      for (const n of rest) {
        const p = phase(this.sites.get(n)!);
        phases.set(p, (phases.get(p) ?? 0) + 1);
      }
      lines.push(`   … ${rest.length} more sites: ${[...phases].map(([p, k]) => `${k} ${p}`).join(', ')}`);
    }
    return lines;
  }

  private site(name: string): SiteState {
    let s = this.sites.get(name);
    if (!s) {
      s = {};
      this.sites.set(name, s);
    }
    return s;
  }

  private headerLine(now: number): string {
    let bytes = 0;
    let left = 0;
    for (const s of this.sites.values())
      for (const t of [s.model, s.result]) {
        if (!t) continue;
        bytes += t.bytes;
        if (t.total !== undefined && !t.done) left += Math.max(0, t.total - t.bytes);
      }
    const secs = (now - this.started) / 1000;
    const rate = bytes / Math.max(secs, 1e-3);
    const eta = left > 0 && rate > 0 ? `, ETA ${Math.ceil(left / rate)} s` : '';
    const expected = this.expected || this.sites.size;
    const bar = expected ? meter(this.done / expected) : '';
    const what = this.round === null ? 'tasks' : `round ${this.round + 1}`;
    return ` ${what} ${bar} ${this.done}/${expected} sites | ${human(bytes)} moved, ${human(rate)}/s${eta} | ${secs.toFixed(1)} s`;
  }

  private draw(): void {
    if (!this.multi) {
      this.multi = new MultiBar({
        format: (_o, _p, payload: unknown) => (payload as { text?: string }).text ?? '',
        stream: this.stream,
        clearOnComplete: true,
        hideCursor: true,
        noTTYOutput: this.force,
        notTTYSchedule: 200,
        linewrap: false,
        fps: 5,
      });
      this.header = this.multi.create(1, 0, { text: '' });
    }
    const lines = this.render();
    while (this.lines.length < lines.length - 1) this.lines.push(this.multi.create(1, 0, { text: '' }));
    this.header!.update(0, { text: lines[0] });
    lines.slice(1).forEach((l, i) => this.lines[i]!.update(0, { text: l }));
  }
}

function phase(s: SiteState): string {
  if (s.doneAt !== undefined) return 'done';
  if (s.result) return 'sending';
  if (s.trainingSince !== undefined) return 'training';
  return 'receiving';
}

/** One site's line: what it is doing now. */
export function siteLine(name: string, s: SiteState, now: number): string {
  const label = `   ${name.padEnd(12)}`;
  const p = phase(s);
  if (p === 'done') return `${label} done`;
  if (p === 'sending') return `${label} ${transferText('result →', s.result!)}`;
  if (p === 'training') {
    const secs = ((now - s.trainingSince!) / 1000).toFixed(1);
    const log = s.lastLog ? ` | ${s.lastLog.key} ${fmt(s.lastLog.value)}${s.lastLog.step === null ? '' : ` (step ${s.lastLog.step})`}` : '';
    return `${label} training ${secs} s${log}`;
  }
  return `${label} ${transferText('model ←', s.model ?? { bytes: 0, done: false })}`;
}

function transferText(what: string, t: Transfer): string {
  if (t.total === undefined || t.total <= 0) return `${what} ${human(t.bytes)}`;
  return `${meter(t.bytes / t.total)} ${what} ${human(t.bytes)} of ${human(t.total)}`;
}

function meter(f: number, width = 20): string {
  const n = Math.max(0, Math.min(width, Math.round(f * width)));
  return `[${'█'.repeat(n)}${'░'.repeat(width - n)}]`;
}

function compareSites(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

export function human(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${units[u]}`;
}

function fmt(v: number): string {
  return Math.abs(v) >= 1000 || (Math.abs(v) < 0.001 && v !== 0) ? v.toExponential(3) : v.toFixed(4);
}
