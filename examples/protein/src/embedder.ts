/**
 * One interface for every way of turning a protein into a fixed-size vector
 * (the built-in featurizer, ESM-2), a safetensors cache in front of any of
 * them, and the standardizer fitted on training rows.
 */
import { createHash } from 'node:crypto';
import { mkdir, rename, stat } from 'node:fs/promises';
import path from 'node:path';
import { readSafetensors, writeSafetensors } from 'flotilla/core';
import { tensor } from 'flotilla/core';

export interface Embedder {
  /** identifies the embedding (and its version) in cache keys and reports */
  readonly name: string;
  readonly dim: number;
  embed(seqs: readonly string[]): Promise<Float32Array[]>;
}

function cacheKey(embedder: Embedder, seqs: readonly string[]): string {
  const h = createHash('sha256');
  h.update(`${embedder.name}\u0000${embedder.dim}\u0000${seqs.length}\u0000`);
  for (const s of seqs) h.update(`${s}\n`);
  return h.digest('hex').slice(0, 16);
}

export interface CachedEmbedding {
  rows: Float32Array[];
  /** true when read from the cache file */
  hit: boolean;
  file: string;
  seconds: number;
}

/**
 * Embeds `seqs`, or reads them from `<cacheDir>/<name>-<hash>.safetensors`
 * (one F32 tensor "embeddings" [N, dim]) when the same embedder has seen the
 * same sequences. The key hashes the sequences themselves, so a changed data
 * file can never be served stale rows. A cache file that does not match is
 * recomputed and rewritten.
 */
export async function embedCached(embedder: Embedder, seqs: readonly string[], cacheDir: string): Promise<CachedEmbedding> {
  const started = performance.now();
  const safeName = embedder.name.replace(/[^A-Za-z0-9_.-]/g, '_');
  const file = path.join(cacheDir, `${safeName}-${cacheKey(embedder, seqs)}.safetensors`);
  const exists = await stat(file).then(
    () => true,
    () => false,
  );
  if (exists) {
    try {
      const { tensors, metadata } = await readSafetensors(file);
      const t = tensors.get('embeddings');
      if (t && t.dtype === 'F32' && t.shape[0] === seqs.length && t.shape[1] === embedder.dim && metadata['embedder'] === embedder.name) {
        const data = t.data as Float32Array;
        const rows = Array.from({ length: seqs.length }, (_, i) => data.subarray(i * embedder.dim, (i + 1) * embedder.dim));
        return { rows, hit: true, file, seconds: (performance.now() - started) / 1000 };
      }
    } catch {
      // unreadable or truncated cache file: recompute below
    }
  }
  const rows = await embedder.embed(seqs);
  if (rows.length !== seqs.length) throw new Error(`embedder ${embedder.name} returned ${rows.length} rows for ${seqs.length} sequences`);
  const flat = new Float32Array(seqs.length * embedder.dim);
  rows.forEach((r, i) => {
    if (r.length !== embedder.dim)
      throw new Error(`embedder ${embedder.name} returned a row of ${r.length} values, dim is ${embedder.dim}`);
    flat.set(r, i * embedder.dim);
  });
  await mkdir(cacheDir, { recursive: true });
  // write then rename: a crash mid-write never leaves a half file under the real name
  const tmp = `${file}.${process.pid}.tmp`;
  await writeSafetensors(tmp, new Map([['embeddings', tensor('F32', [seqs.length, embedder.dim], flat)]]), {
    embedder: embedder.name,
    dim: String(embedder.dim),
    count: String(seqs.length),
  });
  await rename(tmp, file);
  return { rows, hit: false, file, seconds: (performance.now() - started) / 1000 };
}

/**
 * Per-feature z-scoring with statistics from training rows only. The same
 * statistics could be computed federatedly (each site sends n, Σx, Σx²),
 * which is what fitMoments/combineMoments allow.
 */
export interface Moments {
  n: number;
  sum: Float64Array;
  sumSq: Float64Array;
}

export function fitMoments(rows: readonly Float32Array[], dim: number): Moments {
  const sum = new Float64Array(dim);
  const sumSq = new Float64Array(dim);
  for (const r of rows) {
    for (let j = 0; j < dim; j++) {
      const v = r[j]!;
      sum[j]! += v;
      sumSq[j]! += v * v;
    }
  }
  return { n: rows.length, sum, sumSq };
}

export function combineMoments(parts: readonly Moments[]): Moments {
  const dim = parts[0]?.sum.length ?? 0;
  const out: Moments = { n: 0, sum: new Float64Array(dim), sumSq: new Float64Array(dim) };
  for (const p of parts) {
    out.n += p.n;
    for (let j = 0; j < dim; j++) {
      out.sum[j]! += p.sum[j]!;
      out.sumSq[j]! += p.sumSq[j]!;
    }
  }
  return out;
}

export class Standardizer {
  constructor(
    readonly mean: Float32Array,
    readonly std: Float32Array,
  ) {}

  static fromMoments(m: Moments): Standardizer {
    if (m.n < 2) throw new Error(`standardizer needs at least 2 rows, got ${m.n}`);
    const dim = m.sum.length;
    const mean = new Float32Array(dim);
    const std = new Float32Array(dim);
    for (let j = 0; j < dim; j++) {
      const mu = m.sum[j]! / m.n;
      const v = Math.max(0, m.sumSq[j]! / m.n - mu * mu);
      mean[j] = mu;
      // a constant feature (e.g. a dipeptide absent from training) stays 0, not NaN
      std[j] = v > 1e-12 ? Math.sqrt(v) : 1;
    }
    return new Standardizer(mean, std);
  }

  static fit(rows: readonly Float32Array[], dim: number): Standardizer {
    return Standardizer.fromMoments(fitMoments(rows, dim));
  }

  apply(rows: readonly Float32Array[]): Float32Array[] {
    return rows.map((r) => {
      const out = new Float32Array(r.length);
      for (let j = 0; j < r.length; j++) out[j] = (r[j]! - this.mean[j]!) / this.std[j]!;
      return out;
    });
  }
}
