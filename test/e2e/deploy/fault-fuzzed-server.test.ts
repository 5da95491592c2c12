// A server under fuzzing keeps serving its sites: while a job runs on two real site processes
// (mutual TLS on loopback), a rogue client opens connection after connection to the server's gRPC
// port and its data-plane port and writes garbage into each: random bytes, TLS records with random
// bodies, an HTTP/2 preface followed by random frames. The job must finish with every round, and
// the server must still be listening and list both sites.
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { FederationServer } from '../../../src/deploy/server.ts';
import { loadKit } from '../../../src/provision/kit.ts';
import { type LogEvent, SiteProcesses, federationKits, jobEvents } from '../../helpers/fault.ts';
import { capture, tinyJob, until } from '../../helpers/federation.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-fault-fuzzed-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** One garbage connection: resolves when the server has closed it (or after 2 s, when it is dropped here). */
function garbage(port: number): Promise<void> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    const done = (): void => {
      clearTimeout(t);
      s.destroy();
      resolve();
    };
    const t = setTimeout(done, 2000);
    s.on('error', done);
    s.on('close', done);
    s.on('connect', () => {
      const kind = randomInt(3);
      const body = randomBytes(randomInt(1, 4096));
      if (kind === 0) s.write(body);
      else if (kind === 1) {
        // a TLS handshake record header (type 22, TLS 1.0 framing) with a random body
        const h = Buffer.from([0x16, 0x03, 0x01, 0, 0]);
        h.writeUInt16BE(body.byteLength, 3);
        s.write(Buffer.concat([h, body]));
      } else s.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), body]));
      if (randomInt(2) === 0) s.end();
    });
  });
}

test('a server fed garbage on both ports keeps serving a running job to its sites', { timeout: 90_000 }, async (t) => {
  const k = await federationKits(join(tmp, 'kits'), 'fuzzed', 2);
  const kit = loadKit(k.server!, 'server');
  const workspace = join(tmp, 'server-ws');
  const serverLog = capture();
  const server = new FederationServer({ kit, workspace, log: serverLog.log });
  await server.start();
  const sites = new SiteProcesses(k);
  for (const s of ['site-1', 'site-2']) sites.start(s, join(tmp, s));
  const admin = new AdminClient(k['boss@hub.org']!, { host: '127.0.0.1', port: kit.config.listen.port });
  let id = '';
  let stop = false;
  let sent = 0;
  const ports = [kit.config.listen.port, ...(server.dataPort !== null ? [server.dataPort] : [])];
  // four garbage connections at a time, until the job ends
  const rogue = Promise.all(
    Array.from({ length: 4 }, async () => {
      while (!stop) {
        await garbage(ports[randomInt(ports.length)]!);
        sent++;
      }
    }),
  );
  try {
    await until('two sites to connect', () => server.siteList().length === 2, 30_000);
    // the job starts under fire and lasts long enough for more (an idle machine ran 8 short rounds in 18 connections)
    await until('garbage flowing', () => sent >= 10, 30_000);
    const dir = tinyJob(join(tmp, 'job'), { minClients: 2, rounds: 8, sleepMs: 300 });
    id = await admin.submit(dir);
    await until('the job to end', () => ['FINISHED', 'FAILED', 'ABORTED'].includes(server.store.get(id)?.state ?? ''), 60_000);
    stop = true;
    await rogue;
    const st = await admin.call('status', { job: id });
    assert.equal(st.state, 'FINISHED', st.detail ?? undefined);
    const rounds = jobEvents(workspace, id).filter((e: LogEvent) => e.msg === 'round done');
    assert.equal(rounds.length, 8, 'every round done');
    for (const r of rounds) assert.deepEqual(r.sites, ['site-1', 'site-2']);
    assert.equal(server.siteList().length, 2, 'both sites still connected');
    assert.ok(sent >= 20, `only ${sent} garbage connections were made`);
    t.diagnostic(JSON.stringify({ garbageConnections: sent, ports: ports.length, rounds: rounds.length }));
  } catch (e) {
    console.error([...serverLog.lines, ...jobEvents(workspace, id).map((l) => JSON.stringify(l) + '\n')].join(''));
    for (const [s, out] of sites.output) console.error(`${s}:`, out.join(''));
    throw e;
  } finally {
    stop = true;
    await rogue;
    admin.close();
    await sites.stopAll();
    await server.stop();
  }
});
