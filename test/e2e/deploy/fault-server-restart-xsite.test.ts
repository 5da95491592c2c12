// A server killed with SIGKILL in the middle of cross-site evaluation (POC-like: the server and two sites
// are real `flotilla` processes over mutual TLS on loopback), then started again on its workspace: the job
// resumes inside cross-site evaluation (FedAvg's rounds are not run again), no site is asked for its model
// again, the rows finished before the kill are not evaluated again, and the final matrix equals an
// uninterrupted (simulated) run's. Prints the time from the restart to the job resumed and to its end.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { loadKit } from '../../../src/provision/kit.ts';
import { simulate } from '../../../src/simulator/simulator.ts';
import { tinyJob, until } from '../../helpers/federation.ts';
import {
  type LogEvent,
  ServerProcess,
  SiteProcesses,
  dumpFederation,
  federationKits,
  jobEndStatus,
  jobEvents,
} from '../../helpers/fault.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-fault-restart-xsite-'));
const servers: ServerProcess[] = [];
after(() => {
  for (const s of servers) s.killAll();
  rmSync(tmp, { recursive: true, force: true });
});

const OWNERS = ['server', 'site-1', 'site-2'];

test('cross-site evaluation: a server killed -9 mid-evaluation resumes with the rows not done only', { timeout: 300_000 }, async () => {
  const k = await federationKits(join(tmp, 'kits'), 'restart-xsite', 2);
  const port = loadKit(k.server!, 'server').config.listen.port;
  const workspace = join(tmp, 'server');
  const server = new ServerProcess(k.server!, workspace);
  servers.push(server);
  server.start();
  const sites = new SiteProcesses(k);
  for (const s of ['site-1', 'site-2']) sites.start(s, join(tmp, s));
  // each evaluation takes 600 ms: a row is 0.6 s or more, so the kill lands inside the second row
  const job = tinyJob(join(tmp, 'job'), { minClients: 2, rounds: 2, crossSite: { evalSleepMs: 600 } });
  const admin = (): AdminClient => new AdminClient(k['boss@hub.org']!, { host: '127.0.0.1', port });
  let id = '';
  try {
    await until('the server to listen', () => server.out.join('').includes('listening on port'), 90_000);
    await until('two sites', () => [...sites.output.values()].every((o) => o.join('').includes('connected to')), 60_000);
    const a1 = admin();
    id = await a1.submit(job);
    a1.close();
    const events = (msg: string, since = 0): LogEvent[] => jobEvents(workspace, id).filter((e) => e.msg === msg && e.time >= since);
    await until('the first cross-site row', () => events('cross-site row done').length >= 1, 90_000);
    await server.kill();
    const rowsBefore = events('cross-site row done').map((e) => e.model as string);
    assert.equal(events('cross-site model in').length, 2, 'both models were in before the kill');

    const restartedAt = Date.now();
    server.start();
    await until('the evaluation resumed', () => events('cross-site evaluation resumed', restartedAt).length > 0, 90_000);
    const resumed = events('cross-site evaluation resumed', restartedAt)[0]!;
    const a2 = admin();
    const st = await jobEndStatus(a2, id, 90_000);
    a2.close();
    assert.equal(st.state, 'FINISHED', st.detail ?? undefined);
    const finishedAt = Date.now();

    // what the restarted server resumed from: both models, the rows logged done before the kill
    assert.deepEqual([...(resumed.models as string[])].sort(), ['site-1', 'site-2']);
    const done = resumed.rows as string[];
    assert.ok(
      rowsBefore.every((o) => done.includes(o)),
      `rows done before the kill (${rowsBefore}) resumed (${done})`,
    );
    assert.ok(done.length >= 1 && done.length < OWNERS.length, `killed mid-evaluation: ${done.length} rows done`);
    // after the restart: no round trained, no model asked for, each remaining row evaluated once
    assert.equal(events('round done', restartedAt).length, 0, 'no FedAvg round run again');
    assert.equal(events('cross-site model in', restartedAt).length, 0, 'no model asked for again');
    assert.deepEqual(
      events('cross-site row done', restartedAt)
        .map((e) => e.model as string)
        .sort(),
      OWNERS.filter((o) => !done.includes(o)).sort(),
    );

    // the uninterrupted run of the same job, simulated with the same two sites
    const sim = join(tmp, 'sim');
    await simulate({ jobDir: job, clients: 2, threads: 0, workspace: sim });
    const summary = (dir: string): { crossSite: unknown } =>
      JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8')) as { crossSite: unknown };
    const deployed = summary(join(workspace, 'jobs', id, 'workspace', 'server')).crossSite;
    assert.deepEqual(deployed, summary(join(sim, 'server')).crossSite, 'the matrix differs from the uninterrupted run');
    assert.deepEqual(Object.keys(deployed as object).sort(), OWNERS);
    console.log(
      JSON.stringify({
        rowsDoneBeforeKill: done.length,
        rowsAfterRestart: OWNERS.length - done.length,
        restartToEvaluationResumedSeconds: (resumed.time - restartedAt) / 1000,
        restartToJobFinishedSeconds: (finishedAt - restartedAt) / 1000,
      }),
    );
  } catch (e) {
    dumpFederation(server, sites, workspace, id);
    throw e;
  } finally {
    await sites.stopAll();
    await server.stop();
  }
});
