/**
 * A union of strict objects told apart by their keys. zod's own union reports the first branch's
 * complaint when every branch fails, so `trainer: {module, factory, args: [1, 2]}` read as
 * "unknown keys factory, args" (the {module, export} branch) instead of the real problem,
 * "args: expected record". Here, when exactly one branch knows every key given, its issues are the
 * ones reported; otherwise the union decides as usual.
 */
import { z } from 'zod';

export function unionByKeys<const T extends readonly [z.ZodObject, z.ZodObject, ...z.ZodObject[]]>(options: T) {
  return z.preprocess((v, ctx) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
    const keys = Object.keys(v);
    const fits = options.filter((o) => keys.every((k) => k in o.shape));
    if (fits.length !== 1) return v;
    const r = fits[0]!.safeParse(v);
    // `continue: false`: the union behind would only add the other branches' unknown-key complaints
    if (!r.success) for (const issue of r.error.issues) ctx.addIssue({ ...issue, continue: false });
    return v;
  }, z.union(options));
}
