/** The simulator's per-round table and progress bar (bar only on a terminal; plain lines otherwise). */
import { SingleBar, Presets } from 'cli-progress';
import { RESULT_PREFIX } from '../tracking/record.ts';
import { SERVER_SITE, type TrackedRow } from '../tracking/types.ts';
import type { RoundSummary } from '../workflows/workflow.ts';

const PREFERRED = ['train_loss', 'val_loss', 'val_accuracy', 'loss', 'accuracy'];

export class RoundTable {
  private keys: string[] | null = null;
  /** bytes moved and announced size per transfer (peer/stream/direction) this round, for the bar */
  private readonly moved = new Map<string, { bytes: number; total?: number }>();
  private roundStarted = performance.now();
  private bar: SingleBar | null = null;
  private readonly tty = Boolean(process.stderr.isTTY) && !process.env.CI;
  /** the last value each site logged (flare.log) of each key, per round */
  private readonly logged = new Map<number, Map<string, Map<string, number>>>();

  constructor(private readonly out: (line: string) => void = (l) => process.stdout.write(`${l}\n`)) {}

  progress(p: { round: number; done: number; expected: number }): void {
    if (!this.tty) return;
    if (!this.bar) {
      this.bar = new SingleBar(
        {
          format: ' round {round} [{bar}] {value}/{total} sites | {moved} moved, {rate}, ETA {eta}',
          clearOnComplete: true,
          hideCursor: true,
          stream: process.stderr,
        },
        Presets.shades_classic,
      );
      this.bar.start(p.expected, 0, { round: p.round + 1, ...this.traffic() });
    }
    this.bar.update(p.done, { round: p.round + 1, ...this.traffic() });
  }

  /** Model bytes moving between the server and the sites (both directions). */
  transfer(t: { peer: string; stream: number; direction: string; bytes: number; total?: number }): void {
    this.moved.set(`${t.peer}/${t.stream}/${t.direction}`, { bytes: t.bytes, ...(t.total !== undefined && { total: t.total }) });
    this.bar?.update({ ...this.traffic() });
  }

  /** Bytes moved this round, the rate, and the time left for the transfers under way (those that announced a size). */
  private traffic(): { moved: string; rate: string; eta: string } {
    let bytes = 0;
    let left = 0;
    for (const m of this.moved.values()) {
      bytes += m.bytes;
      if (m.total !== undefined) left += Math.max(0, m.total - m.bytes);
    }
    const s = (performance.now() - this.roundStarted) / 1000;
    const rate = bytes / Math.max(s, 1e-3);
    return { moved: human(bytes), rate: `${human(rate)}/s`, eta: left > 0 && rate > 0 ? `${Math.ceil(left / rate)} s` : '-' };
  }

  /** A tracked row: the scalars sites log while they train show in their round's row (mean over sites of each one's last value). */
  tracked(r: TrackedRow): void {
    if (r.kind !== 'scalar' || r.site === SERVER_SITE || r.round === null || r.key.startsWith(RESULT_PREFIX)) return;
    const round = this.logged.get(r.round) ?? new Map<string, Map<string, number>>();
    this.logged.set(r.round, round);
    const key = round.get(r.key) ?? new Map<string, number>();
    round.set(r.key, key);
    key.set(r.site, r.value!);
  }

  /** The round's metrics: what the results carried, and the means of what was only logged. */
  private metricsOf(s: RoundSummary): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [key, bySite] of this.logged.get(s.round) ?? []) {
      const v = [...bySite.values()];
      out[key] = v.reduce((a, b) => a + b, 0) / v.length;
    }
    this.logged.delete(s.round);
    return { ...out, ...s.metrics };
  }

  row(s: RoundSummary): void {
    this.bar?.stop();
    this.bar = null;
    this.moved.clear();
    this.roundStarted = performance.now();
    const metrics = this.metricsOf(s);
    if (!this.keys) {
      const all = Object.keys(metrics);
      this.keys = [...PREFERRED.filter((k) => all.includes(k)), ...all.filter((k) => !PREFERRED.includes(k)).sort()].slice(0, 6);
      this.out(['round', 'sites', ...this.keys, 'seconds'].map((h) => h.padStart(Math.max(h.length, 8))).join('  '));
    }
    const cells = [
      `${s.round + 1}/${s.totalRounds}`,
      String(s.sites.length),
      ...this.keys.map((k) => fmt(metrics[k])),
      s.seconds.toFixed(1),
    ];
    const widths = ['round', 'sites', ...this.keys, 'seconds'].map((h) => Math.max(h.length, 8));
    // swarm: the site that aggregated the round (and how many tries it took)
    const agg =
      s.aggregator === undefined ? '' : `  aggregated by ${s.aggregator}${(s.attempts ?? 1) > 1 ? ` (attempt ${s.attempts})` : ''}`;
    this.out(cells.map((c, i) => c.padStart(widths[i]!)).join('  ') + agg);
    const failed = Object.entries(s.failures);
    for (const [site, err] of failed) this.out(`  ! ${site}: ${err.split('\n')[0]}`);
  }
}

function human(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${units[u]}`;
}

function fmt(v: number | undefined): string {
  if (v === undefined) return '-';
  return Math.abs(v) >= 1000 || (Math.abs(v) < 0.001 && v !== 0) ? v.toExponential(3) : v.toFixed(4);
}
