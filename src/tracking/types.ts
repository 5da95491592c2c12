/**
 * What experiment tracking records: scalars, texts and run parameters, per job, site, round and
 * step. docs/tracking.md describes the store and the API built on these types.
 */

import { z } from 'zod';

export const TRACKED_KINDS = ['scalar', 'text', 'param'] as const;
export type TrackedKind = (typeof TRACKED_KINDS)[number];

/** Site of the rows the server writes itself (each round's mean over the sites). */
export const SERVER_SITE = '';

/** One stored row. `id` increases across the whole store: it is the cursor of `metricsSince`. */
export interface TrackedRow {
  id: number;
  jobId: string;
  /** the site that logged it; '' (SERVER_SITE) for the server's own rows (round means) */
  site: string;
  /** the round of the task the site was running (currentRound), null when it ran none yet */
  round: number | null;
  /** the step the trainer gave, null when it gave none */
  step: number | null;
  kind: TrackedKind;
  key: string;
  /** a scalar's value; null for texts and params */
  value: number | null;
  /** a text, or a param's value as a string; null for scalars */
  text: string | null;
  /** when the server received it, ms since the epoch */
  at: number;
}

/** What a producer hands to `TrackingStore.record` (the store stamps id and, if absent, at). */
export type TrackedInput =
  | { kind: 'scalar'; site: string; key: string; value: number; round?: number | undefined; step?: number | undefined; at?: number }
  | { kind: 'text'; site: string; key: string; text: string; round?: number | undefined; step?: number | undefined; at?: number }
  | { kind: 'param'; site: string; key: string; text: string; at?: number };

/** How the name of a row's site is shown (tables, TensorBoard runs, MLflow runs). */
export function siteLabel(site: string): string {
  return site === SERVER_SITE ? 'server' : site;
}

/** Rows kept per job; the server drops later ones and says so once (what one row may hold: LOG_LIMITS, src/client/api.ts). */
export const TRACKING_LIMITS = { rowsPerJob: 1_000_000 } as const;

/** A TrackedRow on the wire (the admin `metrics` reply, the dashboard's HTTP API). */
export const TrackedRowSchema = z.object({
  id: z.number().int(),
  jobId: z.string(),
  site: z.string(),
  round: z.number().int().nullable(),
  step: z.number().int().nullable(),
  kind: z.enum(TRACKED_KINDS),
  key: z.string(),
  value: z.number().nullable(),
  text: z.string().nullable(),
  at: z.number(),
});
