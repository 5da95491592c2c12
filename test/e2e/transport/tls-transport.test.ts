// The data plane (src/transport/tls): its server admits only sites of the project's CA that say
// what they connect for; a refusal reaches the dialler with its reason (the frame codec it speaks:
// test/unit/transport/frame-codec.test.ts).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { FederationSite } from '../../../src/deploy/site.ts';
import { FederationServer } from '../../../src/deploy/server.ts';
import { createCA, issueCert } from '../../../src/provision/ca.ts';
import { loadKit } from '../../../src/provision/kit.ts';
import type { Frame } from '../../../src/transport/link.ts';
import type { ConnectInfo, PeerIdentity } from '../../../src/transport/peer.ts';
import { DataPlaneDialError, dialTls } from '../../../src/transport/tls/dial.ts';
import { FrameDecoder, encodeFrame } from '../../../src/transport/codec.ts';
import type { TlsLink } from '../../../src/transport/tls/link.ts';
import { TlsDataServer } from '../../../src/transport/tls/server.ts';
import { capture, freePort, oneSiteKits, tinyJob, until } from '../../helpers/federation.ts';
import { nextValue } from '../../helpers/next.ts';

describe('data plane server: who may connect', () => {
  let server: TlsDataServer;
  let port = 0;
  let pems: {
    ca: string;
    site: { certPem: string; keyPem: string };
    admin: { certPem: string; keyPem: string };
    stranger: { ca: string; certPem: string; keyPem: string };
  };
  const accepted: { link: TlsLink; peer: PeerIdentity; info: ConnectInfo }[] = [];

  before(async () => {
    const ca = await createCA('tls-transport-test', 1);
    const other = await createCA('someone-else', 1);
    const notAfter = new Date(Date.now() + 86_400_000);
    const srv = await issueCert(ca, { subject: { cn: 'server', org: 'test', ou: 'server' }, hosts: ['localhost', '127.0.0.1'], notAfter });
    const site = await issueCert(ca, { subject: { cn: 'site-1', org: 'a', ou: 'client' }, notAfter });
    const admin = await issueCert(ca, { subject: { cn: 'boss@a.org', org: 'a', ou: 'project_admin' }, notAfter });
    const stranger = await issueCert(other, { subject: { cn: 'site-1', org: 'a', ou: 'client' }, notAfter });
    pems = { ca: ca.certPem, site, admin, stranger: { ca: other.certPem, ...stranger } };
    server = new TlsDataServer({
      host: '127.0.0.1',
      port: 0,
      caPem: ca.certPem,
      certPem: srv.certPem,
      keyPem: srv.keyPem,
      helloTimeoutMs: 500,
      onConnect: (link, peer, info) => {
        if (info.jobId === 'no-such-job') return 'no running job no-such-job';
        accepted.push({ link, peer, info });
        return null;
      },
    });
    port = await server.start();
  });
  after(() => server.close(200));

  const dialAs = (who: { certPem: string; keyPem: string }, info: ConnectInfo) =>
    dialTls({ host: '127.0.0.1', port, serverName: 'localhost', caPem: pems.ca, ...who, timeoutMs: 5000 }, info);

  test('a site of the project connects; identity comes from its certificate, the purpose from its hello; frames flow both ways', async () => {
    const link = await dialAs(pems.site, { purpose: 'job', jobId: 'job-1', channelId: 'abcdefgh1234' });
    const mine = accepted.at(-1)!;
    assert.deepEqual(mine.peer, { name: 'site-1', org: 'a', kind: 'client' });
    const { remote, ...info } = mine.info;
    assert.deepEqual(info, { purpose: 'job', jobId: 'job-1', channelId: 'abcdefgh1234' });
    assert.match(remote ?? '', /^127\.0\.0\.1:\d+$/, 'the connection names where it comes from');
    const big = new Uint8Array(3 << 20).map((_, i) => (i * 7) & 0xff);
    await link.send({ type: 'control', json: '{"hi":1}' });
    await link.send({ type: 'data', stream: 1, bytes: big, last: true, offset: 0, hash: 'ffffffffffffffff' });
    const it = mine.link.frames()[Symbol.asyncIterator]();
    assert.deepEqual(await nextValue(it), { type: 'control', json: '{"hi":1}' });
    const d = (await nextValue(it)) as Extract<Frame, { type: 'data' }>;
    assert.ok(Buffer.from(d.bytes).equals(Buffer.from(big)));
    assert.equal(d.hash, 'ffffffffffffffff');
    await mine.link.send({ type: 'ack', stream: 1, bytes: big.byteLength });
    assert.deepEqual(await nextValue(link.frames()), { type: 'ack', stream: 1, bytes: big.byteLength });
    link.close('done');
    assert.match(await mine.link.closed, /closed/);
  });

  test('the server refusing a connection (no such job) closes the dialler’s link with the reason', async () => {
    const link = await dialAs(pems.site, { purpose: 'job', jobId: 'no-such-job', channelId: null });
    assert.match(await link.closed, /refused by server: no running job no-such-job/);
  });

  test('an admin certificate is refused: the data plane is for sites', async () => {
    await assert.rejects(
      dialAs(pems.admin, { purpose: 'job', jobId: 'job-1', channelId: null }),
      /refused: certificate of boss@a\.org is a project_admin certificate/,
    );
  });

  test('a certificate from another CA fails the TLS handshake', async () => {
    await assert.rejects(
      dialAs({ certPem: pems.stranger.certPem, keyPem: pems.stranger.keyPem }, { purpose: 'job', jobId: 'job-1', channelId: null }),
      /data plane 127\.0\.0\.1:\d+: /,
    );
  });

  test('a malformed hello is refused naming the field; silence is refused after the hello timeout', async () => {
    const raw = (send: (s: ReturnType<typeof connect>) => void): Promise<string> =>
      new Promise((resolve, reject) => {
        const s = connect({
          host: '127.0.0.1',
          port,
          servername: 'localhost',
          ca: pems.ca,
          cert: pems.site.certPem,
          key: pems.site.keyPem,
        });
        const dec = new FrameDecoder();
        s.on('secureConnect', () => send(s));
        s.on('data', (b: Buffer) => {
          const r = dec.push(b);
          if (typeof r === 'string') return reject(new Error(r));
          const f = r[0];
          if (f?.type === 'refuse') resolve(f.reason);
        });
        s.on('error', reject);
      });
    const bad = await raw((s) => {
      for (const b of encodeFrame({ type: 'hello', json: JSON.stringify({ protocol: 1, purpose: 'job', jobId: 'j', channelId: 'short' }) }))
        s.write(b);
    });
    assert.match(bad, /malformed hello: channelId: must be 8 to 64 letters/);
    const wrongProtocol = await raw((s) => {
      for (const b of encodeFrame({ type: 'hello', json: JSON.stringify({ protocol: 99, purpose: 'job', jobId: 'j', channelId: null }) }))
        s.write(b);
    });
    assert.match(wrongProtocol, /protocol 99, server speaks 1/);
    const silent = await raw(() => undefined);
    assert.match(silent, /no hello within 500 ms/);
  });
});

