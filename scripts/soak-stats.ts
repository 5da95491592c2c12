/** The soak run's arithmetic (scripts/soak.ts): a series of samples per process summarized, and the verdict "flat or not". */

/** One sample of one process: the rounds the job had done then, and what was measured. */
export interface Sample {
  t: number;
  round: number;
  rssMB: number;
  fds: number;
  /** from the process's own report (src/util/resource-report.ts); null when it had none yet */
  heapMB: number | null;
  /** memory of Buffers and ArrayBuffers (outside the JS heap, inside RSS) */
  externalMB: number | null;
  activeHandles: number | null;
  handleTypes: Record<string, number> | null;
}

export interface SeriesSummary {
  first: number;
  last: number;
  min: number;
  max: number;
  /** the least-squares slope against rounds done, per 100 rounds (null with fewer than 2 distinct rounds) */
  slopePer100Rounds: number | null;
  /** median of the last third of the samples minus median of the first third: growth, robust to one round's spike */
  growth: number;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const round3 = (x: number): number => Math.round(x * 1000) / 1000;

export function summarize(points: { round: number; v: number }[]): SeriesSummary | null {
  if (points.length === 0) return null;
  const vs = points.map((p) => p.v);
  const n = points.length;
  const mx = points.reduce((s, p) => s + p.round, 0) / n;
  const my = vs.reduce((s, v) => s + v, 0) / n;
  const sxx = points.reduce((s, p) => s + (p.round - mx) ** 2, 0);
  const sxy = points.reduce((s, p) => s + (p.round - mx) * (p.v - my), 0);
  const third = Math.max(1, Math.floor(n / 3));
  return {
    first: round3(vs[0]!),
    last: round3(vs[n - 1]!),
    min: round3(Math.min(...vs)),
    max: round3(Math.max(...vs)),
    slopePer100Rounds: sxx > 0 ? round3((sxy / sxx) * 100) : null,
    growth: round3(median(vs.slice(n - third)) - median(vs.slice(0, third))),
  };
}

/** What "flat" means: every process's series within these after warm-up (a priori limits, not fitted to a run). */
export const THRESHOLDS = {
  rssMB: { slopePer100Rounds: 2, growth: 16 },
  heapMB: { slopePer100Rounds: 1, growth: 8 },
  externalMB: { slopePer100Rounds: 1, growth: 8 },
  fds: { slopePer100Rounds: 1, growth: 2 },
  activeHandles: { slopePer100Rounds: 1, growth: 2 },
} as const;

type Metric = keyof typeof THRESHOLDS;

export interface ProcessSummary {
  pid: number;
  samples: number;
  /** whether the process reported on itself (heap, handles): the server and the sites do, trainer processes do not */
  reported: boolean;
  rssMB: SeriesSummary | null;
  fds: SeriesSummary | null;
  heapMB: SeriesSummary | null;
  externalMB: SeriesSummary | null;
  activeHandles: SeriesSummary | null;
  /** active handles and requests by type, at the first and the last sample after warm-up */
  handleTypes: { first: Record<string, number> | null; last: Record<string, number> | null };
}

export function summarizeProcess(pid: number, samples: Sample[], warmupRounds: number): ProcessSummary {
  const after = samples.filter((s) => s.round >= warmupRounds);
  const series = (pick: (s: Sample) => number | null): SeriesSummary | null =>
    summarize(after.flatMap((s) => (pick(s) === null ? [] : [{ round: s.round, v: pick(s)! }])));
  const reported = after.filter((s) => s.handleTypes !== null);
  return {
    pid,
    samples: after.length,
    reported: reported.length > 0,
    rssMB: series((s) => s.rssMB),
    fds: series((s) => s.fds),
    heapMB: series((s) => s.heapMB),
    externalMB: series((s) => s.externalMB),
    activeHandles: series((s) => s.activeHandles),
    handleTypes: { first: reported[0]?.handleTypes ?? null, last: reported.at(-1)?.handleTypes ?? null },
  };
}

export interface Verdict {
  /** null when some metric could not be judged and none broke its threshold */
  flat: boolean | null;
  /** what broke a threshold: "site-2 fds growth 5 > 2"; empty when flat */
  exceeded: string[];
  /** metrics that could not be judged (too few samples after warm-up) */
  unjudged: string[];
  thresholds: typeof THRESHOLDS;
}

export function verdict(processes: Record<string, ProcessSummary>): Verdict {
  const exceeded: string[] = [];
  const unjudged: string[] = [];
  for (const [name, p] of Object.entries(processes))
    for (const metric of Object.keys(THRESHOLDS) as Metric[]) {
      const s = p[metric];
      const limit = THRESHOLDS[metric];
      // a process that reports nothing about itself (a trainer process) is judged on RSS and descriptors only
      if (s === null && p.samples > 0 && !p.reported && (metric === 'heapMB' || metric === 'externalMB' || metric === 'activeHandles'))
        continue;
      if (s === null || s.slopePer100Rounds === null || p.samples < 6) {
        unjudged.push(`${name} ${metric}`);
        continue;
      }
      if (s.slopePer100Rounds > limit.slopePer100Rounds)
        exceeded.push(`${name} ${metric} slope ${s.slopePer100Rounds} per 100 rounds > ${limit.slopePer100Rounds}`);
      if (s.growth > limit.growth) exceeded.push(`${name} ${metric} growth ${s.growth} > ${limit.growth}`);
    }
  return { flat: exceeded.length > 0 ? false : unjudged.length > 0 ? null : true, exceeded, unjudged, thresholds: THRESHOLDS };
}
