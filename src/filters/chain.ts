/**
 * A side's filters in order. Sending: the entries for that direction and task in list order (the
 * job's, then the site's privacy policy, which therefore has the last word), quantizers after
 * every other filter so the others see float tensors. Receiving: quantized tensors are
 * dequantized first (whatever quantized them: the metadata says how), then the other filters'
 * receiving halves in reverse order.
 */
import type { TensorStream } from '../core/tensor-stream.ts';
import { excludeTensors } from './exclude.ts';
import { dpGaussian, gaussianNoise, percentilePrivacy, svtPrivacy } from './dp.ts';
import { nameMatcher } from './patterns.ts';
import { HE_SLOTS, type HeContext, ciphertextBytes } from './he-context.ts';
import { decryptStream, encryptStream } from './he-stream.ts';
import { dequantizeStream, quantizeStream } from './quantize.ts';
import { type FilterSpec, quantFormat } from './spec.ts';
import type { Direction, Filter, FilterContext, FilterPayload } from './types.ts';
import { type Result, err, ok } from '../util/result.ts';

export interface ChainEntry {
  /** where it was configured, for errors: "filters.2 (quantize)", "privacy policy filters.0 (exclude)" */
  label: string;
  direction: Direction | 'both';
  tasks?: readonly string[] | undefined;
  filter: Filter;
  /** quantizers and encryption run last when sending (and encryption first when receiving) */
  quantizer?: boolean;
  /** the he filter (results grow: FilterChain.resultGrowth) */
  he?: boolean;
}

export class FilterError extends Error {
  override readonly name = 'FilterError';
}

/**
 * A built-in filter from its validated spec (custom ones are loaded by the runtime). `he` is the
 * site's HE context (its kit's): there the he filter encrypts results and decrypts tasks; without
 * one (the server) it does nothing, the server's aggregator sums the ciphertexts.
 */
export function builtinFilter(
  spec: Exclude<FilterSpec, { type: 'custom' }>,
  he?: HeContext,
  /** dp_gaussian: where it keeps its count of releases (a site's job folder), so a restarted site goes on counting */
  releasesFile?: string,
): Filter {
  switch (spec.type) {
    case 'he':
      if (!he) return {};
      return {
        send: (p) => ({ ...p, params: encryptStream(p.params, he) }),
        receive: (p) => ({ ...p, params: decryptStream(p.params, he) }),
      };
    case 'quantize': {
      const { format, blockSize } = quantFormat(spec);
      const skip = spec.exclude ? nameMatcher(spec.exclude) : undefined;
      return { send: (p) => ({ ...p, params: quantizeStream(p.params, { format, blockSize, ...(skip && { skip }) }) }) };
    }
    case 'exclude': {
      const excluded = nameMatcher(spec.patterns);
      return { send: (p) => ({ ...p, params: excludeTensors(p.params, excluded) }) };
    }
    case 'dp_gaussian':
      return dpGaussian({ clip: spec.clip, noiseMultiplier: gaussianNoise(spec), delta: spec.delta, releasesFile });
    case 'percentile_privacy':
      return percentilePrivacy(spec);
    case 'svt_privacy':
      return svtPrivacy(spec);
  }
}

/** a fresh ciphertext's bytes per value over a float16's 2 */
const HE_RESULT_GROWTH = Math.ceil(ciphertextBytes(3) / HE_SLOTS / 2);

const PRIVACY = new Set(['dp_gaussian', 'percentile_privacy', 'svt_privacy']);

export function entryFor(spec: FilterSpec, label: string, filter: Filter): ChainEntry {
  // a privacy filter sees the task too (it keeps the task's model to compute the site's update); train tasks by default
  if (PRIVACY.has(spec.type)) return { label, direction: 'both', tasks: spec.tasks ?? ['train'], filter };
  const he = spec.type === 'he';
  return { label, direction: spec.direction, tasks: spec.tasks, filter, quantizer: spec.type === 'quantize' || he, ...(he && { he }) };
}

/** Prefixes errors of a stream's pieces with the filter that raised them. */
function labelled(stream: TensorStream, label: string): TensorStream {
  return {
    header: stream.header,
    async *pieces() {
      try {
        yield* stream.pieces();
      } catch (e) {
        if (e instanceof FilterError) throw e;
        throw new FilterError(`${label}: ${(e as Error).message}`);
      }
    },
  };
}

export class FilterChain {
  constructor(readonly entries: readonly ChainEntry[] = []) {}

  /** How many times the plain model a result may be on the wire: CKKS ciphertexts are ~24× float32, ~48× float16. */
  get resultGrowth(): number {
    return this.entries.some((e) => e.he) ? HE_RESULT_GROWTH : 1;
  }

  private applicable(ctx: FilterContext): ChainEntry[] {
    return this.entries.filter(
      (e) => (e.direction === 'both' || e.direction === ctx.direction) && (!e.tasks || e.tasks.includes(ctx.taskName)),
    );
  }

  private step(p: FilterPayload, ctx: FilterContext, e: ChainEntry, half: 'send' | 'receive'): FilterPayload {
    if (!e.filter[half]) return p;
    let out: FilterPayload;
    try {
      out = e.filter[half](p, ctx);
    } catch (err) {
      throw new FilterError(`${e.label}: ${(err as Error).message}`);
    }
    return { info: out.info, params: labelled(out.params, e.label) };
  }

  /** Where a payload leaves this side. */
  send(p: FilterPayload, ctx: FilterContext): FilterPayload {
    const es = this.applicable(ctx);
    for (const e of [...es.filter((x) => !x.quantizer), ...es.filter((x) => x.quantizer)]) p = this.step(p, ctx, e, 'send');
    return p;
  }

  /** send or receive, a failure as a reason (the runtime fails that task or result with it) */
  try(half: 'send' | 'receive', p: FilterPayload, ctx: FilterContext): Result<FilterPayload> {
    try {
      return ok(this[half](p, ctx));
    } catch (e) {
      return err((e as Error).message);
    }
  }

  /** Where a payload arrives. */
  receive(p: FilterPayload, ctx: FilterContext): FilterPayload {
    let params: TensorStream;
    try {
      params = dequantizeStream(p.params);
    } catch (e) {
      throw new FilterError(`dequantizing: ${(e as Error).message}`);
    }
    p = params === p.params ? p : { info: p.info, params: labelled(params, 'dequantizing') };
    const es = this.applicable(ctx).reverse();
    for (const e of [...es.filter((x) => x.quantizer), ...es.filter((x) => !x.quantizer)]) p = this.step(p, ctx, e, 'receive');
    return p;
  }

  /** The job is over at this side: every filter releases what it keeps (a filter that fails to is not the job's failure). */
  async close(): Promise<void> {
    await Promise.allSettled(this.entries.map(async (e) => e.filter.close?.()));
  }
}
