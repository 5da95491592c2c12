/** The end of a log file, for the dashboard's log view. */
import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';

/** Last bytes of a job's log read for the page: enough for a few hundred lines. */
const LOG_TAIL_BYTES = 256 * 1024;

/** The last `maxLines` lines of a file, reading only its tail. */
export function tailLines(path: string, maxLines: number, maxBytes = LOG_TAIL_BYTES): string[] {
  if (!existsSync(path)) return [];
  const size = statSync(path).size;
  const start = Math.max(0, size - maxBytes);
  const buf = Buffer.alloc(size - start);
  const fd = openSync(path, 'r');
  try {
    readSync(fd, buf, 0, buf.length, start);
  } finally {
    closeSync(fd);
  }
  const lines = buf.toString('utf8').split('\n');
  if (start > 0) lines.shift(); // a partial first line
  return lines.filter((l) => l.length > 0).slice(-maxLines);
}
