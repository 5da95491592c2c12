// Timeouts of any configured length: a 30-day round timeout (over setTimeout's 2^31-1 ms) is
// accepted and does not fire; one past the supported range is refused with the field named.
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mock, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { allowJobImports } from '../../../src/runtime/job-imports.ts';
import { parseJobConfig } from '../../../src/runtime/job-config.ts';
import { parseProject } from '../../../src/provision/project.ts';
import { simulate } from '../../../src/simulator/simulator.ts';
import { MAX_TIMER_MS, setLongTimeout } from '../../../src/util/long-timer.ts';

const repo = fileURLToPath(new URL('../../..', import.meta.url));
const DAY_MS = 24 * 3600 * 1000;

test('setLongTimeout waits 30 days, not 1 ms (setTimeout overflows past 2^31-1 ms)', async () => {
  let fired = false;
  const t = setLongTimeout(() => (fired = true), 30 * DAY_MS);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(fired, false, 'a 30-day timer has not fired after 100 ms');
  t.clear();
  // with the clock simulated, it fires at 30 days and not a millisecond before
  mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  try {
    let at = -1;
    const start = Date.now();
    setLongTimeout(() => (at = Date.now() - start), 30 * DAY_MS);
    mock.timers.tick(MAX_TIMER_MS);
    assert.equal(at, -1, 'not fired after the longest plain setTimeout');
    mock.timers.tick(30 * DAY_MS - MAX_TIMER_MS - 1);
    assert.equal(at, -1, 'not fired 1 ms early');
    mock.timers.tick(1);
    assert.equal(at, 30 * DAY_MS);
  } finally {
    mock.timers.reset();
  }
});

test('every timeout in a job config and a project is validated to a supported range, naming the field', () => {
  const base = { name: 't', minClients: 1, model: { module: 'm.ts' }, executor: { trainer: { module: 'm.ts' } } };
  const ok = parseJobConfig({ ...base, workflows: [{ type: 'fedavg', rounds: 1, roundTimeoutSeconds: 30 * 86400 }] });
  assert.equal(ok.workflows[0]!.type === 'fedavg' && ok.workflows[0]!.roundTimeoutSeconds, 30 * 86400);
  assert.throws(
    () => parseJobConfig({ ...base, workflows: [{ type: 'fedavg', rounds: 1, roundTimeoutSeconds: 1e12 }] }),
    /workflows\.0\.roundTimeoutSeconds: must be at most 315360000 seconds/,
  );
  assert.throws(
    () => parseJobConfig({ ...base, workflows: [{ type: 'cyclic', rounds: 1, taskTimeoutSeconds: Infinity }] }),
    /workflows\.0\.taskTimeoutSeconds/,
  );
  assert.throws(
    () => parseJobConfig({ ...base, workflows: [{ type: 'fedavg', rounds: 1, waitAfterMinSeconds: -1 }] }),
    /workflows\.0\.waitAfterMinSeconds/,
  );
  assert.throws(
    () =>
      parseJobConfig({
        ...base,
        executor: { script: { command: 'python3', startTimeoutSeconds: 1e10 } },
        workflows: [{ type: 'fedavg', rounds: 1 }],
      }),
    /executor.*startTimeoutSeconds/,
  );
  const server = { type: 'server', name: 'server', org: 'o', host: 'h', port: 8002 };
  assert.throws(
    () => parseProject({ name: 'p', participants: [{ ...server, bind: 'everywhere' }] }),
    /participants\.0\.bind: must be an IPv4 address/,
  );
  assert.equal(parseProject({ name: 'p', participants: [{ ...server, bind: '127.0.0.1' }] }).participants[0]!.type, 'server');
});

test('a job with a 30-day round timeout runs to the end (the timeout neither fires nor is refused)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'flotilla-30d-'));
  try {
    const job = join(dir, 'job');
    allowJobImports(dir); // the copied job imports Flotilla by relative path
    cpSync(join(repo, 'test/fixtures/jobs/tiny'), job, { recursive: true });
    const yaml = readFileSync(join(job, 'job.yaml'), 'utf8').replace('rounds: 3', 'rounds: 2\n    roundTimeoutSeconds: 2592000');
    writeFileSync(join(job, 'job.yaml'), yaml);
    const r = await simulate({ jobDir: job, clients: 2, threads: 0, workspace: join(dir, 'ws') });
    assert.equal(r.rounds.length, 2);
    assert.equal(r.rounds[1]!.sites.length, 2, 'both sites answered: no timeout fired');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
