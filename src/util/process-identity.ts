/**
 * Which process a PID is. A PID alone names whatever process holds that number now (after a
 * crash or a reboot, an unrelated one); the kernel's start time of the process plus its command
 * line name the process itself. Read from /proc (Linux); elsewhere the identity is unknown and
 * callers refuse to act on it rather than guess.
 */
import { closeSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { readJsonFile } from './json-file.ts';
import { hostname } from 'node:os';
import { z } from 'zod';

export const ProcessIdentity = z.strictObject({
  pid: z.number().int().positive(),
  /** start time in clock ticks since boot (/proc/PID/stat field 22) */
  startTime: z.string().regex(/^\d+$/),
  /** the command line, arguments joined by spaces */
  cmdline: z.string(),
});
export type ProcessIdentity = z.infer<typeof ProcessIdentity>;

/** The identity of the process holding `pid` now, or null when there is none (or no /proc). */
export function identify(pid: number): ProcessIdentity | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name (field 2) is in parentheses and may hold spaces: count fields after its last ")"
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const startTime = fields[19]!;
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
    return { pid, startTime, cmdline };
  } catch {
    return null;
  }
}

export type Verdict = { same: true } | { same: false; why: string };

/** Whether the process holding `expected.pid` now is the one recorded. */
export function isSameProcess(expected: ProcessIdentity): Verdict {
  const now = identify(expected.pid);
  if (now === null) return { same: false, why: `no process ${expected.pid} is running` };
  if (now.startTime !== expected.startTime)
    return {
      same: false,
      why: `PID ${expected.pid} now belongs to another process (${now.cmdline.slice(0, 120) || 'no command line'}), started after the recorded one`,
    };
  if (now.cmdline !== expected.cmdline)
    return {
      same: false,
      why: `PID ${expected.pid} runs "${now.cmdline.slice(0, 120)}", not the recorded "${expected.cmdline.slice(0, 120)}"`,
    };
  return { same: true };
}

const LockFile = ProcessIdentity.extend({ host: z.string(), since: z.string() });
type LockFile = z.infer<typeof LockFile>;

export class LockedError extends Error {
  override readonly name = 'LockedError';
  constructor(
    message: string,
    readonly holder: LockFile,
  ) {
    super(message);
  }
}

/**
 * An exclusive lock on a folder for this process's lifetime: a lock file created with O_EXCL
 * holding this process's identity. A lock file whose process is gone (a crash) is taken over;
 * one whose process is alive is refused with who holds it.
 */
export function lockFolder(file: string, what: string): { release(): void; tookOver: LockFile | null } {
  const me = identify(process.pid);
  const content: LockFile = {
    ...(me ?? { pid: process.pid, startTime: '0', cmdline: process.argv.join(' ') }),
    host: hostname(),
    since: new Date().toISOString(),
  };
  let tookOver: LockFile | null = null;
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number;
    try {
      fd = openSync(file, 'wx', 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST')
        throw new Error(`cannot create the lock file ${file}: ${(e as Error).message}: check the folder's permissions`);
      const holder = readHolder(file);
      if (holder && holder.host === hostname() && isSameProcess(holder).same) {
        throw new LockedError(
          `${what} is in use by process ${holder.pid} (${holder.cmdline.slice(0, 160)}), since ${holder.since}: stop it first, or use another folder`,
          holder,
        );
      }
      if (holder && holder.host !== hostname()) {
        throw new LockedError(
          `${what} is locked by process ${holder.pid} on host ${holder.host} since ${holder.since}: stop it there, or delete ${file} if that host is gone`,
          holder,
        );
      }
      // the holder is gone (or the file is unreadable): move it aside atomically, then retry O_EXCL
      tookOver = holder;
      try {
        renameSync(file, `${file}.stale-${process.pid}`);
        rmSync(`${file}.stale-${process.pid}`, { force: true });
      } catch {
        /* another process took it over first: the next attempt sees its lock */
      }
      continue;
    }
    writeSync(fd, `${JSON.stringify(content)}\n`);
    closeSync(fd);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      const h = readHolder(file);
      if (h && h.pid === content.pid && h.startTime === content.startTime) rmSync(file, { force: true });
    };
    return { release, tookOver };
  }
  throw new Error(`could not lock ${what} (${file}): another process keeps taking it`);
}

function readHolder(file: string): LockFile | null {
  return readJsonFile(file, LockFile);
}
