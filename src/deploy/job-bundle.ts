/**
 * A job folder on the wire: JSON {files: [{path, base64}]}. Small job folders
 * only (code + configs; models come from the model module or a file named in
 * the config). Unpacking validates everything before anything is trusted:
 * total size, file count, every path inside the folder, and the job config.
 */
import {
  type Stats,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { z } from 'zod';
import { type JobConfig, JobConfigError, readJobConfig } from '../runtime/job-config.ts';
import { describeZodError } from '../util/zod-error.ts';

export const BUNDLE_LIMITS = { maxFiles: 2000, maxBytes: 64 << 20 } as const;
const SKIP = new Set(['node_modules', '.git', 'workspace', '__pycache__']);

export const SafePath = z
  .string()
  .min(1)
  .max(512)
  .refine(
    (p) => !p.startsWith('/') && !p.includes('\\') && !p.includes('\0') && p.split('/').every((s) => s !== '' && s !== '.' && s !== '..'),
    'must be a relative path inside the job folder (no "..", no absolute paths)',
  )
  // a file system refuses longer names (ENAMETOOLONG): refused here, as a bundle error naming the file
  .refine((p) => p.split('/').every((s) => Buffer.byteLength(s) <= 255), 'has a file or folder name longer than 255 bytes');

const BundleSchema = z.strictObject({
  files: z
    .array(z.strictObject({ path: SafePath, base64: z.string() }))
    .min(1)
    .max(BUNDLE_LIMITS.maxFiles),
});

export class BundleError extends Error {
  override readonly name = 'BundleError';
}

export interface PackOptions {
  maxBytes?: number;
  /**
   * follow symbolic links whose target lies inside the job folder (default: a link is refused,
   * naming it, since it could carry any file the submitter can read to the server and every site)
   */
  followLinks?: boolean;
}

function kindOf(st: Stats): string {
  if (st.isFIFO()) return 'a named pipe';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

/**
 * Reads a job folder into a bundle (for `admin submit`). Only regular files and folders travel:
 * a symbolic link is refused unless `followLinks` and its target is inside the folder; pipes,
 * sockets and devices are always refused. Each refusal names the entry.
 */
export function packJob(dir: string, opts: PackOptions = {}): Uint8Array {
  const { files } = listJobFiles(dir, opts);
  return Buffer.from(JSON.stringify({ files: files.map((f) => ({ path: f.path, base64: readFileSync(f.abs).toString('base64') })) }));
}

/** A file of a job folder, as listed for packing: its path in the bundle, where it is, its size. */
export interface JobFile {
  path: string;
  abs: string;
  size: number;
}

/**
 * The files a job folder submits, sorted, with the rules of packJob applied (links, special
 * files, the size limit and the file count, each refusal naming the entry); reads no contents.
 */
export function listJobFiles(dir: string, opts: PackOptions = {}): { root: string; files: JobFile[]; bytes: number } {
  const maxBytes = opts.maxBytes ?? BUNDLE_LIMITS.maxBytes;
  const root = resolve(dir);
  const realRoot = realpathSync(root);
  const files: JobFile[] = [];
  let total = 0;
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      if (SKIP.has(name)) continue;
      const r = rel ? `${rel}/${name}` : name;
      const abs = join(root, r);
      let st = lstatSync(abs);
      if (st.isSymbolicLink()) {
        if (!opts.followLinks)
          throw new BundleError(
            `job folder ${root}: ${r} is a symbolic link: links are not submitted (they could carry files from outside the job folder); copy the file in, or pass --follow-links to follow links that stay inside the folder`,
          );
        let target: string;
        try {
          target = realpathSync(abs);
        } catch {
          throw new BundleError(`job folder ${root}: ${r} is a broken symbolic link: remove it`);
        }
        const inside = relative(realRoot, target);
        if (inside === '' || inside.startsWith('..') || inside.startsWith(sep) || resolve(realRoot, inside) !== target)
          throw new BundleError(
            `job folder ${root}: ${r} is a symbolic link to ${target}, outside the job folder: links are followed only inside it; copy the file in`,
          );
        st = statSync(abs);
        // a link to a folder inside would pack that folder twice (or loop): only file links are followed
        if (st.isDirectory())
          throw new BundleError(
            `job folder ${root}: ${r} is a symbolic link to a folder: only links to files are followed; move the folder in`,
          );
      }
      if (st.isDirectory()) walk(r);
      else if (st.isFile()) {
        total += st.size;
        if (total > maxBytes)
          throw new BundleError(
            `job folder ${root} is larger than ${maxBytes} bytes (the server's maxJobBytes): keep data and large models out of the job folder`,
          );
        if (files.length >= BUNDLE_LIMITS.maxFiles)
          throw new BundleError(`job folder ${root} has more than ${BUNDLE_LIMITS.maxFiles} files`);
        files.push({ path: r, abs, size: st.size });
      } else throw new BundleError(`job folder ${root}: ${r} is ${kindOf(st)}: only regular files and folders are submitted; remove it`);
    }
  };
  walk('');
  return { root, files, bytes: total };
}

/**
 * Validates a bundle and writes it to `dest` atomically (a temp folder renamed
 * into place). Returns the job config. Throws BundleError/JobConfigError
 * naming the field or file.
 */
export function unpackJob(bytes: Uint8Array, dest: string, maxBytes: number = BUNDLE_LIMITS.maxBytes): JobConfig {
  if (bytes.byteLength > maxBytes * 1.4 + 65536)
    throw new BundleError(`job bundle of ${bytes.byteLength} bytes exceeds the limit of ${maxBytes} bytes`);
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
  const clash = fileFolderClash(decoded.map((f) => f.path));
  if (clash !== null) throw new BundleError(`malformed job bundle: ${clash} is both a file and a folder`);
  const tmp = `${dest}.tmp-${process.pid}-${Date.now()}`;
  rmSync(tmp, { recursive: true, force: true });
  try {
    for (const f of decoded) {
      const p = join(tmp, f.path);
      mkdirSync(dirname(p), { recursive: true });
      // the same rule as packing: the bundle can only create regular files, never a link or a special file
      writeFileSync(p, f.data, { flag: 'wx' });
      if (!lstatSync(p).isFile()) throw new BundleError(`malformed job bundle: ${f.path} is not a regular file after unpacking`);
    }
    return installJob(tmp, dest);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** The paths that are both a file and a folder of a bundle (refused: one would overwrite the other). */
export function fileFolderClash(paths: string[]): string | null {
  const folders = new Set(
    paths.flatMap((p) =>
      p
        .split('/')
        .slice(0, -1)
        .map((_, i, parts) => parts.slice(0, i + 1).join('/')),
    ),
  );
  return paths.find((p) => folders.has(p)) ?? null;
}

/** Reads the job config of an unpacked folder `tmp` and renames it to `dest`; errors do not name the temp folder. */
export function installJob(tmp: string, dest: string): JobConfig {
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
}
