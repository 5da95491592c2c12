/** The end of a log file, for the dashboard's log view. */
import { closeSync, openSync, readSync, statSync } from 'node:fs';

/** Last bytes of a job's log read for the page: enough for a few hundred lines. */
const LOG_TAIL_BYTES = 256 * 1024;

/**
 * The last tails read, by file: every open event stream asks for its job's log on every update,
 * and a log that did not grow (same size and mtime) is not read again.
 */
const cache = new Map<string, { size: number; mtimeMs: number; maxLines: number; maxBytes: number; lines: string[] }>();
const CACHED_FILES = 16;

/** The last `maxLines` lines of a file, reading only its tail. */
export function tailLines(path: string, maxLines: number, maxBytes = LOG_TAIL_BYTES): string[] {
  let st: { size: number; mtimeMs: number };
  try {
    st = statSync(path);
  } catch {
    return [];
  }
  const hit = cache.get(path);
  if (hit && hit.size === st.size && hit.mtimeMs === st.mtimeMs && hit.maxLines === maxLines && hit.maxBytes === maxBytes) return hit.lines;
  const start = Math.max(0, st.size - maxBytes);
  const buf = Buffer.alloc(st.size - start);
  const fd = openSync(path, 'r');
  try {
    readSync(fd, buf, 0, buf.length, start);
  } finally {
    closeSync(fd);
  }
  const all = buf.toString('utf8').split('\n');
  if (start > 0) all.shift(); // a partial first line
  const lines = all.filter((l) => l.length > 0).slice(-maxLines);
  cache.delete(path);
  cache.set(path, { size: st.size, mtimeMs: st.mtimeMs, maxLines, maxBytes, lines });
  if (cache.size > CACHED_FILES) cache.delete(cache.keys().next().value!);
  return lines;
}
