/** One wording for validation failures at every boundary: "field: problem; field: problem". */
import type { z } from 'zod';

export function describeZodError(e: z.ZodError): string {
  return e.issues.map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`).join('; ');
}
