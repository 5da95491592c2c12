/**
 * DeepLoc 1.0 data: header parsing, the 10 location classes, what is dropped
 * and why, and the fixed held-out slice shared by every experiment.
 *
 * Protocol (the original DeepLoc training file is not available here, see
 * data/README.md): pool deeploc_test_set.fasta and
 * deeploc_our_val_set.fasta, drop dual-label entries, hold out a seeded,
 * class-stratified 15% as the shared test set, train on the rest; also report
 * accuracy on setHARD.fasta (homology-reduced).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { FastaError, parseFasta } from './fasta.ts';
import { Rng } from './prng.ts';

/** DeepLoc's location tokens, in the order of the paper's table; the index is the class id. */
export const LOCATIONS = [
  'Nucleus',
  'Cytoplasm',
  'Extracellular',
  'Mitochondrion',
  'Cell.membrane',
  'Endoplasmic.reticulum',
  'Plastid',
  'Golgi.apparatus',
  'Lysosome/Vacuole',
  'Peroxisome',
] as const;
export type Location = (typeof LOCATIONS)[number];
export const NUM_CLASSES = LOCATIONS.length;
/** short names for tables and plots */
export const CLASS_SHORT = ['Nucl', 'Cyto', 'Extr', 'Mito', 'Memb', 'ER', 'Plas', 'Golg', 'Lyso', 'Pero'] as const;

/** Labels that name two locations; DeepLoc's 10-class task cannot use them. */
const DUAL_LOCATIONS = ['Cytoplasm-Nucleus'] as const;

const HeaderSchema = z.object({
  id: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'accession must be letters, digits, "_", "." or "-"'),
  location: z.enum([...LOCATIONS, ...DUAL_LOCATIONS]),
  membrane: z.enum(['M', 'S', 'U']),
  set: z.string().optional(),
});

export interface DeepLocHeader {
  id: string;
  location: Location | (typeof DUAL_LOCATIONS)[number];
  /** M membrane-bound, S soluble, U unknown */
  membrane: 'M' | 'S' | 'U';
  /** original set name when the file has one ('test', 'new_test_set') */
  set?: string;
}

/** Parses `ID Location-M|S|U [set]` (the text after ">"). */
export function parseDeepLocHeader(id: string, description: string, source: string, line: number): DeepLocHeader {
  const tokens = description.split(/\s+/).filter((t) => t.length > 0);
  const fail = (why: string): never => {
    throw new FastaError(source, line, `bad DeepLoc header ">${id} ${description}": ${why}; expected ">ID Location-M|S|U [set]"`);
  };
  if (tokens.length < 1 || tokens.length > 2) fail(`expected 1 or 2 fields after the id, found ${tokens.length}`);
  const m = /^(.+)-([^-]+)$/.exec(tokens[0]!);
  if (!m) return fail(`field "${tokens[0]}" has no "-M", "-S" or "-U" membrane tag`);
  const parsed = HeaderSchema.safeParse({ id, location: m[1], membrane: m[2], set: tokens[1] });
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return fail(`${issue.path.join('.') || 'header'}: ${issue.message}`);
  }
  const h = parsed.data;
  return { id: h.id, location: h.location, membrane: h.membrane, ...(h.set !== undefined && { set: h.set }) };
}

export interface Sample {
  id: string;
  sequence: string;
  /** class id: index into LOCATIONS */
  label: number;
  membrane: 'M' | 'S' | 'U';
  file: string;
}

export interface Dropped {
  id: string;
  file: string;
  line: number;
  reason: string;
}

export interface DeepLocFile {
  samples: Sample[];
  dropped: Dropped[];
}

export function parseDeepLoc(text: string, file: string): DeepLocFile {
  const samples: Sample[] = [];
  const dropped: Dropped[] = [];
  for (const r of parseFasta(text, file)) {
    const h = parseDeepLocHeader(r.id, r.description, file, r.line);
    const label = (LOCATIONS as readonly string[]).indexOf(h.location);
    if (label < 0) {
      dropped.push({ id: h.id, file, line: r.line, reason: `dual location "${h.location}" (not one of the 10 classes)` });
      continue;
    }
    samples.push({ id: h.id, sequence: r.sequence, label, membrane: h.membrane, file });
  }
  return { samples, dropped };
}

/** examples/protein/data/deeploc (source and license: examples/protein/data/README.md), resolved from this file. */
export function defaultDataDir(): string {
  return fileURLToPath(new URL('../data/deeploc', import.meta.url));
}

export const TRAIN_FILES = ['deeploc_test_set.fasta', 'deeploc_our_val_set.fasta'] as const;
export const HARD_FILE = 'setHARD.fasta';

export interface DeepLocData {
  /** pooled test + validation files, dual labels removed */
  pool: Sample[];
  /** setHARD.fasta */
  hard: Sample[];
  dropped: Dropped[];
}

export async function loadDeepLoc(dataDir = defaultDataDir()): Promise<DeepLocData> {
  const pool: Sample[] = [];
  const dropped: Dropped[] = [];
  const seen = new Map<string, string>();
  const read = async (name: string): Promise<DeepLocFile> => {
    const file = path.join(dataDir, name);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw new Error(`cannot read DeepLoc file ${file}: ${(e as Error).message}`);
    }
    const parsed = parseDeepLoc(text, name);
    for (const s of parsed.samples) {
      const prev = seen.get(s.id);
      if (prev) throw new Error(`${name}: accession ${s.id} already appears in ${prev}`);
      seen.set(s.id, name);
    }
    return parsed;
  };
  for (const name of TRAIN_FILES) {
    const f = await read(name);
    pool.push(...f.samples);
    dropped.push(...f.dropped);
  }
  const hardFile = await read(HARD_FILE);
  dropped.push(...hardFile.dropped);
  return { pool, hard: hardFile.samples, dropped };
}

/** "23 × dual location ... (deeploc_our_val_set.fasta)" lines. */
export function droppedSummary(dropped: readonly Dropped[]): string[] {
  const groups = new Map<string, number>();
  for (const d of dropped) {
    const k = `${d.reason} in ${d.file}`;
    groups.set(k, (groups.get(k) ?? 0) + 1);
  }
  return [...groups].map(([k, n]) => `${n} × ${k}`);
}

/**
 * A seeded, class-stratified held-out slice: in each class, the first
 * round(fraction·n) indices of a seeded permutation. Stratified so that rare
 * classes (Peroxisome has 53 entries) are represented in the test set.
 */
export function heldOutSplit(labels: readonly number[], fraction: number, seed: number): { train: number[]; test: number[] } {
  if (!(fraction > 0 && fraction < 1)) throw new Error(`held-out fraction must be in (0, 1), got ${fraction}`);
  const rng = new Rng(seed);
  const byClass = new Map<number, number[]>();
  labels.forEach((y, i) => {
    const list = byClass.get(y) ?? [];
    list.push(i);
    byClass.set(y, list);
  });
  const train: number[] = [];
  const test: number[] = [];
  for (const y of [...byClass.keys()].sort((a, b) => a - b)) {
    const idx = rng.shuffle(byClass.get(y)!);
    const k = Math.round(fraction * idx.length);
    test.push(...idx.slice(0, k));
    train.push(...idx.slice(k));
  }
  return { train: train.sort((a, b) => a - b), test: test.sort((a, b) => a - b) };
}

export function classCounts(labels: Iterable<number>, k = NUM_CLASSES): number[] {
  const c = new Array<number>(k).fill(0);
  for (const y of labels) c[y] = (c[y] ?? 0) + 1;
  return c;
}
