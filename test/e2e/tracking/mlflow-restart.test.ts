// A job exported to a real `mlflow server` whose federation server (a `flotilla server start
// --mlflow <uri>` process, two site processes, mutual TLS on loopback) is killed -9 in the middle of
// round 1, after the sites logged that round's steps, and started again: the job resumes from round
// 0 and ends with exactly one run per site (and the job's and the server's), all FINISHED, the
// job's and the server's runs the same as before the kill, every round's metrics once per step, the
// first try of round 1 gone (its values differ: +0.5), and MLflow's and TensorBoard's copies equal to
// the store's.
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { JobStore } from '../../../src/deploy/job-store.ts';
import { loadKit } from '../../../src/provision/kit.ts';
import { readMlflowState } from '../../../src/tracking/mlflow.ts';
import { mlflowStatePath, tensorboardDir } from '../../../src/tracking/index.ts';
import { repo, until } from '../../helpers/federation.ts';
import { ServerProcess, SiteProcesses, dumpFederation, federationKits, jobEndStatus, jobEvents } from '../../helpers/fault.ts';
import { type MlflowServer, mlflowExpected, readMlflowJob, startMlflow } from '../../helpers/mlflow.ts';
import { tensorboardExpected, tensorboardRead } from '../../helpers/tracking.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-mlflow-restart-'));
let mlflow: MlflowServer;
const servers: ServerProcess[] = [];
before(async () => {
  mlflow = await startMlflow(tmp);
});
after(async () => {
  for (const s of servers) s.killAll();
  await mlflow?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

const ROUNDS = 4;
const STEPS = 3;

/** The tracked fixture with a trainer whose first try of round 1 logs its steps (+0.5) and then waits for `gate`. */
function restartJob(dest: string, gate: string): string {
  cpSync(join(repo, 'test/fixtures/jobs/tracked'), dest, { recursive: true });
  writeFileSync(
    join(dest, 'job.yaml'),
    readFileSync(join(dest, 'job.yaml'), 'utf8')
      .replace('name: tracked', 'name: tracked-restart')
      .replace('rounds: 2', `rounds: ${ROUNDS}`)
      .replace(`steps: ${STEPS}`, `steps: ${STEPS}\n      gate: ${JSON.stringify(gate)}`),
  );
  writeFileSync(
    join(dest, 'trainer.ts'),
    `import { existsSync } from 'node:fs';
import type { ClientAPI, Trainer } from 'flotilla/client';
import { f32 } from 'flotilla/core';
import type { TrainerFactoryContext } from 'flotilla/runtime';

export function createTrainer(ctx: TrainerFactoryContext): Trainer {
  const gate = String(ctx.args.gate);
  return async (flare: ClientAPI) => {
    await flare.init();
    flare.logParams({ rate: 0.5, steps: ${STEPS} });
    while (flare.isRunning()) {
      const m = await flare.receive();
      if (!m) break;
      const first = m.currentRound === 1 && !existsSync(gate);
      for (let s = 0; s < ${STEPS}; s++)
        flare.log('step_loss', ctx.siteIndex * 100 + m.currentRound * 10 + s + (first ? 0.5 : 0), m.currentRound * ${STEPS} + s);
      flare.log('note', 'round ' + m.currentRound + (first ? ' (first try)' : ''));
      while (m.currentRound === 1 && !existsSync(gate)) await new Promise((r) => setTimeout(r, 50));
      const w = (m.params.get('w')!.data as Float32Array).map((x) => x + 0.5 * (ctx.siteIndex + 1 - x));
      await flare.send({ params: new Map([['w', f32([w.length], w)]]), paramsType: 'FULL', metrics: { loss: 1 + ctx.siteIndex }, meta: { numSamples: 10 }, currentRound: m.currentRound, totalRounds: m.totalRounds });
    }
  };
}

export function initialModel() {
  return new Map([['w', f32([4], [0, 0, 0, 0])]]);
}
`,
  );
  return dest;
}

test(
  'a job whose server is killed -9 mid-round and restarted: one MLflow run per site, FINISHED, every step once',
  { timeout: 240_000 },
  async () => {
    const k = await federationKits(join(tmp, 'kits'), 'mlflow-restart', 2);
    const port = loadKit(k.server!, 'server').config.listen.port;
    const workspace = join(tmp, 'server');
    const server = new ServerProcess(k.server!, workspace, ['--mlflow', mlflow.uri]);
    servers.push(server);
    const sites = new SiteProcesses(k);
    const gate = join(tmp, 'gate');
    const job = restartJob(join(tmp, 'job'), gate);
    const admin = (): AdminClient => new AdminClient(k['boss@hub.org']!, { host: '127.0.0.1', port });
    let id = '';
    try {
      server.start();
      for (const s of ['site-1', 'site-2']) sites.start(s, join(tmp, s));
      await until('the server to listen', () => server.out.join('').includes('listening on port'), 30_000);
      await until('two sites', () => [...sites.output.values()].every((o) => o.join('').includes('connected to')), 60_000);
      const a1 = admin();
      id = await a1.submit(job);
      a1.close();

      // both sites' first try of round 1 is in MLflow: steps 3..5 at +0.5
      const firstTry = async (): Promise<boolean> => {
        const j = await readMlflowJob(mlflow.uri, 'tracked-restart', id).catch(() => null);
        return ['site-1', 'site-2'].every((s) =>
          [3, 4, 5].every((step) => j?.runs[s]?.metrics.step_loss?.some(([st, v]) => st === step && v % 1 === 0.5)),
        );
      };
      for (const deadline = Date.now() + 90_000; !(await firstTry()); await new Promise((r) => setTimeout(r, 300)))
        if (Date.now() > deadline) throw new Error('round 1 never reached MLflow');
      const serverDir = join(workspace, 'jobs', id, 'workspace', 'server');
      const before = readMlflowState(mlflowStatePath(serverDir))!;
      assert.ok(before, 'the run ids are kept in the job folder');
      await server.kill();
      const killed = await readMlflowJob(mlflow.uri, 'tracked-restart', id);
      assert.equal(killed.runs['site-1']!.status, 'RUNNING', 'a killed server ends no run');

      writeFileSync(gate, '');
      server.start();
      await until(
        'the job resumed',
        () => jobEvents(workspace, id).some((e) => e.msg === 'job resumed from its last completed round'),
        60_000,
      );
      const a2 = admin();
      const st = await jobEndStatus(a2, id, 90_000);
      a2.close();
      assert.equal(st.state, 'FINISHED', st.detail ?? undefined);
      assert.deepEqual(
        st.events.map((e) => e.state),
        ['SUBMITTED', 'RUNNING', 'SUBMITTED', 'RUNNING', 'FINISHED'],
      );
      const resumed = jobEvents(workspace, id).find((e) => e.msg === 'job resumed from its last completed round')!;
      assert.equal(resumed.lastRound, 0);
      await sites.stopAll();
      await server.stop();

      const store = new JobStore(join(workspace, 'jobs.sqlite'));
      const rows = store.tracking.all(id);
      store.close();
      const steps = rows.filter((r) => r.site === 'site-1' && r.key === 'step_loss');
      assert.deepEqual(
        steps.map((r) => [r.step, r.value]),
        Array.from({ length: ROUNDS * STEPS }, (_, i) => [i, Math.floor(i / STEPS) * 10 + (i % STEPS)]),
        'the store holds each step once, the first try of round 1 dropped',
      );

      const got = await readMlflowJob(mlflow.uri, 'tracked-restart', id);
      assert.deepEqual(Object.keys(got.runs).sort(), [id, 'server', 'site-1', 'site-2'].sort(), 'one run per site (active runs)');
      for (const [name, r] of Object.entries(got.runs)) assert.equal(r.status, 'FINISHED', name);
      assert.equal(got.runs[id]!.id, before.parent, "the job's run goes on");
      assert.equal(got.runs['server']!.id, before.runs[''], "the server's run goes on (it held nothing of round 1)");
      for (const s of ['site-1', 'site-2']) {
        const r = got.runs[s]!;
        assert.equal(r.parent, before.parent);
        // the first try's points cannot be deleted from a run: the run was replaced, and says which it replaces
        assert.equal(r.tags['flotilla.replaces'], before.runs[s]);
        assert.deepEqual(
          r.metrics.step_loss!.map(([step]) => step),
          Array.from({ length: ROUNDS * STEPS }, (_, i) => i),
        );
        assert.deepEqual(
          r.metrics['result/loss']!.map(([step]) => step),
          [0, 1, 2, 3],
        );
      }
      const want = mlflowExpected(rows);
      for (const [name, w] of Object.entries(want)) {
        assert.deepEqual(got.runs[name]!.metrics, w.metrics, `${name} metrics`);
        assert.deepEqual(got.runs[name]!.params, w.params, `${name} params`);
        for (const [key, v] of Object.entries(w.texts)) assert.equal(got.runs[name]!.tags[key], v, `${name} ${key}`);
      }
      assert.deepEqual(tensorboardRead(tensorboardDir(serverDir)), tensorboardExpected(rows), 'TensorBoard holds each row once');
      const values = Object.values(want).reduce((n, w) => n + Object.values(w.metrics).reduce((m, h) => m + h.length, 0), 0);
      console.log(JSON.stringify({ job: id, rows: rows.length, mlflowValues: values, replaced: ['site-1', 'site-2'] }));
    } catch (e) {
      dumpFederation(server, sites, workspace, id);
      throw e;
    } finally {
      await sites.stopAll();
      await server.stop();
    }
  },
);
