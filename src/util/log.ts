/** Structured logs (pino, JSON lines). Quiet by default on the console; files get everything. */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { pino, type Logger } from 'pino';

export type { Logger };

export function fileLogger(path: string, name: string, level = process.env.FLOTILLA_LOG_LEVEL ?? 'info'): Logger {
  mkdirSync(dirname(path), { recursive: true });
  return pino({ name, level }, pino.destination({ dest: path, sync: true }));
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

export function stderrLogger(name: string, level = process.env.FLOTILLA_LOG_LEVEL ?? 'warn'): Logger {
  return pino({ name, level }, pino.destination(2));
}
