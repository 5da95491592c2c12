import { z } from 'zod';
import type { TensorDict } from './tensor.ts';

/** Whether params are the model itself or an update to add to the model the task carried. */
export type ParamsType = 'FULL' | 'DIFF';

export type JsonValue = string | number | boolean | null | JsonValue[] | { [k: string]: JsonValue };
export const JsonValueSchema: z.ZodType<JsonValue> = z.lazy(() =>
  z.union([z.string(), z.number(), z.boolean(), z.null(), z.array(JsonValueSchema), z.record(z.string(), JsonValueSchema)]),
);

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
