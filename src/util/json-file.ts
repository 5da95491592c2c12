/** Reading state files this program wrote (progress, locks, markers, run ids) back. */
import { readFileSync } from 'node:fs';
import type { z } from 'zod';

/**
 * The file's JSON as `schema` reads it, or null when there is no file, it is not JSON or it does not
 * match: a state file that cannot be trusted counts as none, so the caller starts afresh.
 */
export function readJsonFile<T extends z.ZodType>(path: string, schema: T): z.infer<T> | null {
  try {
    const r = schema.safeParse(JSON.parse(readFileSync(path, 'utf8')));
    return r.success ? r.data : null;
  } catch {
    return null;
  }
}
