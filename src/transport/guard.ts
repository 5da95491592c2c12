/**
 * Limits on a TLS listener's connections before they authenticate, so that peers without a
 * project certificate cannot starve the server: a connection that has not finished its mutual-TLS
 * handshake within `handshakeTimeoutMs` is closed (Node's own default waits 120 s), and at most
 * `maxConnections` are open at once (the rest are closed on accept, before they cost a file
 * descriptor for long: the process's descriptor limit is never reached). Both are logged, once per
 * ten seconds with counts, so that a flood shows in the log without filling it.
 */
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import type { Server as TlsServer, TLSSocket } from 'node:tls';
import type { Logger } from '../util/log.ts';

export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

export interface ConnectionLimits {
  /** close a connection that has not completed its TLS handshake within this long (default 10 s) */
  handshakeTimeoutMs?: number;
  /** most connections open at once on one listener (default: from the descriptor limit, see below) */
  maxConnections?: number;
}

/**
 * A listener's default connection limit: a third of the process's open-file limit (two
 * listeners, plus room for job files and databases), at least 64 and at most 4,096.
 */
export function defaultMaxConnections(): number {
  let soft = 1024;
  try {
    const line = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (line) soft = line[1] === 'unlimited' ? 1 << 20 : Number(line[1]);
  } catch {
    /* no /proc: assume the common 1,024 */
  }
  return Math.max(64, Math.min(4096, Math.floor(soft / 3)));
}

/** Applies the limits to `server`; `name` says which listener in the log. */
export function guardConnections(server: TlsServer, name: string, limits: ConnectionLimits, log: Logger): void {
  const timeoutMs = limits.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const max = limits.maxConnections ?? defaultMaxConnections();
  server.maxConnections = max;
  const messages = {
    dropped: (n: number) => `${name}: ${n} connections refused at the limit of ${max} open connections`,
    timedOut: (n: number) => `${name}: ${n} connections closed for not completing the TLS handshake within ${timeoutMs} ms`,
  };
  const counts = { dropped: 0, timedOut: 0 };
  const timers: Record<keyof typeof counts, NodeJS.Timeout | null> = { dropped: null, timedOut: null };
  const note = (what: keyof typeof counts): void => {
    counts[what]++;
    if (timers[what]) return;
    const flush = (): void => {
      timers[what] = null;
      const n = counts[what];
      counts[what] = 0;
      if (n > 0) log.warn({ listener: name, [what]: n, maxConnections: max, handshakeTimeoutMs: timeoutMs }, messages[what](n));
    };
    // the first one is logged at once, the rest summed per ten seconds
    flush();
    timers[what] = setTimeout(flush, 10_000);
    timers[what].unref();
  };
  const pending = new WeakMap<Socket, NodeJS.Timeout>();
  server.on('drop', () => note('dropped'));
  server.on('connection', (raw: Socket) => {
    const t = setTimeout(() => {
      note('timedOut');
      raw.destroy();
    }, timeoutMs);
    t.unref();
    pending.set(raw, t);
    raw.once('close', () => clearTimeout(t));
  });
  server.on('secureConnection', (tls: TLSSocket) => {
    const raw: unknown = Reflect.get(tls, '_parent');
    if (raw && typeof raw === 'object') clearTimeout(pending.get(raw as Socket));
  });
  server.on('close', () => {
    for (const t of Object.values(timers)) if (t) clearTimeout(t);
  });
}
