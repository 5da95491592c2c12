// A site's session survives a dropped connection: server and client in this process, the
// connection between them through a TCP proxy that cuts it. The client redials with the same
// channel id, the server hands the session's channel the new call, and the session goes on
// (no new hello, same connectedAt); a job deployed afterwards runs over the resumed session.
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import { FederationSite } from '../../../src/deploy/site.ts';
import { FederationServer } from '../../../src/deploy/server.ts';
import { loadKit } from '../../../src/provision/kit.ts';
import { FaultProxy } from '../../helpers/fault-proxy.ts';
import { capture, oneSiteKits, tinyJob, until } from '../../helpers/federation.ts';

const repo = fileURLToPath(new URL('../../..', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'flotilla-deploy-resume-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Both proxies of a federation: the gRPC port's and, with a data plane, the data port's. */
interface Proxies {
  cut(): void;
  readonly cuts: number;
}

async function federation(dataPlane = true): Promise<{
  server: FederationServer;
  proxy: Proxies;
  client: FederationSite;
  running: Promise<string>;
  admin: AdminClient;
  srvLog: ReturnType<typeof capture>;
  cliLog: ReturnType<typeof capture>;
  hellos: () => number;
  close: () => Promise<void>;
}> {
  const kits = await oneSiteKits(join(tmp, 'kits'), 'resume');
  const srvLog = capture();
  const server = new FederationServer({
    kit: loadKit(kits.server!, 'server'),
    workspace: join(tmp, 'server'),
    host: '127.0.0.1',
    port: 0,
    ...(!dataPlane && { dataPort: null }),
    log: srvLog.log,
  });
  const port = await server.start();
  const grpcProxy = new FaultProxy();
  await grpcProxy.start(port);
  const dataProxy = server.dataPort !== null ? new FaultProxy() : null;
  await dataProxy?.start(server.dataPort!);
  const proxy: Proxies = {
    cut: () => {
      grpcProxy.cut();
      dataProxy?.cut();
    },
    get cuts() {
      return grpcProxy.cuts + (dataProxy?.cuts ?? 0);
    },
  };
  const cliLog = capture();
  let hellos = 0;
  const client = new FederationSite({
    kit: loadKit(kits['site-1']!, 'client'),
    workspace: join(tmp, 'site-1'),
    host: '127.0.0.1',
    port: grpcProxy.port,
    ...(dataProxy && { dataPort: dataProxy.port }),
    log: cliLog.log,
    onConnected: () => hellos++,
  });
  const running = client.run();
  const admin = new AdminClient(kits['boss@hub.org']!, { host: '127.0.0.1', port });
  const close = async (): Promise<void> => {
    admin.close();
    client.stop('test over');
    await running;
    await server.stop();
    await grpcProxy.close();
    await dataProxy?.close();
  };
  return { server, proxy, client, running, admin, srvLog, cliLog, hellos: () => hellos, close };
}

test('a session whose connection is cut resumes over a new call; a job deployed afterwards runs', async () => {
  const { server, proxy, admin, srvLog, cliLog, hellos, close } = await federation();
  try {
    await until('the site to connect', () => server.siteList().length === 1);
    const connectedAt = server.siteList()[0]!.connectedAt;

    proxy.cut();
    await until('the session to resume', () => cliLog.lines.some((l) => l.includes('session resumed')) && server.siteList().length === 1);
    assert.ok(
      cliLog.lines.some((l) => l.includes('session connection lost')),
      'the cut was seen',
    );
    assert.equal(hellos(), 1, 'no new session: the old one resumed');
    assert.equal(server.siteList()[0]!.connectedAt, connectedAt);
    assert.ok(srvLog.lines.some((l) => l.includes('session resumed over a new connection')));

    // the resumed session carries the deploy message (and its job folder payload)
    const dir = join(tmp, 'tiny');
    tinyJob(dir, { minClients: 1, rounds: 1 });
    const id = await admin.submit(dir);
    let state = '';
    await until(
      'the job to finish',
      () => {
        state = server.store.get(id)?.state ?? '';
        return state === 'FINISHED' || state === 'FAILED';
      },
      30_000,
    );
    assert.equal(state, 'FINISHED', JSON.stringify(server.store.get(id)));
    assert.equal(hellos(), 1);
  } finally {
    await close();
  }
});

for (const dataPlane of [true, false]) {
  test(`a job whose connection is cut mid-transfer resumes (${dataPlane ? 'data plane' : 'gRPC'}): every round completes and the global model is exact`, async () => {
    const { server, proxy, admin, close } = await federation(dataPlane);
    try {
      assert.equal(server.dataPort !== null, dataPlane);
      await until('the site to connect', () => server.siteList().length === 1);
      // a 16 MiB model and a trainer that takes a moment, so cuts land in transfers and between them
      const dir = join(tmp, `big-${dataPlane}`);
      cpSync(join(repo, 'test/fixtures/jobs/tiny'), dir, { recursive: true });
      writeFileSync(join(dir, 'job.yaml'), readFileSync(join(dir, 'job.yaml'), 'utf8').replace('minClients: 2', 'minClients: 1'));
      writeFileSync(
        join(dir, 'trainer.ts'),
        readFileSync(join(dir, 'trainer.ts'), 'utf8')
          .replaceAll('../../../../src/', `${repo}src/`)
          .replace('const w = m.params', 'await new Promise((r) => setTimeout(r, 150));\n      const w = m.params')
          .replace('f32([4], [0, 0, 0, 0])', 'f32([1 << 22], new Float32Array(1 << 22))'),
      );
      const id = await admin.submit(dir);
      const jobLog = join(tmp, 'site-1', 'jobs', id, 'site-1', 'log.jsonl');
      const siteLog = (): string => {
        try {
          return readFileSync(jobLog, 'utf8');
        } catch {
          return '';
        }
      };
      let state = '';
      const finished = (): boolean => {
        state = server.store.get(id)?.state ?? '';
        return state === 'FINISHED' || state === 'FAILED';
      };
      await until('the job to start on the site', () => siteLog().includes('registered') || finished(), 30_000);
      // cut the connections several times while the rounds run
      for (let i = 0; i < 3 && !finished(); i++) {
        await new Promise((r) => setTimeout(r, 120));
        proxy.cut();
      }
      await until('the job to finish', finished, 60_000);
      assert.equal(state, 'FINISHED', JSON.stringify(server.store.get(id)));
      assert.ok(proxy.cuts >= 1);
      assert.match(siteLog(), /job connection resumed/, 'the job channel resumed instead of starting over');
      // 3 rounds of w += 0.5 (1 − w) from 0: 0.875 everywhere
      const model = await readSafetensors(join(tmp, 'server', 'jobs', id, 'workspace', 'server', 'global_model.safetensors'));
      const w = model.tensors.get('w')!.data as Float32Array;
      assert.equal(w.length, 1 << 22);
      assert.ok(
        w.every((x) => x === 0.875),
        `global model: ${w.slice(0, 4).join(', ')} …`,
      );
    } finally {
      await close();
    }
  });
}
