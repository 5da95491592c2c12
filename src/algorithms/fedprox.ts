/**
 * FedProx (Li et al. 2020) is a job setting, not a server algorithm: the server
 * aggregates as FedAvg does and each trainer adds μ/2·‖w − w_global‖² to its
 * loss. The workflow sends μ in the task's meta under this key; the tfjs helper
 * (examples/hello-fedavg/fedprox.ts, shipped in the tfjs template) and the PyTorch helper (`flotilla.torch.fedprox_term`)
 * read it and apply the term.
 */
import type { JsonValue } from '../core/fl-model.ts';

export const FEDPROX_MU = 'fedprox_mu';

/** μ of a task (0 when the job sets none); a malformed value is an error, not silently 0. */
export function proxMuOf(meta: Readonly<Record<string, JsonValue>>): number {
  const v = meta[FEDPROX_MU];
  if (v === undefined) return 0;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0)
    throw new Error(`task meta.${FEDPROX_MU} must be a number ≥ 0, got ${JSON.stringify(v)}`);
  return v;
}
