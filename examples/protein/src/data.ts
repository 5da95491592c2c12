/**
 * From FASTA files to standardized matrices: load and filter DeepLoc, embed
 * (with the safetensors cache), cut the shared held-out slice, fit the
 * standardizer on the training part only.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Dropped, NUM_CLASSES, defaultDataDir, heldOutSplit, loadDeepLoc } from './deeploc.ts';
import { type Embedder, Standardizer, embedCached } from './embedder.ts';
import { type Dataset, makeDataset } from './model.ts';

export interface PreparedData {
  embedder: string;
  dim: number;
  /** training pool (to be split across sites) */
  train: Dataset;
  /** shared held-out test slice */
  test: Dataset;
  /** setHARD.fasta */
  hard: Dataset;
  trainLengths: number[];
  dropped: Dropped[];
  /** pooled samples before the held-out cut */
  poolSize: number;
  embedSeconds: number;
  cacheHit: boolean;
  cacheFile: string;
}

export function defaultCacheDir(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../.cache');
}

export interface PrepareOptions {
  embedder: Embedder;
  dataDir?: string;
  cacheDir?: string;
  heldOutFraction?: number;
  seed: number;
}

export async function prepareData(opts: PrepareOptions): Promise<PreparedData> {
  const { pool, hard, dropped } = await loadDeepLoc(opts.dataDir ?? defaultDataDir());
  const all = [...pool, ...hard];
  const emb = await embedCached(
    opts.embedder,
    all.map((s) => s.sequence),
    opts.cacheDir ?? defaultCacheDir(),
  );
  const poolRows = emb.rows.slice(0, pool.length);
  const hardRows = emb.rows.slice(pool.length);
  const { train, test } = heldOutSplit(
    pool.map((s) => s.label),
    opts.heldOutFraction ?? 0.15,
    opts.seed,
  );
  const trainRows = train.map((i) => poolRows[i]!);
  const std = Standardizer.fit(trainRows, opts.embedder.dim);
  const dim = opts.embedder.dim;
  const labels = (idx: number[]): number[] => idx.map((i) => pool[i]!.label);
  return {
    embedder: opts.embedder.name,
    dim,
    train: makeDataset(std.apply(trainRows), labels(train), dim),
    test: makeDataset(std.apply(test.map((i) => poolRows[i]!)), labels(test), dim),
    hard: makeDataset(
      std.apply(hardRows),
      hard.map((s) => s.label),
      dim,
    ),
    trainLengths: train.map((i) => pool[i]!.sequence.length),
    dropped,
    poolSize: pool.length,
    embedSeconds: emb.seconds,
    cacheHit: emb.hit,
    cacheFile: emb.file,
  };
}

export { NUM_CLASSES };
