// The server's durability and liveness with a real FederationServer, a site and an admin in this
// process over mutual TLS: a server stopped while a job runs comes back with the job marked
// ABORTED_BY_RESTART, and a requeue runs it to a downloadable model; a site that stays connected
// but sends no heartbeats is dropped from the site list while the others stay.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import { FederationSite } from '../../../src/deploy/site.ts';
import { FederationServer } from '../../../src/deploy/server.ts';
import { type Kit, type ServerConfig, loadKit } from '../../../src/provision/kit.ts';
import { parseProject } from '../../../src/provision/project.ts';
import { provision } from '../../../src/provision/provision.ts';
import { Channel } from '../../../src/streaming/index.ts';
import { GrpcClient } from '../../../src/transport/grpc/client.ts';
import { capture, tinyJob, until } from '../../helpers/federation.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-deploy-restart-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

async function kits(name: string): Promise<Record<string, string>> {
  const project = parseProject({
    name,
    participants: [
      { type: 'server', name: 'server', org: 'hub', host: 'localhost', port: 1 },
      { type: 'client', name: 'site-1', org: 'a' },
      { type: 'client', name: 'site-2', org: 'b' },
      { type: 'admin', name: 'boss@hub.org', org: 'hub', role: 'project_admin' },
    ],
  });
  return (await provision(project, { outDir: join(tmp, name) })).kits;
}

test(
  'a job running when the server stops is ABORTED_BY_RESTART on the next start; requeued, it finishes with a downloadable model',
  { timeout: 40_000 },
  async () => {
    const k = await kits('restart');
    const kit = loadKit(k.server!, 'server');
    const workspace = join(tmp, 'restart', 'server-ws');
    const log1 = capture();
    const first = new FederationServer({ kit, workspace, host: '127.0.0.1', port: 0, log: log1.log });
    const port = await first.start();
    // a site that gives up resuming quickly, so it starts a fresh session with the next server
    const cliLog = capture();
    const client = new FederationSite({
      kit: loadKit(k['site-1']!, 'client'),
      workspace: join(tmp, 'restart', 'site-1'),
      host: '127.0.0.1',
      port,
      sessionResumeMs: 1000,
      log: cliLog.log,
    });
    const running = client.run();
    const admin = new AdminClient(k['boss@hub.org']!, { host: '127.0.0.1', port });
    let second: FederationServer | null = null;
    let firstStopped = false;
    let log2 = capture();
    try {
      await until('the site to connect', () => first.siteList().length === 1);
      // 2 rounds of 400 ms each: long enough to stop the server in the middle
      const id = await admin.submit(tinyJob(join(tmp, 'restart', 'slow'), { minClients: 1, rounds: 2, sleepMs: 400 }));
      const siteJobLog = join(tmp, 'restart', 'site-1', 'jobs', id, 'site-1', 'log.jsonl');
      await until(
        'the job to run on the site',
        () => first.store.get(id)?.state === 'RUNNING' && existsSync(siteJobLog) && readFileSync(siteJobLog, 'utf8').includes('registered'),
        10_000,
      );
      firstStopped = true;
      await first.stop();

      log2 = capture();
      second = new FederationServer({ kit, workspace, host: '127.0.0.1', port, log: log2.log, resumeJobs: false });
      await second.start();
      const after = await admin.call('status', { job: id });
      assert.equal(after.state, 'ABORTED_BY_RESTART');
      assert.match(after.detail ?? '', /requeue it/);
      assert.deepEqual(
        after.events.map((e) => e.state),
        ['SUBMITTED', 'RUNNING', 'ABORTED_BY_RESTART'],
      );
      assert.ok(
        log2.lines.some((l) => l.includes('marked ABORTED_BY_RESTART') && l.includes(id)),
        'the restart says which jobs it marked',
      );

      await until('the site to reconnect', () => second!.siteList().length === 1, 10_000);
      assert.deepEqual(await admin.call('requeue', { job: id }), { jobId: id, state: 'SUBMITTED' });
      await until('the requeued job to end', () => ['FINISHED', 'FAILED', 'ABORTED'].includes(second!.store.get(id)?.state ?? ''), 15_000);
      const done = await admin.call('status', { job: id });
      assert.equal(done.state, 'FINISHED', done.detail ?? undefined);
      assert.deepEqual(
        done.events.map((e) => e.state),
        ['SUBMITTED', 'RUNNING', 'ABORTED_BY_RESTART', 'SUBMITTED', 'RUNNING', 'FINISHED'],
      );
      const dir = await admin.download(id, join(tmp, 'restart', 'downloads'));
      // 2 rounds of w += 0.5 (1 − w) from 0 on the one site
      const w = (await readSafetensors(join(dir, 'global_model.safetensors'))).tensors.get('w')!.data as Float32Array;
      assert.deepEqual(Array.from(w), [0.75, 0.75, 0.75, 0.75]);
    } catch (e) {
      // the three logs tell where a restart went wrong
      console.error(['server 1:', ...log1.lines, 'server 2:', ...log2.lines, 'site:', ...cliLog.lines].join(''));
      throw e;
    } finally {
      admin.close();
      client.stop('test over');
      await running;
      if (!firstStopped) await first.stop();
      await second?.stop();
    }
  },
);

