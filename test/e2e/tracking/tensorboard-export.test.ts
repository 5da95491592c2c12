// TensorBoard event files: what the simulator writes per site run (examples/hello-fedavg, and a job
// logging params and texts) is what TensorBoard's own reader (EventAccumulator) and a running
// `tensorboard` (its HTTP API) find, tag for tag, step for step, value for value.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { simulate, trackingPath } from '../../../src/simulator/simulator.ts';
import { type TrackedRow, TrackingStore, tensorboardDir } from '../../../src/tracking/index.ts';
import { crc32c, maskedCrc32c } from '../../../src/tracking/tfevents.ts';
import { freePort, repo } from '../../helpers/federation.ts';
import { PYTHON } from '../../helpers/python.ts';
import { tensorboardExpected, tensorboardRead } from '../../helpers/tracking.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-tb-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

async function simulated(job: string, clients: number): Promise<{ rows: TrackedRow[]; logdir: string }> {
  const r = spawnSync(PYTHON, ['-c', 'import tensorboard']);
  if (r.status !== 0) assert.fail(`${PYTHON} cannot import tensorboard: bash .ci/run installs it into .venv (FLOTILLA_PYTHON)`);
  const ws = join(tmp, job.replaceAll('/', '-'));
  const sim = await simulate({ jobDir: join(repo, job), clients, threads: 0, workspace: ws });
  const store = TrackingStore.open(trackingPath(ws));
  const rows = store.all(sim.jobId);
  store.close();
  return { rows, logdir: tensorboardDir(join(ws, 'server')) };
}

test('crc32c: the standard check values', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
  assert.equal(maskedCrc32c(Buffer.alloc(0)), 0xa282ead8);
});

test("a job's params and texts read back with TensorBoard's reader as text summaries", async () => {
  const { rows, logdir } = await simulated('test/fixtures/jobs/tracked', 2);
  const read = tensorboardRead(logdir);
  assert.deepEqual(read, tensorboardExpected(rows));
  assert.deepEqual(Object.keys(read).sort(), ['server', 'site-1', 'site-2']);
  assert.equal(read['site-2']!.scalars.step_loss!.length, 6);
  assert.deepEqual(read['site-1']!.texts['params/optimizer'], [[0, 'toward-target']]);
  assert.deepEqual(read['site-2']!.texts.note, [
    [0, 'round 0 on site-2'],
    [1, 'round 1 on site-2'],
  ]);
});

test("hello-fedavg's runs read back with TensorBoard's reader and from a running tensorboard", async () => {
  const { rows, logdir } = await simulated('examples/hello-fedavg', 3);
  const read = tensorboardRead(logdir);
  assert.deepEqual(read, tensorboardExpected(rows));
  assert.deepEqual(Object.keys(read).sort(), ['server', 'site-1', 'site-2', 'site-3']);
  const points = Object.values(read).reduce((n, run) => n + Object.values(run.scalars).reduce((m, s) => m + s.length, 0), 0);
  assert.equal(points, rows.length, 'every scalar the store has');
  assert.deepEqual(
    read['server']!.scalars.val_accuracy!.map(([step]) => step),
    [0, 1, 2, 3, 4],
  );

  // a running tensorboard serves the same scalars over its HTTP API
  const port = await freePort();
  const tb = spawn(
    PYTHON,
    ['-m', 'tensorboard.main', '--logdir', logdir, '--host', '127.0.0.1', '--port', String(port), '--reload_interval', '1'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  tb.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise((r) => tb.once('exit', r));
  try {
    const want = read['site-2']!.scalars.train_loss!;
    assert.equal(want.length, 5);
    const url = `http://127.0.0.1:${port}/data/plugin/scalars/scalars?run=site-2&tag=train_loss`;
    let got: [number, number, number][] = [];
    const deadline = Date.now() + 60_000;
    while (got.length < want.length) {
      if (Date.now() > deadline || tb.exitCode !== null)
        assert.fail(`tensorboard did not answer with ${want.length} points: ${err.slice(-2000)}`);
      try {
        const res = await fetch(url);
        if (res.ok) got = (await res.json()) as [number, number, number][];
      } catch {
        // not listening yet
      }
      if (got.length < want.length) await new Promise((res) => setTimeout(res, 300));
    }
    // [wall time, step, value]
    assert.deepEqual(
      got.map(([, step, value]) => [step, value]),
      want,
    );
    const expectedWall = rows.filter((x) => x.site === 'site-2' && x.key === 'train_loss').map((x) => x.at / 1000);
    got.forEach(([wall], i) => assert.ok(Math.abs(wall - expectedWall[i]!) < 1e-3, 'wall time is when the server got it'));
  } finally {
    if (tb.exitCode === null) {
      tb.kill('SIGTERM');
      await exited;
    }
  }
});
