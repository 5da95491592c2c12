/** Structured logs (pino, JSON lines). Quiet by default on the console; files get everything from `info` up. */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { pino, type Logger } from 'pino';

export type { Logger };

/** pino's levels, most to least severe, and `silent` (nothing). */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export function isLogLevel(v: string): v is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(v);
}

/**
 * Sets the level of every logger made from now on, in this process and in the processes and
 * worker threads it starts (they read FLOTILLA_LOG_LEVEL): what `--log-level` does.
 */
export function setLogLevel(level: LogLevel): void {
  process.env.FLOTILLA_LOG_LEVEL = level;
}

/** FLOTILLA_LOG_LEVEL when it names a level, else `fallback` (a typo must not crash pino at startup). */
function levelFromEnv(fallback: LogLevel): LogLevel {
  const v = process.env.FLOTILLA_LOG_LEVEL;
  return v !== undefined && isLogLevel(v) ? v : fallback;
}

export function fileLogger(path: string, name: string, level: LogLevel = levelFromEnv('info')): Logger {
  mkdirSync(dirname(path), { recursive: true });
  return pino({ name, level }, pino.destination({ dest: path, sync: true }));
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

export function stderrLogger(name: string, level: LogLevel = levelFromEnv('warn')): Logger {
  return pino({ name, level }, pino.destination(2));
}