test(
  'a site that stays connected but stops sending heartbeats is dropped from the site list; the others stay',
  { timeout: 30_000 },
  async () => {
    const k = await kits('heartbeat');
    const loaded = loadKit(k.server!, 'server');
    // a short timeout for the test (the kit's config is signed, so it is changed in memory only)
    const kit: Kit<ServerConfig> = { ...loaded, config: { ...loaded.config, heartbeatTimeoutSeconds: 3 } };
    const srvLog = capture();
    const server = new FederationServer({
      kit,
      workspace: join(tmp, 'heartbeat', 'server-ws'),
      host: '127.0.0.1',
      port: 0,
      log: srvLog.log,
    });
    const port = await server.start();
    const client = new FederationSite({
      kit: loadKit(k['site-1']!, 'client'),
      workspace: join(tmp, 'heartbeat', 'site-1'),
      host: '127.0.0.1',
      port,
    });
    const running = client.run();
    // site-2 says hello over a real session, then stays silent (the gRPC connection and its keepalives go on)
    const s2 = loadKit(k['site-2']!, 'client');
    const raw = new GrpcClient({
      host: '127.0.0.1',
      port,
      serverName: 'localhost',
      caPem: s2.caPem,
      certPem: s2.certPem,
      keyPem: s2.keyPem,
    });
    const silent = new Channel(raw.connect({ 'x-flotilla-purpose': 'session' }));
    try {
      await silent.send({ type: 'hello', site: 'site-2', protocol: 1 });
      const received: string[] = [];
      const reading = (async () => {
        for await (const env of silent.messages()) received.push((env.msg as { type: string }).type);
      })();
      await until('both sites to connect', () => server.siteList().length === 2);
      // the server lists the site as it sends the welcome: under load the welcome may still be on its way
      await until('the welcome', () => received.length > 0);
      assert.deepEqual(received, ['welcome']);
      const t0 = Date.now();
      await until('the silent site to be dropped', () => server.siteList().length === 1, 8_000);
      assert.ok(Date.now() - t0 >= 1500, 'dropped by the timeout, not at once');
      assert.deepEqual(
        server.siteList().map((s) => s.site),
        ['site-1'],
      );
      assert.ok(srvLog.lines.some((l) => l.includes('no heartbeat for 3000 ms') && l.includes('site-2')));
      await reading; // the server closed the silent site's session
      // site-1, which heartbeats, outlived the same window and is still there a while later
      await new Promise((r) => setTimeout(r, 1500));
      assert.deepEqual(
        server.siteList().map((s) => s.site),
        ['site-1'],
      );
    } finally {
      silent.close('test over');
      raw.close();
      client.stop('test over');
      await running;
      await server.stop();
    }
  },
);
