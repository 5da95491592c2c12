/** The simulator's per-round table and progress bar (bar only on a terminal; plain lines otherwise). */
import { SingleBar, Presets } from 'cli-progress';
import type { RoundSummary } from '../workflows/workflow.ts';

const PREFERRED = ['train_loss', 'val_loss', 'val_accuracy', 'loss', 'accuracy'];

export class RoundTable {
  private keys: string[] | null = null;
  private bar: SingleBar | null = null;
  private readonly tty = Boolean(process.stderr.isTTY) && !process.env.CI;

  constructor(private readonly out: (line: string) => void = (l) => process.stdout.write(`${l}\n`)) {}

  progress(p: { round: number; done: number; expected: number }): void {
    if (!this.tty) return;
    if (!this.bar) {
      this.bar = new SingleBar({ format: ' round {round} [{bar}] {value}/{total} sites', clearOnComplete: true, hideCursor: true, stream: process.stderr }, Presets.shades_classic);
      this.bar.start(p.expected, 0, { round: p.round });
    }
    this.bar.update(p.done, { round: p.round });
  }

  row(s: RoundSummary): void {
    this.bar?.stop();
    this.bar = null;
    if (!this.keys) {
      const all = Object.keys(s.metrics);
      this.keys = [...PREFERRED.filter((k) => all.includes(k)), ...all.filter((k) => !PREFERRED.includes(k)).sort()].slice(0, 6);
      this.out(['round', 'sites', ...this.keys, 'seconds'].map((h) => h.padStart(Math.max(h.length, 8))).join('  '));
    }
    const cells = [`${s.round + 1}/${s.totalRounds}`, String(s.sites.length), ...this.keys.map((k) => fmt(s.metrics[k])), s.seconds.toFixed(1)];
    const widths = ['round', 'sites', ...this.keys, 'seconds'].map((h) => Math.max(h.length, 8));
    this.out(cells.map((c, i) => c.padStart(widths[i]!)).join('  '));
    const failed = Object.entries(s.failures);
    for (const [site, err] of failed) this.out(`  ! ${site}: ${err.split('\n')[0]}`);
  }
}

function fmt(v: number | undefined): string {
  if (v === undefined) return '-';
  return Math.abs(v) >= 1000 || (Math.abs(v) < 0.001 && v !== 0) ? v.toExponential(3) : v.toFixed(4);
}
