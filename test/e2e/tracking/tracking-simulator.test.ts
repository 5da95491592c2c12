// What TypeScript and Python trainers log while they train reaches the simulator's tracking store
// (and its round table) per site, round and step: scalars, texts, params; `flotilla metrics` reads it.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { simulate, trackingPath } from '../../../src/simulator/simulator.ts';
import { SERVER_SITE, TrackingStore, type TrackedRow } from '../../../src/tracking/index.ts';
import { repo } from '../../helpers/federation.ts';
import { PYTHON } from '../../helpers/python.ts';

const run = promisify(execFile);
const tmp = mkdtempSync(join(tmpdir(), 'flotilla-tracking-sim-'));

function expectLogged(rows: TrackedRow[], params: (siteIndex: number) => Record<string, string>): void {
  for (const [i, site] of ['site-1', 'site-2'].entries()) {
    const mine = rows.filter((r) => r.site === site);
    assert.deepEqual(Object.fromEntries(mine.filter((r) => r.kind === 'param').map((r) => [r.key, r.text])), params(i), `${site}'s params`);
    // three steps per round, each value site*100 + round*10 + step, tagged with the task's round
    assert.deepEqual(
      mine.filter((r) => r.key === 'step_loss').map((r) => [r.round, r.step, r.value]),
      [0, 1].flatMap((round) => [0, 1, 2].map((s) => [round, round * 3 + s, i * 100 + round * 10 + s])),
    );
    assert.deepEqual(
      mine.filter((r) => r.kind === 'text').map((r) => [r.round, r.key, r.text]),
      [0, 1].map((round) => [round, 'note', `round ${round} on ${site}`]),
    );
    assert.deepEqual(
      mine.filter((r) => r.key === 'result/loss').map((r) => [r.round, r.step, r.value]),
      [
        [0, 0, i + 1],
        [1, 1, i + 1],
      ],
    );
  }
  // each round's mean over the sites, a row of the server
  assert.deepEqual(
    rows.filter((r) => r.site === SERVER_SITE).map((r) => [r.round, r.key, r.value]),
    [
      [0, 'loss', 1.5],
      [1, 'loss', 1.5],
    ],
  );
  // logged while the task ran: a round's steps are recorded before the round's result metrics
  for (const round of [0, 1]) {
    const lastStep = Math.max(...rows.filter((r) => r.key === 'step_loss' && r.round === round).map((r) => r.id));
    const result = Math.min(...rows.filter((r) => r.key === 'result/loss' && r.round === round).map((r) => r.id));
    assert.ok(lastStep < result, `round ${round}: steps ${lastStep} before results ${result}`);
  }
}

test('TypeScript trainers: logged rows are in the store while the job runs, and after it', async () => {
  const ws = join(tmp, 'ts');
  const live: TrackedRow[] = [];
  const r = await simulate({
    jobDir: join(repo, 'test/fixtures/jobs/tracked'),
    clients: 2,
    threads: 2,
    workspace: ws,
    onTracked: (row) => live.push(row),
  });
  const store = TrackingStore.open(trackingPath(ws));
  const rows = store.all(r.jobId);
  store.close();
  expectLogged(rows, (i) => ({ rate: '0.5', steps: '3', target: String(i + 1), optimizer: 'toward-target', shuffle: 'false' }));
  assert.deepEqual(
    live.map((x) => x.id),
    rows.map((x) => x.id),
    'every row reached the live subscriber, in order',
  );
});

test('a Python trainer: flotilla.log (numbers, texts) and log_params reach the store; `flotilla metrics` prints them', async () => {
  const ws = join(tmp, 'py');
  const r = await simulate({ jobDir: join(repo, 'test/fixtures/jobs/tracked-python'), clients: 2, workspace: ws, python: PYTHON });
  const store = TrackingStore.open(trackingPath(ws));
  const rows = store.all(r.jobId);
  store.close();
  expectLogged(rows, () => ({ lr: '0.25', batch_size: '8', optimizer: 'sgd', nesterov: 'true' }));

  const csv = (await run(process.execPath, [join(repo, 'bin/flotilla.js'), 'metrics', ws, '--csv'])).stdout.trim().split('\n');
  assert.equal(csv[0], 'id,job,site,round,step,kind,key,value,time');
  assert.equal(csv.length, rows.length + 1);
  assert.ok(
    csv.some((l) => l.includes(`,${r.jobId},site-2,1,5,scalar,step_loss,112,`)),
    'site-2, round 1, step 5',
  );
  assert.ok(csv.some((l) => l.includes(`,${r.jobId},server,0,0,scalar,loss,1.5,`)));
  const table = (await run(process.execPath, [join(repo, 'bin/flotilla.js'), 'metrics', ws])).stdout;
  assert.match(table, /site-1\s+1\s+-\s+text\s+note\s+"round 1 on site-1"/);
});
