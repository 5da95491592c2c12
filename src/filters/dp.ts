/**
 * Privacy filters on a site's result, each releasing a transformed update (paramsType DIFF):
 *
 * - dp_gaussian (DP-FedAvg, McMahan et al. 2018, with the noise added at the site): the update
 *   is clipped to L2 norm `clip` over all its float tensors, and Gaussian noise of standard
 *   deviation noiseMultiplier · clip is added to every value. An RDP accountant (rdp.ts) counts
 *   the site's releases and reports (ε, δ) after each: the result's metrics and a metric event to
 *   the server (`dp_epsilon`, `dp_delta`).
 * - percentile_privacy (NVFlare's PercentilePrivacy, Shokri and Shmatikov 2015): values whose
 *   |update| is below the given percentile of all |update| values become 0, the others are
 *   clipped to [−gamma, gamma].
 * - svt_privacy (NVFlare's SVTPrivacy, the sparse vector technique): a noisy threshold selects
 *   about `fraction` of the values, which are released with Laplace noise and clipped to
 *   [−gamma, gamma]; the others are 0.
 *
 * Noise comes from node:crypto (a CSPRNG). Each filter keeps the task's model on disk while the
 * trainer runs (the update is result − that model), then makes two passes over the update on
 * disk: statistics first, then the release, so no tensor is ever held whole.
 */
import { randomFillSync } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { z } from 'zod';
import type { FLModelInfo } from '../core/fl-model.ts';
import type { TensorStream } from '../core/tensor-stream.ts';
import { gaussianEpsilon, noiseForEpsilon } from './rdp.ts';
import type { Filter, FilterContext, FilterPayload } from './types.ts';
import { TaskModelSpool, chunkPiece, spoolUpdate } from './update-spool.ts';

/** Standard normal values from the CSPRNG (Box–Muller over 32-bit uniforms in (0, 1]). */
export function secureGaussian(n: number): Float64Array {
  const out = new Float64Array(n);
  const u = new Uint32Array(2 * Math.ceil(n / 2));
  randomFillSync(u);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log((u[i]! + 1) / 4294967296));
    const th = (2 * Math.PI * u[i + 1]!) / 4294967296;
    out[i] = r * Math.cos(th);
    if (i + 1 < n) out[i + 1] = r * Math.sin(th);
  }
  return out;
}

/** Laplace(0, b) values from the CSPRNG. */
export function secureLaplace(n: number, b: number): Float64Array {
  const out = new Float64Array(n);
  const u = new Uint32Array(n);
  randomFillSync(u);
  for (let i = 0; i < n; i++) {
    const v = (u[i]! + 0.5) / 4294967296 - 0.5; // (−0.5, 0.5), never ±0.5
    out[i] = -b * Math.sign(v) * Math.log(1 - 2 * Math.abs(v));
  }
  return out;
}

/** Uniforms in [0, 1) from the CSPRNG. */
function secureUniform(n: number): Float64Array {
  const u = new Uint32Array(n);
  randomFillSync(u);
  return Float64Array.from(u, (x) => x / 4294967296);
}

/**
 * The shared shape of the privacy filters: tee the task's model at the site, and on the result
 * spool the update (`observe` gathers what the release needs), then release it as a DIFF.
 */
