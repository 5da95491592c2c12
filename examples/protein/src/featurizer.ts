/**
 * The built-in, offline protein featurizer: composition and simple
 * physico-chemical signals that are known to carry localization information
 * (signal peptides and transit peptides at the N-terminus, PTS1 and KDEL at
 * the C-terminus, transmembrane helices, nuclear localization signals).
 * Values are raw (fractions, means, logs); standardize them before training.
 */
import { STANDARD_AMINO_ACIDS } from './fasta.ts';
import type { Embedder } from './embedder.ts';

const AA = STANDARD_AMINO_ACIDS;
/** residue char code → index 0..19, or -1 for B, Z, X, U, O, J */
const AA_INDEX = new Int8Array(128).fill(-1);
for (let i = 0; i < AA.length; i++) AA_INDEX[AA.charCodeAt(i)] = i;

/** Kyte & Doolittle (1982) hydropathy; non-standard residues count as 0. */
export const KYTE_DOOLITTLE: Readonly<Record<string, number>> = {
  A: 1.8,
  R: -4.5,
  N: -3.5,
  D: -3.5,
  C: 2.5,
  Q: -3.5,
  E: -3.5,
  G: -0.4,
  H: -3.2,
  I: 4.5,
  L: 3.8,
  K: -3.9,
  M: 1.9,
  F: 2.8,
  P: -1.6,
  S: -0.8,
  T: -0.7,
  W: -0.9,
  Y: -1.3,
  V: 4.2,
};

/** residues at each terminus whose composition is a separate block */
export const TERMINAL_WINDOW = 50;

/** Names of the physico-chemical block, in order. */
export const PHYS_FEATURES = [
  'log_length', // ln(L)
  'kd_mean', // mean Kyte-Doolittle hydropathy
  'net_charge', // (K+R-D-E)/L
  'frac_charged', // (K+R+D+E)/L
  'aromaticity', // (F+W+Y)/L
  'nterm_kd_mean', // mean KD of the first 50 residues
  'nterm_kd_max15', // most hydrophobic 15-window in the first 50 (signal peptide h-region)
  'nterm30_net_charge', // (K+R-D-E)/n over the first 30 (mitochondrial/plastid transit peptides are basic)
  'nterm30_st', // (S+T)/n over the first 30 (plastid transit peptides are S/T rich)
  'cterm_kd_mean', // mean KD of the last 50 residues
  'tm_segments', // ln(1 + non-overlapping 19-windows with mean KD ≥ 1.6), a crude TM-helix count
  'kd_max19', // most hydrophobic 19-window anywhere
  'pts1', // C-terminus matches [SAC][KRH][LM] (peroxisomal targeting signal 1)
  'er_retention', // C-terminus matches [KH]DEL
  'nls_kr8', // most K+R in any 8-window, /8 (nuclear localization signals)
  'frac_nonstandard', // residues outside the 20 (X, B, Z, U, ...)
  'nglyc_per100', // N-glycosylation motifs N-[^P]-[ST] per 100 residues
] as const;

export const FEATURE_BLOCKS = [
  { name: 'aac', size: 20, what: 'amino-acid composition' },
  { name: 'dpc', size: 400, what: 'dipeptide composition, pairs over L-1' },
  { name: 'nterm_aac', size: 20, what: `composition of the first ${TERMINAL_WINDOW} residues` },
  { name: 'cterm_aac', size: 20, what: `composition of the last ${TERMINAL_WINDOW} residues` },
  { name: 'phys', size: PHYS_FEATURES.length, what: PHYS_FEATURES.join(', ') },
] as const;

export const FEATURE_DIM = FEATURE_BLOCKS.reduce((n, b) => n + b.size, 0);
export const OFFSET = { aac: 0, dpc: 20, nterm: 420, cterm: 440, phys: 460 } as const;

function kd(seq: string, i: number): number {
  return KYTE_DOOLITTLE[seq[i]!] ?? 0;
}

/** mean KD of [from, to) */
function kdMean(seq: string, from: number, to: number): number {
  if (to <= from) return 0;
  let s = 0;
  for (let i = from; i < to; i++) s += kd(seq, i);
  return s / (to - from);
}

