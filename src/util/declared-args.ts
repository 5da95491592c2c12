/**
 * Settings a job module declares a schema for (a trainer factory's `args`, the initial-model
 * hook's `args`): parsed once, with each problem named by its field in job.yaml.
 */
import type { z } from 'zod';
import { zodIssues } from './zod-error.ts';

/** Parses `args` with `schema`; on failure, the problems as "<field>.<key>: <message>" (joined by "; "). */
export function parseDeclaredArgs<S extends z.ZodType>(
  schema: S,
  args: unknown,
  field: string,
): { ok: true; value: z.output<S> } | { ok: false; reason: string } {
  const parsed = schema.safeParse(args);
  if (parsed.success) return { ok: true, value: parsed.data };
  const issues = zodIssues(parsed.error).map((l) => `${field}${l.startsWith('(top level)') ? l.slice('(top level)'.length) : `.${l}`}`);
  return { ok: false, reason: issues.join('; ') };
}

/** Whether `value` is a `{ schema, create }` definition (defineTrainer, defineInitialModel). */
export function isDefinition(value: unknown): value is { schema: z.ZodType; create: (...a: never[]) => unknown } {
  if (typeof value !== 'object' || value === null) return false;
  const d = value as { schema?: { safeParse?: unknown }; create?: unknown };
  return typeof d.schema?.safeParse === 'function' && typeof d.create === 'function';
}
