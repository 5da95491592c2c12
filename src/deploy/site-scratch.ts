/**
 * A site daemon's per-job files, and their removal. A deployed job lives in
 *   <workspace>/jobs/<job>/.flotilla-site-job     marker: this folder is Flotilla's (site, job)
 *   <workspace>/jobs/<job>/app/                   the job folder the server sent (app.tmp-* while it arrives)
 *   <workspace>/jobs/<job>/<site>/                the trainer's workspace: log.jsonl, what the trainer writes,
 *                                                 and Flotilla's scratch (SITE_SCRATCH_DIRS: tasks/, swarm/, filter-spool/)
 * When a job ends (finished, failed, aborted) the site removes app/ and the scratch folders and keeps
 * the rest (the job's log, the trainer's own files); a site started again removes what a killed
 * process left the same way. Only folders under `jobs/` that carry the marker, naming the job of
 * their own folder name, are touched, and only these names in them: a workspace pointed at a
 * folder of user data loses nothing else. The caller holds the workspace's lock (site.lock), so no
 * live process of the same workspace is using what is removed.
 *
 * The removal is synchronous on purpose: a redeploy of the same job id (after a server restart)
 * cannot start writing between the check that no newer run owns the folder and the removal.
 */
import { existsSync, lstatSync, readdirSync, rmSync } from 'node:fs';
import { readJsonFile } from '../util/json-file.ts';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { SITE_SCRATCH_DIRS } from '../runtime/site.ts';

export const JOB_MARKER = '.flotilla-site-job';
const APP_DIR = 'app';
/** receiveJobStream's temp folder: `app.tmp-<pid>-<ms>` */
const APP_TMP = /^app\.tmp-\d+-\d+$/;

const Name = z
  .string()
  .min(1)
  .refine((s) => !/[/\\]/.test(s) && s !== '.' && s !== '..', 'a folder name');
const Marker = z.strictObject({ site: Name, jobId: Name });

/** What a removal reclaimed: regular files and their bytes (links and folders count no bytes). */
export interface Reclaimed {
  files: number;
  bytes: number;
}

/** Marks a job's folder as Flotilla's, before anything is written in it. */
export async function markJobDir(jobDir: string, site: string, jobId: string): Promise<void> {
  await mkdir(jobDir, { recursive: true });
  await writeFile(join(jobDir, JOB_MARKER), `${JSON.stringify({ site, jobId })}\n`);
}

function measure(path: string, into: Reclaimed): void {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (st.isDirectory()) for (const e of readdirSync(path)) measure(join(path, e), into);
  else if (st.isFile()) {
    into.files++;
    into.bytes += st.size;
  }
}

function remove(path: string, into: Reclaimed): void {
  if (!existsSync(path) && !isLink(path)) return;
  measure(path, into);
  // rm never follows a link: a link planted in scratch is removed, its target is not
  rmSync(path, { recursive: true, force: true });
}

function isLink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

function isEmptyDir(path: string): boolean {
  try {
    return lstatSync(path).isDirectory() && readdirSync(path).length === 0;
  } catch {
    return false;
  }
}

/** The marker of a job folder, or null when it is not one of Flotilla's (no marker, another job's, unreadable). */
function markerOf(jobDir: string, jobId: string): z.infer<typeof Marker> | null {
  const m = readJsonFile(join(jobDir, JOB_MARKER), Marker);
  return m?.jobId === jobId ? m : null;
}

/**
 * Removes a marked job folder's scratch (app/, app.tmp-*, <site>/{tasks,swarm,filter-spool}); an
 * emptied <site>/ and a job folder left with only its marker go too. Returns what was reclaimed.
 */
export function cleanJobScratch(jobDir: string, jobId: string): Reclaimed {
  const got: Reclaimed = { files: 0, bytes: 0 };
  const marker = markerOf(jobDir, jobId);
  if (!marker) return got;
  for (const e of readdirSync(jobDir)) if (e === APP_DIR || APP_TMP.test(e)) remove(join(jobDir, e), got);
  const siteDir = join(jobDir, marker.site);
  // a link in place of the site's folder points elsewhere: nothing of Flotilla's is behind it
  if (!isLink(siteDir)) for (const d of SITE_SCRATCH_DIRS) remove(join(siteDir, d), got);
  if (isEmptyDir(siteDir)) rmSync(siteDir, { recursive: true });
  if (readdirSync(jobDir).every((e) => e === JOB_MARKER)) rmSync(jobDir, { recursive: true, force: true });
  return got;
}

/** At a site's start: the scratch of every marked job folder under `jobsDir` (what a killed process left). */
export function cleanLeftovers(jobsDir: string): Reclaimed & { jobs: string[] } {
  const got = { files: 0, bytes: 0, jobs: [] as string[] };
  let entries: string[];
  try {
    entries = readdirSync(jobsDir);
  } catch {
    return got; // no jobs yet
  }
  for (const jobId of entries) {
    const dir = join(jobsDir, jobId);
    if (isLink(dir)) continue;
    const r = cleanJobScratch(dir, jobId);
    if (r.files === 0 && r.bytes === 0) continue;
    got.files += r.files;
    got.bytes += r.bytes;
    got.jobs.push(jobId);
  }
  return got;
}
