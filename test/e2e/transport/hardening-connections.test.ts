// Unauthenticated connections cannot starve the server, over real sockets: while a job runs on two
// sites, 400 idle TCP connections that never start a TLS handshake (250 on the gRPC port, whose
// limit is set to 200, and 150 on the data plane) are closed after the handshake timeout or refused
// at the limit, both logged, and the job finishes.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { type Socket, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { FederationServer } from '../../../src/deploy/server.ts';
import { FederationSite } from '../../../src/deploy/site.ts';
import { loadKit } from '../../../src/provision/kit.ts';
import { parseProject } from '../../../src/provision/project.ts';
import { provision } from '../../../src/provision/provision.ts';
import { capture, tinyJob, until } from '../../helpers/federation.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-hardening-connections-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** `n` TCP connections to `port` that send nothing; resolves once all are open (or refused). */
async function idle(port: number, n: number): Promise<{ sockets: Socket[]; closed: () => number }> {
  let closed = 0;
  const sockets = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<Socket>((resolve) => {
          const s = connect(port, '127.0.0.1');
          s.on('error', () => undefined);
          s.once('close', () => closed++);
          s.once('connect', () => resolve(s));
          s.once('close', () => resolve(s));
        }),
    ),
  );
  return { sockets, closed: () => closed };
}

test(
  'idle unauthenticated connections are closed after the handshake timeout or refused at the limit, logged, while a job runs to the end',
  { timeout: 120_000 },
  async (t) => {
    const project = parseProject({
      name: 'conns',
      participants: [
        { type: 'server', name: 'server', org: 'hub', host: 'localhost', port: 1 },
        { type: 'client', name: 'site-1', org: 'a' },
        { type: 'client', name: 'site-2', org: 'b' },
        { type: 'admin', name: 'boss@hub.org', org: 'hub', role: 'project_admin' },
      ],
    });
    const k = (await provision(project, { outDir: join(tmp, 'kits') })).kits;
    const serverLog = capture();
    const server = new FederationServer({
      kit: loadKit(k.server!, 'server'),
      workspace: join(tmp, 'server'),
      host: '127.0.0.1',
      port: 0,
      log: serverLog.log,
      connectionLimits: { handshakeTimeoutMs: 1500, maxConnections: 200 },
    });
    const port = await server.start();
    const dataPort = server.dataPort!;
    const sites = ['site-1', 'site-2'].map(
      (name) => new FederationSite({ kit: loadKit(k[name]!, 'client'), workspace: join(tmp, name), host: '127.0.0.1', port }),
    );
    const running = sites.map((s) => s.run());
    const admin = new AdminClient(k['boss@hub.org']!, { host: '127.0.0.1', port });
    const opened: Socket[] = [];
    try {
      await until('both sites', () => server.siteList().length === 2);
      const id = await admin.submit(tinyJob(join(tmp, 'job'), { minClients: 2, rounds: 6, sleepMs: 300 }));
      await until('the job to run', () => server.store.get(id)?.state === 'RUNNING', 30_000);
      await new Promise((r) => setTimeout(r, 500));
      const t0 = Date.now();
      const [grpcIdle, dataIdle] = await Promise.all([idle(port, 250), idle(dataPort, 150)]);
      opened.push(...grpcIdle.sockets, ...dataIdle.sockets);
      await until('the server to close every idle connection', () => grpcIdle.closed() === 250 && dataIdle.closed() === 150, 15_000);
      const closedAfterMs = Date.now() - t0;
      await until('the job to finish', () => ['FINISHED', 'FAILED'].includes(server.store.get(id)?.state ?? ''), 60_000);
      const rec = server.store.get(id)!;
      assert.equal(rec.state, 'FINISHED', rec.detail ?? '');
      const log = serverLog.lines.join('');
      assert.match(log, /gRPC port: \d+ connections refused at the limit of 200 open connections/);
      assert.match(log, /gRPC port: \d+ connections closed for not completing the TLS handshake within 1500 ms/);
      assert.match(log, /data plane: \d+ connections closed for not completing the TLS handshake within 1500 ms/);
      t.diagnostic(JSON.stringify({ idle: 400, closedAfterMs, job: rec.state }));
    } finally {
      for (const s of opened) s.destroy();
      admin.close();
      for (const s of sites) s.stop();
      await Promise.all(running);
      await server.stop();
    }
  },
);
