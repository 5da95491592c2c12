/**
 * Free space before a large write: a transfer that cannot fit is refused before its first byte
 * is written (a full disk would otherwise fail it half-way, and take the job store or other jobs'
 * results down with it). The margin is what must stay free after the write.
 */
import { existsSync, statfsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** What must stay free after a write (FLOTILLA_MIN_FREE_BYTES overrides it, e.g. in tests). */
export const DEFAULT_MIN_FREE_BYTES = 256 << 20;

export class DiskSpaceError extends Error {
  override readonly name = 'DiskSpaceError';
}

/** The margin in force: `override`, else FLOTILLA_MIN_FREE_BYTES, else DEFAULT_MIN_FREE_BYTES. */
export function minFreeBytes(override?: number): number {
  if (override !== undefined) return override;
  const env = process.env.FLOTILLA_MIN_FREE_BYTES;
  const n = env === undefined || env === '' ? NaN : Number(env);
  return Number.isFinite(n) && n >= 0 ? n : DEFAULT_MIN_FREE_BYTES;
}

/** Bytes available to this process on the file system holding `path` (its nearest existing folder). */
export function freeBytes(path: string): { at: string; free: number } {
  let at = resolve(path);
  while (!existsSync(at) && dirname(at) !== at) at = dirname(at);
  const s = statfsSync(at);
  return { at, free: s.bavail * s.bsize };
}

/**
 * Throws a DiskSpaceError naming `path`, the free and the needed bytes when `bytes` plus the
 * margin do not fit on the disk holding `path`.
 */
export function ensureDiskSpace(path: string, bytes: number, what: string, margin?: number): void {
  const keep = minFreeBytes(margin);
  const { free } = freeBytes(path);
  if (bytes + keep > free)
    throw new DiskSpaceError(
      `not enough disk space for ${what} in ${resolve(path)}: ${free} bytes free, ${bytes + keep} needed (${bytes} + ${keep} kept free; FLOTILLA_MIN_FREE_BYTES sets the margin): free some space or move the workspace`,
    );
}
