/**
 * A job folder on the wire: JSON {files: [{path, base64}]}. Small job folders
 * only (code + configs; models come from the model module or a file named in
 * the config). Unpacking validates everything before anything is trusted:
 * total size, file count, every path inside the folder, and the job config.
 */
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { type JobConfig, JobConfigError, readJobConfig } from '../runtime/job-config.ts';
import { describeZodError } from '../util/zod-error.ts';

export const BUNDLE_LIMITS = { maxFiles: 2000, maxBytes: 64 << 20 } as const;
const SKIP = new Set(['node_modules', '.git', 'workspace', '__pycache__']);

const SafePath = z
  .string()
  .min(1)
  .max(512)
  .refine((p) => !p.startsWith('/') && !p.includes('\\') && !p.includes('\0') && p.split('/').every((s) => s !== '' && s !== '.' && s !== '..'), 'must be a relative path inside the job folder (no "..", no absolute paths)');

const BundleSchema = z.strictObject({
  files: z.array(z.strictObject({ path: SafePath, base64: z.string() })).min(1).max(BUNDLE_LIMITS.maxFiles),
});

export class BundleError extends Error {
  override readonly name = 'BundleError';
}

/** Reads a job folder into a bundle (for `admin submit`). */
export function packJob(dir: string, maxBytes: number = BUNDLE_LIMITS.maxBytes): Uint8Array {
  const root = resolve(dir);
  const files: { path: string; base64: string }[] = [];
  let total = 0;
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      if (SKIP.has(name)) continue;
      const r = rel ? `${rel}/${name}` : name;
      const st = statSync(join(root, r));
      if (st.isDirectory()) walk(r);
      else if (st.isFile()) {
        total += st.size;
        if (total > maxBytes) throw new BundleError(`job folder ${root} is larger than ${maxBytes} bytes: keep data and large models out of the job folder`);
        if (files.length >= BUNDLE_LIMITS.maxFiles) throw new BundleError(`job folder ${root} has more than ${BUNDLE_LIMITS.maxFiles} files`);
        files.push({ path: r, base64: readFileSync(join(root, r)).toString('base64') });
      }
    }
  };
  walk('');
  return Buffer.from(JSON.stringify({ files }));
}

/**
 * Validates a bundle and writes it to `dest` atomically (a temp folder renamed
 * into place). Returns the job config. Throws BundleError/JobConfigError
 * naming the field or file.
 */
export function unpackJob(bytes: Uint8Array, dest: string, maxBytes: number = BUNDLE_LIMITS.maxBytes): JobConfig {
  if (bytes.byteLength > maxBytes * 1.4 + 65536) throw new BundleError(`job bundle of ${bytes.byteLength} bytes exceeds the limit of ${maxBytes} bytes`);
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (e) {
    throw new BundleError(`job bundle is not valid JSON: ${(e as Error).message}`);
  }
  const r = BundleSchema.safeParse(raw);
  if (!r.success) throw new BundleError(`malformed job bundle: ${describeZodError(r.error)}`);
  const seen = new Set<string>();
  let total = 0;
  const decoded = r.data.files.map((f, i) => {
    if (seen.has(f.path)) throw new BundleError(`malformed job bundle: files.${i}.path: duplicate path ${f.path}`);
    seen.add(f.path);
    const data = Buffer.from(f.base64, 'base64');
    total += data.byteLength;
    if (total > maxBytes) throw new BundleError(`job folder exceeds the limit of ${maxBytes} bytes`);
    return { path: f.path, data };
  });
  const tmp = `${dest}.tmp-${process.pid}-${Date.now()}`;
  rmSync(tmp, { recursive: true, force: true });
  try {
    for (const f of decoded) {
      const p = join(tmp, f.path);
      mkdirSync(dirname(p), { recursive: true });
      writeFileSync(p, f.data);
    }
    let config: JobConfig;
    try {
      config = readJobConfig(tmp).config;
    } catch (e) {
      if (e instanceof JobConfigError) throw new JobConfigError(e.message.replaceAll(tmp, '<job folder>'));
      throw e;
    }
    mkdirSync(dirname(dest), { recursive: true });
    rmSync(dest, { recursive: true, force: true });
    renameSync(tmp, dest);
    return config;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