test('a server whose data port is taken fails to start, naming the port and the setting, and leaves nothing listening', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'flotilla-dataport-'));
  const blocker = createServer();
  const taken = await new Promise<number>((r) => blocker.listen(0, '127.0.0.1', () => r((blocker.address() as { port: number }).port)));
  try {
    const kits = await oneSiteKits(join(tmp, 'kits'), 'p');
    const server = new FederationServer({
      kit: loadKit(kits.server!, 'server'),
      workspace: join(tmp, 'ws'),
      host: '127.0.0.1',
      port: 0,
      dataPort: taken,
    });
    await assert.rejects(server.start(), new RegExp(`data plane cannot listen on 127\\.0\\.0\\.1:${taken}: .*EADDRINUSE.*--data-port`));
  } finally {
    blocker.close();
    rmSync(tmp, { recursive: true, force: true });
  }
});

test('a site that cannot reach the data port runs its jobs over the gRPC port and says which port to open; a refusal does not fall back', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'flotilla-fallback-'));
  const kits = await oneSiteKits(join(tmp, 'kits'), 'p');
  const server = new FederationServer({ kit: loadKit(kits.server!, 'server'), workspace: join(tmp, 'server'), host: '127.0.0.1', port: 0 });
  const port = await server.start();
  // a port nothing listens on: what a site behind a firewall that passes only the gRPC port sees
  const closed = await freePort();
  const cliLog = capture();
  const client = new FederationSite({
    kit: loadKit(kits['site-1']!, 'client'),
    workspace: join(tmp, 'site-1'),
    host: '127.0.0.1',
    port,
    dataPort: closed,
    log: cliLog.log,
  });
  const running = client.run();
  const admin = new AdminClient(kits['boss@hub.org']!, { host: '127.0.0.1', port });
  try {
    assert.notEqual(server.dataPort, null, 'the server offers a data plane');
    await until('the site to connect', () => server.siteList().length === 1);
    const id = await admin.submit(tinyJob(join(tmp, 'tiny'), { minClients: 1, rounds: 2 }));
    let state = '';
    await until(
      'the job to finish',
      () => ((state = server.store.get(id)?.state ?? ''), state === 'FINISHED' || state === 'FAILED'),
      30_000,
    );
    assert.equal(state, 'FINISHED', JSON.stringify(server.store.get(id)));
    const warning = cliLog.lines.find((l) => l.includes('is unreachable from this site'));
    assert.ok(warning, 'the site says its job went over gRPC');
    assert.match(warning, new RegExp(`open TCP port ${closed} to this site`));

    // the port answers but refuses (here: a server of another CA): a real error, no silent fallback
    const foreign = await createCA('other', 1);
    const leaf = await issueCert(foreign, {
      subject: { cn: 'server', org: 'x', ou: 'server' },
      hosts: ['localhost', '127.0.0.1'],
      notAfter: new Date(Date.now() + 3_600_000),
    });
    const impostor = new TlsDataServer({
      host: '127.0.0.1',
      port: 0,
      caPem: foreign.certPem,
      certPem: leaf.certPem,
      keyPem: leaf.keyPem,
      onConnect: () => null,
    });
    const impostorPort = await impostor.start();
    try {
      const kit = loadKit(kits['site-1']!, 'client');
      const err = await dialTls(
        {
          host: '127.0.0.1',
          port: impostorPort,
          serverName: kit.config.serverName,
          caPem: kit.caPem,
          certPem: kit.certPem,
          keyPem: kit.keyPem,
          timeoutMs: 5_000,
        },
        { purpose: 'job', jobId: 'j', channelId: 'c' },
      ).then(
        () => null,
        (e: unknown) => e,
      );
      assert.ok(err instanceof DataPlaneDialError, String(err));
      assert.equal(err.reachable, true, 'a port that answered is reachable: the caller must not fall back');
      const none = await dialTls(
        { host: '127.0.0.1', port: closed, serverName: kit.config.serverName, caPem: kit.caPem, certPem: kit.certPem, keyPem: kit.keyPem },
        { purpose: 'job', jobId: 'j', channelId: 'c' },
      ).catch((e: unknown) => e);
      assert.ok(none instanceof DataPlaneDialError && !none.reachable, String(none));
    } finally {
      await impostor.close(100);
    }
  } finally {
    admin.close();
    client.stop('test over');
    await running;
    await server.stop();
    rmSync(tmp, { recursive: true, force: true });
  }
});
