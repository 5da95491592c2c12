/**
 * Transfer progress in the logs, for people watching a large model move: one
 * line per transfer every `everyMs` (bytes, MB/s, and percent and ETA when the
 * sender announced the size), and one when it ends. Small transfers log only
 * their end.
 */
import { type TransferProgress, etaSeconds } from '../streaming/index.ts';
import type { Logger } from '../util/log.ts';

const MB = 2 ** 20;

export function transferLogger(log: Logger, report?: (t: TransferProgress) => void, everyMs = 10_000): (t: TransferProgress) => void {
  const lastLine = new Map<string, number>();
  return (t) => {
    report?.(t);
    const key = `${t.peer}/${t.stream}/${t.direction}`;
    const mb = t.bytes / MB;
    const fields = {
      peer: t.peer,
      direction: t.direction,
      MB: +mb.toFixed(2),
      ...(t.total !== undefined && { totalMB: +(t.total / MB).toFixed(2), percent: +((100 * t.bytes) / Math.max(t.total, 1)).toFixed(1) }),
      seconds: +t.seconds.toFixed(3),
      MBps: +(mb / Math.max(t.seconds, 1e-6)).toFixed(1),
    };
    if (t.done) {
      lastLine.delete(key);
      if (t.bytes > 0) log.info(fields, 'transfer done');
      return;
    }
    const at = t.seconds * 1000;
    if (at - (lastLine.get(key) ?? 0) < everyMs) return;
    lastLine.set(key, at);
    const eta = etaSeconds(t);
    log.info({ ...fields, ...(eta !== undefined && { etaSeconds: Math.round(eta) }) }, 'transfer progress');
  };
}
