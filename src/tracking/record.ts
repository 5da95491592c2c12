/** What the server and the simulator record: what the sites log, and each round's result metrics. */
import type { MetricRecord } from '../client/api.ts';
import type { RoundSummary } from '../workflows/workflow.ts';
import type { TrackingStore } from './store.ts';
import { SERVER_SITE } from './types.ts';

/** Prefix of the rows that hold the metrics a site returned with its result (`result/val_loss`). */
export const RESULT_PREFIX = 'result/';

/** Records what a site logged while its task ran (a params record becomes one row per param). */
export function trackLogged(store: TrackingStore, jobId: string, m: MetricRecord): void {
  if (m.kind === 'params') {
    for (const [key, v] of Object.entries(m.params)) store.record(jobId, { kind: 'param', site: m.site, key, text: String(v) });
    return;
  }
  const where = { round: m.round, step: m.step };
  if (m.kind === 'text') store.record(jobId, { kind: 'text', site: m.site, key: m.key, text: m.text, ...where });
  else store.record(jobId, { kind: 'scalar', site: m.site, key: m.key, value: m.value, ...where });
}

/**
 * Records a finished round: each site's result metrics as `result/<key>` rows of that site, and
 * the round's weighted means as rows of the server (site ''), all at step = round.
 */
export function trackRound(store: TrackingStore, jobId: string, s: RoundSummary): void {
  for (const [site, metrics] of Object.entries(s.siteMetrics))
    for (const [key, value] of Object.entries(metrics))
      if (Number.isFinite(value))
        store.record(jobId, { kind: 'scalar', site, key: RESULT_PREFIX + key, value, round: s.round, step: s.round });
  for (const [key, value] of Object.entries(s.metrics))
    if (Number.isFinite(value)) store.record(jobId, { kind: 'scalar', site: SERVER_SITE, key, value, round: s.round, step: s.round });
}