/** highest mean KD over windows of `w` inside [from, to); the whole range when shorter */
function kdMaxWindow(seq: string, from: number, to: number, w: number): number {
  if (to - from <= w) return kdMean(seq, from, to);
  let s = 0;
  for (let i = from; i < from + w; i++) s += kd(seq, i);
  let best = s;
  for (let i = from + w; i < to; i++) {
    s += kd(seq, i) - kd(seq, i - w);
    if (s > best) best = s;
  }
  return best / w;
}

function composition(seq: string, from: number, to: number, out: Float32Array, offset: number): void {
  const n = to - from;
  if (n <= 0) return;
  for (let i = from; i < to; i++) {
    const a = AA_INDEX[seq.charCodeAt(i)] ?? -1;
    if (a >= 0) out[offset + a]! += 1;
  }
  for (let j = 0; j < 20; j++) out[offset + j]! /= n;
}

function count(seq: string, from: number, to: number, set: string): number {
  let c = 0;
  for (let i = from; i < to; i++) if (set.includes(seq[i]!)) c++;
  return c;
}

/** The raw feature vector of one upper-case sequence. */
export function featurize(seq: string): Float32Array {
  const L = seq.length;
  if (L === 0) throw new Error('featurize: empty sequence');
  const out = new Float32Array(FEATURE_DIM);
  composition(seq, 0, L, out, OFFSET.aac);
  if (L >= 2) {
    for (let i = 0; i + 1 < L; i++) {
      const a = AA_INDEX[seq.charCodeAt(i)] ?? -1;
      const b = AA_INDEX[seq.charCodeAt(i + 1)] ?? -1;
      if (a >= 0 && b >= 0) out[OFFSET.dpc + a * 20 + b]! += 1;
    }
    for (let j = 0; j < 400; j++) out[OFFSET.dpc + j]! /= L - 1;
  }
  const nEnd = Math.min(TERMINAL_WINDOW, L);
  const cStart = Math.max(0, L - TERMINAL_WINDOW);
  composition(seq, 0, nEnd, out, OFFSET.nterm);
  composition(seq, cStart, L, out, OFFSET.cterm);

  const pos = count(seq, 0, L, 'KR');
  const neg = count(seq, 0, L, 'DE');
  const n30 = Math.min(30, L);
  let tm = 0;
  for (let i = 0; i + 19 <= L;) {
    if (kdMean(seq, i, i + 19) >= 1.6) {
      tm++;
      i += 19;
    } else i++;
  }
  let nls = 0;
  for (let i = 0; i < L; i++) nls = Math.max(nls, count(seq, i, Math.min(L, i + 8), 'KR'));
  const glyc = seq.match(/N(?=[^P][ST])/g)?.length ?? 0;
  let nonstd = 0;
  for (let i = 0; i < L; i++) if ((AA_INDEX[seq.charCodeAt(i)] ?? -1) < 0) nonstd++;

  const phys: Record<(typeof PHYS_FEATURES)[number], number> = {
    log_length: Math.log(L),
    kd_mean: kdMean(seq, 0, L),
    net_charge: (pos - neg) / L,
    frac_charged: (pos + neg) / L,
    aromaticity: count(seq, 0, L, 'FWY') / L,
    nterm_kd_mean: kdMean(seq, 0, nEnd),
    nterm_kd_max15: kdMaxWindow(seq, 0, nEnd, 15),
    nterm30_net_charge: (count(seq, 0, n30, 'KR') - count(seq, 0, n30, 'DE')) / n30,
    nterm30_st: count(seq, 0, n30, 'ST') / n30,
    cterm_kd_mean: kdMean(seq, cStart, L),
    tm_segments: Math.log1p(tm),
    kd_max19: kdMaxWindow(seq, 0, L, 19),
    pts1: /[SAC][KRH][LM]$/.test(seq) ? 1 : 0,
    er_retention: /[KH]DEL$/.test(seq) ? 1 : 0,
    nls_kr8: nls / 8,
    frac_nonstandard: nonstd / L,
    nglyc_per100: (100 * glyc) / L,
  };
  PHYS_FEATURES.forEach((name, k) => (out[OFFSET.phys + k] = phys[name]));
  return out;
}

/** The featurizer as an Embedder (synchronous work; about 0.1 ms per protein). */
export class CompositionFeaturizer implements Embedder {
  readonly name = 'aa-composition-v1';
  readonly dim = FEATURE_DIM;

  async embed(seqs: readonly string[]): Promise<Float32Array[]> {
    return seqs.map((s) => featurize(s));
  }
}
