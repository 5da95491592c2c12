/**
 * The one wording of validation failures at every boundary (network messages, job configs, kits,
 * bundles, admin arguments): "field: problem", the field as a dotted path, "(top level)" for the
 * whole value, unknown keys named.
 */
import type { z } from 'zod';

/** Each issue as "field: problem". */
export function zodIssues(e: z.ZodError): string[] {
  return e.issues.map((i) => {
    const field = i.path.length ? i.path.join('.') : '(top level)';
    const msg = i.code === 'unrecognized_keys' ? `unknown key(s) ${i.keys.map((k) => `"${k}"`).join(', ')}` : i.message;
    return `${field}: ${msg}`;
  });
}

/** On one line: "field: problem; field: problem". */
export function describeZodError(e: z.ZodError): string {
  return zodIssues(e).join('; ');
}

/** One issue a line, indented, for a file's report ("<file>: invalid config\n  field: problem"). */
export function zodIssueLines(e: z.ZodError): string {
  return zodIssues(e)
    .map((l) => `  ${l}`)
    .join('\n');
}
