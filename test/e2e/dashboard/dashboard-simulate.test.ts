// `flotilla simulate --dashboard 0` as a user runs it (the CLI in a child process): the printed
// link's token opens the run's API and /metrics, nothing answers without it, the job's rounds and
// metric points arrive while it runs, and an abort from the dashboard stops the simulation.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { repo, tinyJob, until } from '../../helpers/federation.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-simdash-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('simulate --dashboard serves the run behind its token and aborts it from the dashboard', { timeout: 120_000 }, async () => {
  const job = tinyJob(join(tmp, 'job'), { rounds: 40, sleepMs: 150 });
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(repo, 'src/cli/main.ts'), 'simulate', job, '-n', '2', '-t', '0', '-w', join(tmp, 'ws'), '--dashboard', '0'],
    { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  try {
    await until('the dashboard link', () => /Dashboard at (http:\/\/127\.0\.0\.1:\d+)\/#token=(\S+)/.test(out), 60_000);
    const [, base, token] = /Dashboard at (http:\/\/127\.0\.0\.1:\d+)\/#token=(\S+)/.exec(out)!;
    const auth = { authorization: `Bearer ${token}` };
    for (const path of ['/api/overview', '/api/events', '/metrics'])
      assert.equal((await fetch(`${base}${path}`)).status, 401, `${path} without the token`);
    assert.equal((await fetch(`${base}/`)).status, 200, 'the page itself is public');

    let id = '';
    let roundsDone = 0;
    let points = 0;
    await until(
      'two rounds on the dashboard',
      () => {
        void (async () => {
          const o = (await (await fetch(`${base}/api/overview`, { headers: auth })).json()) as { jobs: { id: string; state: string }[] };
          id = o.jobs[0]?.id ?? '';
          if (!id) return;
          const j = (await (await fetch(`${base}/api/jobs/${id}`, { headers: auth })).json()) as {
            progress: { roundsDone: number } | null;
            points: unknown[];
          };
          roundsDone = j.progress?.roundsDone ?? 0;
          points = j.points.length;
        })().catch(() => undefined);
        return roundsDone >= 2;
      },
      15_000,
    );
    assert.match(id, /^tiny-/);
    assert.ok(points >= 2 * 2 * 2, `points of 2 sites × (logged loss + result loss/site_index) × 2 rounds: ${points}`);
    const metrics = await (await fetch(`${base}/metrics`, { headers: auth })).text();
    const rounds = Number(/flotilla_rounds_completed_total\{job_name="tiny"\} (\d+)/.exec(metrics)?.[1]);
    assert.ok(rounds >= 2, `rounds on /metrics: ${rounds}`);
    assert.match(metrics, /flotilla_connected_sites 2/);

    const abort = await fetch(`${base}/api/jobs/${id}/abort`, { method: 'POST', headers: auth });
    assert.equal(abort.status, 200, await abort.text());
    const code = await exited;
    assert.notEqual(code, 0, out);
    assert.match(out, /aborted by /);
    assert.ok(!/Done in/.test(out), 'the run did not finish its 40 rounds');
  } finally {
    child.kill('SIGKILL');
  }
});
