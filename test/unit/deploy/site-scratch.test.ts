// What a site's cleanup may remove, on real folders: only Flotilla's scratch names in job folders
// marked as Flotilla's for that job, never a file of the trainer's own, an unmarked folder, a folder
// marked for another job, nor anything behind a link.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { JOB_MARKER, cleanJobScratch, cleanLeftovers, markJobDir } from '../../../src/deploy/site-scratch.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-site-scratch-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function put(path: string, bytes: number): void {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, Buffer.alloc(bytes, 1));
}

test('a marked job folder loses its job folder copy and scratch, keeps the log and the trainer files; nothing else is touched', async () => {
  const jobs = join(tmp, 'ws', 'jobs');
  const job = join(jobs, 'job-a');
  await markJobDir(job, 'site-1', 'job-a');
  put(join(job, 'app', 'job.yaml'), 100);
  put(join(job, 'app.tmp-123-456', 'trainer.ts'), 50);
  put(join(job, 'site-1', 'tasks', 't1', 'input.safetensors'), 1000);
  put(join(job, 'site-1', 'swarm', 'staging', 'r.bin'), 200);
  put(join(job, 'site-1', 'filter-spool', 'flotilla-update-x', 'task.bin'), 300);
  put(join(job, 'site-1', 'log.jsonl'), 10);
  put(join(job, 'site-1', 'checkpoints', 'best.pt'), 20);
  put(join(job, 'notes.txt'), 5); // not a name of Flotilla's
  // a user file reached through a link inside the scratch: the link goes, the file stays
  put(join(tmp, 'user', 'data.csv'), 7);
  symlinkSync(join(tmp, 'user', 'data.csv'), join(job, 'site-1', 'tasks', 't1', 'link.csv'));

  // unmarked, and marked for another job: left alone
  put(join(jobs, 'unmarked', 'app', 'job.yaml'), 100);
  put(join(jobs, 'unmarked', 'site-1', 'tasks', 't', 'input.safetensors'), 100);
  await markJobDir(join(jobs, 'copied'), 'site-1', 'job-a');
  put(join(jobs, 'copied', 'site-1', 'tasks', 't', 'input.safetensors'), 100);
  // a marked job whose site folder is a link to a user folder holding a "tasks" folder
  await markJobDir(join(jobs, 'linked'), 'site-1', 'linked');
  put(join(tmp, 'user', 'tasks', 'mine.txt'), 3);
  symlinkSync(join(tmp, 'user'), join(jobs, 'linked', 'site-1'));

  const left = cleanLeftovers(jobs);
  assert.deepEqual(left.jobs, ['job-a']);
  assert.equal(left.files, 5);
  assert.equal(left.bytes, 100 + 50 + 1000 + 200 + 300);
  assert.deepEqual(readdirSync(job).sort(), [JOB_MARKER, 'notes.txt', 'site-1']);
  assert.deepEqual(readdirSync(join(job, 'site-1')).sort(), ['checkpoints', 'log.jsonl']);
  assert.equal(readFileSync(join(tmp, 'user', 'data.csv')).byteLength, 7, 'the link target is kept');
  assert.ok(existsSync(join(jobs, 'unmarked', 'app', 'job.yaml')) && existsSync(join(jobs, 'unmarked', 'site-1', 'tasks', 't')));
  assert.ok(existsSync(join(jobs, 'copied', 'site-1', 'tasks', 't', 'input.safetensors')), 'a marker naming another job');
  assert.ok(existsSync(join(tmp, 'user', 'tasks', 'mine.txt')), 'nothing behind a linked site folder');
});

test('a job folder left with only its marker and an empty site folder is removed whole', async () => {
  const job = join(tmp, 'ws2', 'jobs', 'job-b');
  await markJobDir(job, 'site-2', 'job-b');
  put(join(job, 'app', 'job.yaml'), 10);
  mkdirSync(join(job, 'site-2', 'tasks'), { recursive: true });
  assert.deepEqual(cleanJobScratch(job, 'job-b'), { files: 1, bytes: 10 });
  assert.equal(existsSync(job), false);
  assert.deepEqual(cleanLeftovers(join(tmp, 'nowhere')), { files: 0, bytes: 0, jobs: [] });
});
