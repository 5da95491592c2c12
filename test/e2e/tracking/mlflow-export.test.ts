// The MLflow exporter against a real `mlflow server` (SQLite backend, loopback): examples/hello-fedavg
// simulated, and a job run by a deployment's server, each an experiment holding a parent run and a
// nested run per site and one for the server; every metric's history (tag, step, value), the params
// and the text tags equal the tracking store's.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { FederationServer } from '../../../src/deploy/server.ts';
import { FederationSite } from '../../../src/deploy/site.ts';
import { loadKit } from '../../../src/provision/kit.ts';
import { parseProject } from '../../../src/provision/project.ts';
import { provision } from '../../../src/provision/provision.ts';
import { simulate, trackingPath } from '../../../src/simulator/simulator.ts';
import { MlflowExporter, TrackingStore, type TrackedRow, mlflowKey, tensorboardDir } from '../../../src/tracking/index.ts';
import { capture, freePortPair, repo, until } from '../../helpers/federation.ts';
import { type MlflowServer, mlflowExpected, readMlflowJob, startMlflow } from '../../helpers/mlflow.ts';
import { tensorboardExpected, tensorboardRead } from '../../helpers/tracking.ts';

const run = promisify(execFile);
const tmp = mkdtempSync(join(tmpdir(), 'flotilla-mlflow-'));
let server: MlflowServer;
before(async () => {
  server = await startMlflow(tmp);
});
after(async () => {
  await server?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

/** MLflow's copy of a job equals the store's: runs, statuses, nesting, params, text tags, metric histories. */
async function assertInMlflow(experiment: string, jobId: string, rows: readonly TrackedRow[], sites: string[]): Promise<number> {
  const job = await readMlflowJob(server.uri, experiment, jobId);
  const want = mlflowExpected(rows);
  assert.deepEqual(Object.keys(job.runs).sort(), [jobId, 'server', ...sites].sort());
  const parent = job.runs[jobId]!;
  assert.equal(parent.status, 'FINISHED');
  let values = 0;
  for (const [name, w] of Object.entries(want)) {
    const got = job.runs[name]!;
    assert.equal(got.status, 'FINISHED', name);
    assert.equal(got.parent, parent.id, `${name} is nested under the job's run`);
    assert.equal(got.tags['flotilla.job_id'], jobId);
    assert.deepEqual(got.params, w.params, `${name} params`);
    assert.deepEqual(got.metrics, w.metrics, `${name} metrics`);
    for (const [k, v] of Object.entries(w.texts)) assert.equal(got.tags[k], v, `${name} ${k}`);
    values += Object.values(w.metrics).reduce((n, h) => n + h.length, 0);
  }
  return values;
}

test("hello-fedavg simulated: its metrics in MLflow (tags, steps, values) equal the store's", async () => {
  const ws = join(tmp, 'hello');
  const sim = await simulate({ jobDir: join(repo, 'examples/hello-fedavg'), clients: 3, threads: 0, workspace: ws, mlflowUri: server.uri });
  const store = TrackingStore.open(trackingPath(ws));
  const rows = store.all(sim.jobId);
  store.close();
  const values = await assertInMlflow('hello-fedavg', sim.jobId, rows, ['site-1', 'site-2', 'site-3']);
  // 3 sites × 5 rounds × (train_loss logged + 4 result metrics) + the server's 4 round means × 5
  assert.equal(values, 3 * 5 * 5 + 4 * 5);
  assert.equal(values, rows.length);
  const job = await readMlflowJob(server.uri, 'hello-fedavg', sim.jobId);
  assert.deepEqual(
    job.runs['server']!.metrics.val_accuracy!.map(([step]) => step),
    [0, 1, 2, 3, 4],
  );
});

test("a deployment's server exports a job to MLflow and TensorBoard: params, texts, steps and values equal the store's", async () => {
  const port = await freePortPair();
  const project = parseProject({
    name: 'mlflow',
    participants: [
      { type: 'server', name: 'server', org: 'hub', host: 'localhost', port },
      { type: 'client', name: 'site-1', org: 'a' },
      { type: 'client', name: 'site-2', org: 'b' },
      { type: 'admin', name: 'boss@hub.org', org: 'hub', role: 'project_admin' },
    ],
  });
  const kits = (await provision(project, { outDir: join(tmp, 'kits') })).kits;
  const fed = new FederationServer({
    kit: loadKit(kits.server!, 'server'),
    workspace: join(tmp, 'server'),
    log: capture().log,
    mlflowUri: server.uri,
  });
  await fed.start();
  const sites = ['site-1', 'site-2'].map(
    (name) => new FederationSite({ kit: loadKit(kits[name]!, 'client'), workspace: join(tmp, name), log: capture().log }),
  );
  const running = sites.map((s) => s.run());
  const admin = new AdminClient(kits['boss@hub.org']!);
  try {
    await until('the sites to connect', () => fed.siteList().length === 2);
    const jobDir = join(tmp, 'job');
    cpSync(join(repo, 'test/fixtures/jobs/tracked'), jobDir, { recursive: true });
    writeFileSync(
      join(jobDir, 'job.yaml'),
      readFileSync(join(jobDir, 'job.yaml'), 'utf8').replace('name: tracked', 'name: tracked-deployed'),
    );
    const jobId = await admin.submit(jobDir);
    await until('the job to end', () => ['FINISHED', 'FAILED'].includes(fed.store.get(jobId)?.state ?? ''), 60_000);
    assert.equal(fed.store.get(jobId)?.state, 'FINISHED');
    const rows = fed.store.tracking.all(jobId);
    assert.ok(rows.some((r) => r.kind === 'param') && rows.some((r) => r.kind === 'text'));
    const values = await assertInMlflow('tracked-deployed', jobId, rows, ['site-1', 'site-2']);
    assert.equal(values, rows.filter((r) => r.kind === 'scalar').length);
    // the job's TensorBoard runs, in its server folder
    const logdir = tensorboardDir(join(fed.jobsDir, jobId, 'workspace', 'server'));
    assert.deepEqual(tensorboardRead(logdir), tensorboardExpected(rows));
  } finally {
    admin.close();
    for (const s of sites) s.stop('test over');
    await Promise.all(running);
    await fed.stop();
  }
});

test('a second job of the same name joins the experiment; a bad server fails the exporter with the HTTP status', async () => {
  const e = new MlflowExporter({ uri: server.uri, experiment: 'hello-fedavg', jobId: 'other-1' });
  const at = Date.now();
  await e.write([
    { id: 1, jobId: 'other-1', site: 'site-1', round: 0, step: null, kind: 'scalar', key: 'loss', value: 0.5, text: null, at },
  ]);
  await e.close('FAILED');
  const job = await readMlflowJob(server.uri, 'hello-fedavg', 'other-1');
  assert.equal(job.runs['other-1']!.status, 'FAILED');
  assert.deepEqual(job.runs['site-1']!.metrics.loss, [[0, 0.5]]);
  // keys MLflow's validator refuses as they are go in as mlflowKey makes them: the batch is accepted
  const odd = new MlflowExporter({ uri: server.uri, experiment: 'odd-keys', jobId: 'odd-1' });
  const oddRows: TrackedRow[] = [
    { id: 1, jobId: 'odd-1', site: 'site-1', round: 0, step: 3, kind: 'scalar', key: 'acc@top-1 (%)', value: 0.25, text: null, at },
    { id: 2, jobId: 'odd-1', site: 'site-1', round: 0, step: 3, kind: 'scalar', key: '/abs//x/', value: 1, text: null, at },
    { id: 3, jobId: 'odd-1', site: 'site-1', round: 0, step: 3, kind: 'scalar', key: '..up', value: 2, text: null, at },
    { id: 4, jobId: 'odd-1', site: 'site-1', round: null, step: null, kind: 'param', key: 'lr=?', value: null, text: '0.1', at },
    { id: 5, jobId: 'odd-1', site: 'site-1', round: 0, step: null, kind: 'text', key: 'note#1', value: null, text: 'hi', at },
  ];
  await odd.write(oddRows);
  await odd.close('FINISHED');
  const oddJob = await readMlflowJob(server.uri, 'odd-keys', 'odd-1');
  assert.deepEqual(oddJob.runs['site-1']!.metrics, {
    [mlflowKey('acc@top-1 (%)')]: [[3, 0.25]],
    [mlflowKey('/abs//x/')]: [[3, 1]],
    [mlflowKey('..up')]: [[3, 2]],
  });
  assert.deepEqual(oddJob.runs['site-1']!.params, { lr__: '0.1' });
  assert.equal(oddJob.runs['site-1']!.tags['text/note_1'], 'hi');

  const bad = new MlflowExporter({ uri: `${server.uri}/nothing-here/`, experiment: 'x', jobId: 'j' });
  await assert.rejects(
    Promise.resolve(
      bad.write([{ id: 1, jobId: 'j', site: 's', round: 0, step: 0, kind: 'scalar', key: 'k', value: 1, text: null, at: 1 }]),
    ),
    /MLflow experiments\/(get-by-name|create): HTTP 404/,
  );
});

test('an MLflow server that is not there: the job finishes, its TensorBoard runs are written, the log says why', async () => {
  const ws = join(tmp, 'down');
  const closed = `http://127.0.0.1:${await freePortPair()}`;
  const sim = await simulate({
    jobDir: join(repo, 'test/fixtures/jobs/tracked'),
    clients: 2,
    threads: 0,
    workspace: ws,
    mlflowUri: closed,
  });
  assert.equal(sim.rounds.length, 2);
  const store = TrackingStore.open(trackingPath(ws));
  const rows = store.all(sim.jobId);
  store.close();
  assert.deepEqual(tensorboardRead(tensorboardDir(join(ws, 'server'))), tensorboardExpected(rows));
  const log = readFileSync(join(ws, 'server', 'log.jsonl'), 'utf8');
  assert.match(log, /"exporter":"mlflow".*tracking exporter failed/);
});

test('flotilla metrics --mlflow --tensorboard exports a recorded job after the fact (the job above, whose MLflow was down)', async () => {
  const ws = join(tmp, 'down');
  const logdir = join(tmp, 'tb-after');
  const { stdout } = await run(process.execPath, [
    join(repo, 'bin/flotilla.js'),
    'metrics',
    ws,
    '--mlflow',
    server.uri,
    '--tensorboard',
    logdir,
  ]);
  const store = TrackingStore.open(trackingPath(ws));
  const jobId = store.jobs().at(-1)!;
  const rows = store.all(jobId);
  store.close();
  assert.match(stdout, new RegExp(`Exported ${rows.length} rows of job ${jobId} to MLflow at ${server.uri}, experiment "tracked"`));
  await assertInMlflow('tracked', jobId, rows, ['site-1', 'site-2']);
  assert.deepEqual(tensorboardRead(logdir), tensorboardExpected(rows));
});

test('flotilla simulate --mlflow (the CLI in a child process): MLflow and the TensorBoard runs it writes equal the store', async () => {
  const ws = join(tmp, 'cli-sim');
  const { stdout } = await run(process.execPath, [
    join(repo, 'bin/flotilla.js'),
    'simulate',
    join(repo, 'test/fixtures/jobs/tracked'),
    '--clients',
    '2',
    '--workspace',
    ws,
    '--mlflow',
    server.uri,
  ]);
  const store = TrackingStore.open(trackingPath(ws));
  const jobId = store.jobs().at(-1)!;
  const rows = store.all(jobId);
  store.close();
  assert.match(stdout, /step_loss|loss/, 'the round table shows the logged metrics');
  assert.ok(rows.some((r) => r.kind === 'param') && rows.some((r) => r.kind === 'text'));
  const values = await assertInMlflow('tracked', jobId, rows, ['site-1', 'site-2']);
  assert.equal(values, rows.filter((r) => r.kind === 'scalar').length);
  // the simulator's TensorBoard runs, read by TensorBoard's own reader
  assert.deepEqual(tensorboardRead(tensorboardDir(join(ws, 'server'))), tensorboardExpected(rows));
});

test('--mlflow with an address that is no tracking server fails the command at once, naming the flag', async () => {
  const r = await run(process.execPath, [
    join(repo, 'bin/flotilla.js'),
    'simulate',
    join(repo, 'examples/hello-fedavg'),
    '--mlflow',
    'file:///tmp/mlruns',
  ]).catch((e: { code: number; stderr: string }) => e);
  assert.ok('code' in r && r.code !== 0);
  assert.match(r.stderr, /--mlflow: "file:\/\/\/tmp\/mlruns" is not http\(s\)/);
});
