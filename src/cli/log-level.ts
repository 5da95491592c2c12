/** `--log-level`: the level of the command's pino logs (log.jsonl files), and of the processes it starts. */
import { InvalidArgumentError, Option } from 'commander';
import { LOG_LEVELS, type LogLevel, isLogLevel, setLogLevel } from '../util/log.ts';

function parseLogLevel(v: string): LogLevel {
  if (!isLogLevel(v)) throw new InvalidArgumentError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got "${v}"`);
  return v;
}

export function logLevelOption(): Option {
  return new Option(
    '--log-level <level>',
    `level of the log.jsonl files (${LOG_LEVELS.join(', ')}; default: $FLOTILLA_LOG_LEVEL, else info)`,
  ).argParser(parseLogLevel);
}

/** Applies a parsed `--log-level` (before any logger is made). */
export function applyLogLevel(level: LogLevel | undefined): void {
  if (level !== undefined) setLogLevel(level);
}