function privacyFilter<S>(o: {
  init: () => S;
  observe: (s: S, values: Float32Array) => void;
  /** after the first pass, before the release: metrics for the result's info */
  metrics?: (s: S) => Record<string, number>;
  release: (s: S, values: Float32Array, index: number) => Float32Array;
  after?: (s: S, ctx: FilterContext, info: FLModelInfo) => void;
}): Filter {
  const task = new TaskModelSpool();
  return {
    receive(p, ctx) {
      return ctx.direction === 'task' ? { ...p, params: task.tee(p.params, ctx.scratchDir) } : p;
    },
    send(p, ctx) {
      if (ctx.direction !== 'result') return p;
      const state = o.init();
      const extra = o.metrics?.(state) ?? {};
      const info: FLModelInfo = { ...p.info, paramsType: 'DIFF', metrics: { ...p.info.metrics, ...extra } };
      const full = p.info.paramsType === 'FULL';
      const header = {
        tensors: p.params.header.tensors
          .filter((t) => ['F64', 'F32', 'F16', 'BF16'].includes(t.dtype))
          .map((t) => ({ ...t, dtype: 'F32' as const })),
        metadata: p.params.header.metadata,
      };
      const input = p.params;
      const params: TensorStream = {
        header,
        async *pieces() {
          const update = await spoolUpdate(input, full, task, (v) => o.observe(state, v), ctx.scratchDir);
          try {
            for await (const c of update.chunks()) yield chunkPiece(update.header, c, o.release(state, c.values, c.index));
            o.after?.(state, ctx, info);
          } finally {
            await update.dispose();
          }
        },
      };
      return { info, params } satisfies FilterPayload;
    },
    // the last task's model stays spooled until the next task replaces it: the job's end removes it
    close: () => task.dispose(),
  };
}

export interface GaussianOptions {
  clip: number;
  /** σ; or derived from (epsilon, rounds, delta) */
  noiseMultiplier: number;
  delta: number;
  /**
   * where the site keeps the count of its releases (its job folder): a site restarted within a
   * job goes on counting, instead of reporting the ε of a fresh start
   */
  releasesFile?: string | undefined;
}

const ReleasesFileSchema = z.strictObject({ releases: z.number().int().min(0) });

function readReleases(file: string): number {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw e;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = null;
  }
  const r = ReleasesFileSchema.safeParse(parsed);
  // an unreadable count must not restart the accounting from 0
  if (!r.success)
    throw new Error(`${file}: not a count of DP releases (${text.slice(0, 80)}): the privacy spent is unknown; restore or remove it`);
  return r.data.releases;
}

function writeReleases(file: string, releases: number): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(`${file}.tmp`, `${JSON.stringify({ releases })}\n`);
  renameSync(`${file}.tmp`, file);
}

/** DP-FedAvg's clipping and Gaussian noise at the site, with the accountant's ε after each release. */
export function dpGaussian(o: GaussianOptions): Filter {
  let releases = o.releasesFile ? readReleases(o.releasesFile) : 0;
  return privacyFilter({
    init: () => ({ sumSq: 0, scale: 1 }),
    observe: (s, v) => {
      let q = 0;
      for (let i = 0; i < v.length; i++) q += v[i]! * v[i]!;
      s.sumSq += q;
    },
    metrics: () => {
      // ε is known before the values: it depends only on how many updates this site has released
      releases++;
      if (o.releasesFile) writeReleases(o.releasesFile, releases);
      return { dp_epsilon: gaussianEpsilon(o.noiseMultiplier, releases, o.delta), dp_delta: o.delta };
    },
    release: (s, v) => {
      if (s.scale === 1 && s.sumSq > o.clip * o.clip) s.scale = o.clip / Math.sqrt(s.sumSq);
      const noise = secureGaussian(v.length);
      const std = o.noiseMultiplier * o.clip;
      const out = new Float32Array(v.length);
      for (let i = 0; i < v.length; i++) out[i] = v[i]! * s.scale + std * noise[i]!;
      return out;
    },
    after: (_s, ctx, info) => {
      ctx.metric?.('dp_epsilon', info.metrics.dp_epsilon!, info.currentRound);
      ctx.metric?.('dp_delta', o.delta, info.currentRound);
    },
  });
}

export function gaussianNoise(spec: {
  noiseMultiplier?: number | undefined;
  epsilon?: number | undefined;
  rounds?: number | undefined;
  delta: number;
}): number {
  return spec.noiseMultiplier ?? noiseForEpsilon(spec.epsilon!, spec.rounds!, spec.delta);
}

