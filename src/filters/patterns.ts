/**
 * Tensor name patterns: a glob (`*` any run of characters, dots included; `?` one character),
 * or a regular expression written between slashes (`/^encoder\.layers\.[0-5]\./`, flags after
 * the closing slash). Checked when the config is read, so a bad pattern names its field.
 */
import { z } from 'zod';

function compile(p: string): RegExp {
  const re = /^\/(.*)\/([a-z]*)$/s.exec(p);
  if (re) return new RegExp(re[1]!, re[2]!.replace(/[gy]/g, ''));
  const body = p
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${body}$`, 's');
}

export const NamePatternSchema = z
  .string()
  .min(1)
  .max(1000)
  .superRefine((p, ctx) => {
    try {
      compile(p);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: `not a valid regular expression: ${(e as Error).message}` });
    }
  });

/** Whether a name matches any of the patterns. */
export function nameMatcher(patterns: readonly string[]): (name: string) => boolean {
  const res = patterns.map(compile);
  return (name) => res.some((r) => r.test(name));
}
