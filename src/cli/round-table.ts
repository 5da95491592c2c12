/** The simulator's per-round table and its live progress (src/cli/round-progress.ts; drawn on a terminal only). */
import type { Writable } from 'node:stream';
import { RESULT_PREFIX } from '../tracking/record.ts';
import { SERVER_SITE, type TrackedRow } from '../tracking/types.ts';
import type { RoundSummary } from '../workflows/workflow.ts';
import { RoundProgress, type TransferEvent } from './round-progress.ts';

const PREFERRED = ['train_loss', 'val_loss', 'val_accuracy', 'loss', 'accuracy'];

export interface RoundTableOptions {
  /** where the live progress goes (default stderr) */
  progressStream?: Writable;
  /** draw the progress even when that stream is not a terminal (default: only on a terminal, not in CI) */
  forceProgress?: boolean;
}

export class RoundTable {
  private keys: string[] | null = null;
  /** this round's live progress (null between rounds, or when not drawn) */
  private live: RoundProgress | null = null;
  private round: number | null = null;
  private readonly stream: Writable;
  private readonly draw: boolean;
  /** the last value each site logged (flare.log) of each key, per round */
  private readonly logged = new Map<number, Map<string, Map<string, number>>>();

  constructor(
    private readonly out: (line: string) => void = (l) => process.stdout.write(`${l}\n`),
    opts: RoundTableOptions = {},
  ) {
    this.stream = opts.progressStream ?? process.stderr;
    this.draw = opts.forceProgress ?? (Boolean((this.stream as { isTTY?: boolean }).isTTY) && !process.env.CI);
  }

  /** Results so far in a round; the workflow reports done 0 when the round starts, so the progress shows from its first second. */
  progress(p: { round: number; done: number; expected: number }): void {
    if (this.round !== p.round) {
      this.live?.stop();
      this.live = null;
      this.round = p.round;
    }
    this.progressOf()?.progress(p.done, p.expected);
  }

  /** Model bytes moving between the server and the sites (send: the model to a site, receive: its result). */
  transfer(t: TransferEvent): void {
    this.progressOf()?.transfer(t);
  }

  private progressOf(): RoundProgress | null {
    if (!this.draw) return null;
    // cli-progress draws on a terminal by itself; on another stream only when forced
    this.live ??= new RoundProgress(this.round, this.stream, !(this.stream as { isTTY?: boolean }).isTTY);
    return this.live;
  }

  /** A tracked row: the scalars sites log while they train show in their round's row (mean over sites of each one's last value). */
  tracked(r: TrackedRow): void {
    if (r.kind !== 'scalar' || r.site === SERVER_SITE || r.round === null || r.key.startsWith(RESULT_PREFIX)) return;
    this.live?.logged(r.site, r.key, r.value!, r.step);
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
    this.live?.stop();
    this.live = null;
    this.round = null; // transfers until the next round starts are other tasks (cross-site evaluation)
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

function fmt(v: number | undefined): string {
  if (v === undefined) return '-';
  return Math.abs(v) >= 1000 || (Math.abs(v) < 0.001 && v !== 0) ? v.toExponential(3) : v.toFixed(4);
}
