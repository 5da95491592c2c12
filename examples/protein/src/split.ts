/**
 * Heterogeneous splits of the training set across sites. Every split is a
 * partition: each sample goes to exactly one site.
 */
import { CLASS_SHORT, NUM_CLASSES } from './deeploc.ts';
import { Rng } from './prng.ts';

export interface DirichletOptions {
  sites: number;
  /** concentration: small = each site sees few classes, large = close to IID */
  alpha: number;
  seed: number;
  /** redraw until every site has at least this many samples (default 10) */
  minPerSite?: number;
  /** give up after this many redraws (default 1000) */
  maxTries?: number;
}

/**
 * Label skew as in Hsu et al. (2019) and most FL benchmarks: for each class,
 * draw the share of each site from Dirichlet(alpha) and deal the class's
 * (shuffled) samples out in those proportions. Returns sample indices per site.
 */
export function dirichletSplit(labels: readonly number[], opts: DirichletOptions): number[][] {
  const { sites, alpha } = opts;
  if (!Number.isInteger(sites) || sites < 1) throw new Error(`sites must be a positive integer, got ${sites}`);
  if (!(alpha > 0) || !Number.isFinite(alpha)) throw new Error(`alpha must be a positive number, got ${alpha}`);
  const minPerSite = opts.minPerSite ?? 10;
  if (minPerSite * sites > labels.length) throw new Error(`${labels.length} samples cannot give ${sites} sites ${minPerSite} each`);
  const rng = new Rng(opts.seed);
  const classes = [...new Set(labels)].sort((a, b) => a - b);
  const byClass = classes.map((c) => labels.flatMap((y, i) => (y === c ? [i] : [])));
  const maxTries = opts.maxTries ?? 1000;
  for (let attempt = 0; attempt < maxTries; attempt++) {
    const parts: number[][] = Array.from({ length: sites }, () => []);
    for (const idx of byClass) {
      const members = rng.shuffle([...idx]);
      const p = rng.dirichlet(alpha, sites);
      // cumulative cut points, rounded, so the shares always add up to the class size
      let start = 0;
      let cum = 0;
      for (let s = 0; s < sites; s++) {
        cum += p[s]!;
        const end = s === sites - 1 ? members.length : Math.round(cum * members.length);
        parts[s]!.push(...members.slice(start, end));
        start = Math.max(start, end);
      }
    }
    if (parts.every((p) => p.length >= minPerSite)) return parts.map((p) => p.sort((a, b) => a - b));
  }
  throw new Error(`no Dirichlet(alpha=${alpha}) split gave every one of ${sites} sites ≥ ${minPerSite} samples in ${maxTries} draws`);
}

/**
 * Length skew: sort by sequence length (ties broken by a seeded shuffle) and
 * cut into `sites` equal-size contiguous chunks, so site 1 holds the shortest
 * proteins and site n the longest. Localization correlates with length (e.g.
 * extracellular proteins are short), so this is covariate and label shift at once.
 */
export function lengthSplit(lengths: readonly number[], sites: number, seed: number): number[][] {
  if (!Number.isInteger(sites) || sites < 1) throw new Error(`sites must be a positive integer, got ${sites}`);
  const order = new Rng(seed).permutation(lengths.length);
  const rank = new Map(order.map((i, r) => [i, r]));
  const sorted = Array.from({ length: lengths.length }, (_, i) => i).sort(
    (a, b) => lengths[a]! - lengths[b]! || rank.get(a)! - rank.get(b)!,
  );
  return Array.from({ length: sites }, (_, s) => {
    const from = Math.round((s * sorted.length) / sites);
    const to = Math.round(((s + 1) * sorted.length) / sites);
    return sorted.slice(from, to).sort((a, b) => a - b);
  });
}

export function histogram(labels: readonly number[], idx: readonly number[], k = NUM_CLASSES): number[] {
  const h = new Array<number>(k).fill(0);
  for (const i of idx) h[labels[i]!]!++;
  return h;
}

/**
 * Skew summary: mean over sites of the total-variation
 * distance between the site's class distribution and the pooled one
 * (0 = identical, 1 = disjoint). Used to show that smaller alpha means more skew.
 */
export function labelSkew(labels: readonly number[], parts: readonly (readonly number[])[], k = NUM_CLASSES): number {
  const all = histogram(labels, parts.flat(), k);
  const total = all.reduce((a, b) => a + b, 0);
  let tv = 0;
  for (const p of parts) {
    const h = histogram(labels, p, k);
    const n = Math.max(1, p.length);
    tv += 0.5 * h.reduce((acc, c, j) => acc + Math.abs(c / n - all[j]! / total), 0);
  }
  return tv / parts.length;
}

/** A plain-text table of each site's class histogram. */
export function formatHistogram(labels: readonly number[], parts: readonly (readonly number[])[], siteNames?: readonly string[]): string {
  const names = siteNames ?? parts.map((_, i) => `site-${i + 1}`);
  const w = Math.max(6, ...names.map((n) => n.length));
  const head = ['site'.padEnd(w), ...CLASS_SHORT.map((c) => c.padStart(5)), 'total'.padStart(6)].join(' ');
  const rows = parts.map((p, s) =>
    [names[s]!.padEnd(w), ...histogram(labels, p).map((c) => String(c).padStart(5)), String(p.length).padStart(6)].join(' '),
  );
  return [head, ...rows].join('\n');
}
