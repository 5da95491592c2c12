import { z } from 'zod';
import type { TensorDict } from './tensor.ts';

/** Whether params are the model itself or an update to add to the model the task carried. */
export type ParamsType = 'FULL' | 'DIFF';

export type JsonValue = string | number | boolean | null | JsonValue[] | { [k: string]: JsonValue };
/** Deepest nesting a JSON value may have: deeper values are refused (a recursive validator would overflow the stack). */
export const MAX_JSON_DEPTH = 64;

/** Whether `v` is plain JSON (finite numbers, arrays, plain objects) at most MAX_JSON_DEPTH deep: iterative, for any input. */
function isJsonValue(v: unknown): boolean {
  const stack: [unknown, number][] = [[v, 0]];
  while (stack.length > 0) {
    const [x, depth] = stack.pop()!;
    if (x === null || typeof x === 'string' || typeof x === 'boolean') continue;
    if (typeof x === 'number') {
      if (!Number.isFinite(x)) return false;
      continue;
    }
    if (typeof x !== 'object' || depth >= MAX_JSON_DEPTH) return false;
    if (Array.isArray(x)) for (const y of x as unknown[]) stack.push([y, depth + 1]);
    else {
      const proto = Object.getPrototypeOf(x) as unknown;
      if (proto !== Object.prototype && proto !== null) return false;
      for (const y of Object.values(x)) stack.push([y, depth + 1]);
    }
  }
  return true;
}

export const JsonValueSchema: z.ZodType<JsonValue> = z.custom<JsonValue>(isJsonValue, {
  error: `must be a JSON value (finite numbers, at most ${MAX_JSON_DEPTH} levels deep)`,
});

/**
 * What a workflow and a trainer exchange, modelled on NVFlare's FLModel.
 * `meta.NUM_STEPS_CURRENT_ROUND` (or `numSamples`) weights the update in FedAvg.
 */
export interface FLModel {
  params: TensorDict;
  paramsType: ParamsType;
  metrics: Record<string, number>;
  meta: Record<string, JsonValue>;
  currentRound: number;
  totalRounds: number;
  /**
   * For models larger than memory: the params are in this safetensors file
   * (read a tensor at a time with SafetensorsFile) and `params` is empty.
   * Only meaningful between a client and its own trainer, never over the network.
   */
  paramsPath?: string;
}

/** Everything of an FLModel except its tensors: small, JSON, travels as a control message. */
export type FLModelInfo = Omit<FLModel, 'params'>;

export const FLModelInfoSchema = z.strictObject({
  paramsType: z.enum(['FULL', 'DIFF']),
  metrics: z.record(z.string(), z.number()),
  meta: z.record(z.string(), JsonValueSchema),
  currentRound: z.number().int().min(0),
  totalRounds: z.number().int().min(0),
  paramsPath: z.string().min(1).optional(),
});

export const MetaKeys = {
  /** Number of training samples behind an update (weight in FedAvg). */
  numSamples: 'numSamples',
  /** Number of optimizer steps this round (NVFlare's NUM_STEPS_CURRENT_ROUND). */
  numSteps: 'NUM_STEPS_CURRENT_ROUND',
} as const;

export function flModel(params: TensorDict, init: Partial<FLModelInfo> = {}): FLModel {
  return {
    params,
    paramsType: init.paramsType ?? 'FULL',
    metrics: init.metrics ?? {},
    meta: init.meta ?? {},
    currentRound: init.currentRound ?? 0,
    totalRounds: init.totalRounds ?? 0,
  };
}

/** The aggregation weight an update declares; 1 when it declares none. */
export function updateWeight(info: Pick<FLModelInfo, 'meta'>): number {
  const w = info.meta[MetaKeys.numSteps] ?? info.meta[MetaKeys.numSamples];
  if (w === undefined) return 1;
  if (typeof w !== 'number' || !Number.isFinite(w) || w < 0) {
    throw new Error(`meta.${MetaKeys.numSteps}/${MetaKeys.numSamples} must be a finite number ≥ 0, got ${JSON.stringify(w)}`);
  }
  return w;
}
