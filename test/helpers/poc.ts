/**
 * Helpers of the tests that drive a POC deployment through the CLI as a user would: run `flotilla`,
 * wait for the sites and for a job's end through `admin ... --json`, kill what `poc start` left.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { repo } from './federation.ts';

/** The node arguments that run `flotilla <args>` from this checkout's sources. */
export const flotillaArgv = (...args: string[]): string[] => ['--import', 'tsx', join(repo, 'src/cli/main.ts'), ...args];

/** `flotilla <args>` from this checkout; its stdout (throws with the output when it exits non-zero). */
export const flotilla = (...args: string[]): string =>
  execFileSync(process.execPath, flotillaArgv(...args), { cwd: repo, encoding: 'utf8' });

/** `flotilla <args>` without blocking this process's event loop; its stdout (rejects with the output on a non-zero exit). */
export async function flotillaAsync(...args: string[]): Promise<string> {
  try {
    return (await promisify(execFile)(process.execPath, flotillaArgv(...args), { cwd: repo, encoding: 'utf8' })).stdout;
  } catch (e) {
    const x = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`flotilla ${args.join(' ')} failed: ${x.message}\n${x.stdout ?? ''}${x.stderr ?? ''}`);
  }
}

/** The processes `poc start` recorded in <ws>/pids.json. */
export function pocPids(ws: string): Record<string, { pid: number }> {
  const f = join(ws, 'pids.json');
  return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as Record<string, { pid: number }>) : {};
}

/** For an `after` hook: kill -9 whatever a POC started (a test that failed never reached `poc stop`). */
export function killPoc(ws: string): void {
  for (const { pid } of Object.values(pocPids(ws)))
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
}

/** The sites `admin sites` lists once `n` are connected, or those connected when `timeoutMs` ran out. */
export async function waitForSites(admin: string, n: number, timeoutMs = 60_000): Promise<string[]> {
  let sites: string[] = [];
  for (const deadline = Date.now() + timeoutMs; sites.length < n && Date.now() < deadline;) {
    try {
      sites = (JSON.parse(flotilla('admin', admin, 'sites', '--json')) as { site: string }[]).map((x) => x.site);
    } catch {
      /* not up yet */
    }
    if (sites.length < n) await new Promise((res) => setTimeout(res, 250));
  }
  return sites;
}

export type JobStatus = { state: string; detail?: string | null };

/**
 * The job's status (`admin status --json`, read as T) once it FINISHED, FAILED or was ABORTED, or as it
 * was when `timeoutMs` ran out.
 */
export async function waitForJobEnd<T extends JobStatus = JobStatus>(admin: string, id: string, timeoutMs = 90_000): Promise<T> {
  let status = { state: 'SUBMITTED' } as T;
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline;) {
    status = JSON.parse(flotilla('admin', admin, 'status', id, '--json')) as T;
    if (['FINISHED', 'FAILED', 'ABORTED'].includes(status.state)) break;
    await new Promise((res) => setTimeout(res, 300));
  }
  return status;
}
