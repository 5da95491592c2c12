/**
 * Cancellation of a task an ex-process trainer is working on (docs/reliability.md): the host sends
 * `cancel`; a trainer that honours it takes the next task in the same process; one that ignores it
 * is killed after cancelGraceMs and started again, and the next task runs in the new process.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { TaskInput } from '../../../src/client/api.ts';
import { ExProcessTrainerHost } from '../../../src/client/host/process-host.ts';
import { flModel } from '../../../src/core/fl-model.ts';
import { f32 } from '../../../src/core/tensor.ts';

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const trainer = path.join(repoRoot, 'test/fixtures/trainers/cancellable.ts');

let workspace = '';
before(async () => {
  workspace = await mkdtemp(path.join(tmpdir(), 'flotilla-cancel-'));
});
after(async () => {
  await rm(workspace, { recursive: true, force: true });
});

function task(id: string, slow: boolean): TaskInput {
  const params = new Map([['w', f32([3], [1, 2, 3])]]);
  return { taskId: id, taskName: 'train', model: flModel(params, { currentRound: 0, totalRounds: 1, meta: { slow } }) };
}

async function cancelThenNext(mode: 'honour' | 'ignore', graceMs: number) {
  const lines: string[] = [];
  const host = new ExProcessTrainerHost({
    command: process.execPath,
    args: ['--import', 'tsx', trainer],
    cwd: repoRoot,
    env: { FLOTILLA_TEST_CANCEL: mode },
    cancelGraceMs: graceMs,
    logger: (l) => void lines.push(l),
  });
  await host.start({ siteName: 'site-1', jobId: 'job-1', workspace, onMetric: () => {} });
  try {
    const first = await host.runTask(task('warm', false));
    const pid = first.metrics.pid;
    assert.equal(pid, host.pid);
    const ac = new AbortController();
    const slow = host.runTask(task('slow', true), ac.signal);
    await new Promise((r) => setTimeout(r, 300)); // the trainer has it and works on it
    const cancelledAt = performance.now();
    ac.abort(new Error('round timeout'));
    await assert.rejects(slow, /round timeout/);
    const next = await host.runTask(task('next', false));
    const nextMs = performance.now() - cancelledAt;
    return { pid, nextPid: next.metrics.pid, hostPid: host.pid, restarts: host.restartCount, nextMs, lines };
  } finally {
    await host.stop();
  }
}

it('a trainer that honours cancel takes the next task at once, in the same process', async () => {
  const r = await cancelThenNext('honour', 30_000);
  assert.equal(r.nextPid, r.pid);
  assert.equal(r.restarts, 0);
  assert.ok(r.nextMs < 10_000, `next task after ${r.nextMs} ms`);
  console.log(JSON.stringify({ honour: { nextTaskAfterCancelMs: Math.round(r.nextMs) } }));
});

it('a trainer that ignores cancel is killed after the grace period; the next task runs in a new process', async () => {
  const graceMs = 500;
  const r = await cancelThenNext('ignore', graceMs);
  assert.notEqual(r.nextPid, r.pid);
  assert.equal(r.nextPid, r.hostPid);
  assert.equal(r.restarts, 1);
  assert.ok(r.nextMs >= graceMs, `next task after ${r.nextMs} ms, before the grace period ended`);
  assert.ok(
    r.lines.some((l) => /did not stop within 500 ms \(cancelGraceMs\)/.test(l)),
    r.lines.join('\n'),
  );
  // the old process is gone
  assert.throws(() => process.kill(Number(r.pid), 0), /ESRCH/);
  console.log(JSON.stringify({ ignore: { graceMs, nextTaskAfterCancelMs: Math.round(r.nextMs) } }));
});