/** |x| as an ordered 16-bit bucket: the top bits of its float32 pattern (relative width 2^-7). */
const F = new Float32Array(1);
const U = new Uint32Array(F.buffer);
function bucket(a: number): number {
  F[0] = a;
  return U[0]! >>> 16;
}
function bucketLow(b: number): number {
  U[0] = b << 16;
  return F[0]!;
}

/** NVFlare's PercentilePrivacy on the update: below the percentile of |values| → 0, the rest clipped to ±gamma. */
export function percentilePrivacy(o: { percentile: number; gamma: number }): Filter {
  return privacyFilter({
    init: () => ({ hist: new Float64Array(1 << 15), n: 0, cutoff: NaN }),
    observe: (s, v) => {
      for (let i = 0; i < v.length; i++) s.hist[bucket(Math.abs(v[i]!))]!++;
      s.n += v.length;
    },
    release: (s, v) => {
      if (Number.isNaN(s.cutoff)) {
        // the percentile from the histogram: the lower edge of the bucket holding it (numpy's
        // percentile interpolates; this is within one bucket, 2^-7 relative, of it)
        const want = (o.percentile / 100) * (s.n - 1);
        let seen = 0;
        let b = 0;
        for (; b < s.hist.length; b++) {
          if (seen + s.hist[b]! > want) break;
          seen += s.hist[b]!;
        }
        s.cutoff = bucketLow(b);
      }
      const out = new Float32Array(v.length);
      for (let i = 0; i < v.length; i++) {
        const x = v[i]!;
        out[i] = x > -s.cutoff && x < s.cutoff ? 0 : Math.max(-o.gamma, Math.min(o.gamma, x));
      }
      return out;
    },
  });
}

/**
 * NVFlare's SVTPrivacy on the update. Its selection loop (candidates above a noisy threshold,
 * repeated until enough are accepted, then n_upload of them sampled) becomes one pass: each value
 * is above the threshold with fresh Laplace noise (ε₂ = ε₁ (2 n_upload)^(2/3), as NVFlare derives
 * it), and one in (accepted / n_upload) of those above is released, the expected count n_upload.
 */
export function svtPrivacy(o: { fraction: number; epsilon: number; noiseVar: number; gamma: number; tau: number }): Filter {
  return privacyFilter({
    init: () => ({
      n: 0,
      threshold: o.tau + secureLaplace(1, (o.gamma * 2) / o.epsilon)[0]!,
      above: 0,
      lambdaNu: 0,
      keep: 1,
      estimated: false,
    }),
    observe: (s, v) => {
      s.n += v.length;
    },
    release: (s, v) => {
      const nUpload = Math.min(Math.ceil(s.n * o.fraction), s.n);
      if (!s.estimated) {
        const eps2 = o.epsilon * (2 * nUpload) ** (2 / 3);
        s.lambdaNu = (o.gamma * 4 * nUpload) / eps2;
        // the expected share above the noisy threshold is not known before the pass: release a
        // value above it with probability fraction / P(above), P estimated from the first chunk
        let above = 0;
        const nu = secureLaplace(v.length, s.lambdaNu);
        for (let i = 0; i < v.length; i++) if (Math.min(Math.abs(v[i]!), o.gamma) + nu[i]! >= s.threshold) above++;
        s.keep = above === 0 ? 1 : Math.min(1, (o.fraction * v.length) / above);
        s.estimated = true;
      }
      const nu = secureLaplace(v.length, s.lambdaNu);
      const pick = secureUniform(v.length);
      const noise = secureLaplace(v.length, (o.gamma * 2) / o.noiseVar);
      const out = new Float32Array(v.length);
      for (let i = 0; i < v.length; i++) {
        const x = v[i]!;
        if (Math.min(Math.abs(x), o.gamma) + nu[i]! >= s.threshold && pick[i]! < s.keep)
          out[i] = Math.max(-o.gamma, Math.min(o.gamma, x + noise[i]!));
      }
      return out;
    },
  });
}
