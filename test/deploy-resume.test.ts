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
import { pino } from 'pino';
import { AdminClient } from '../src/admin/client.ts';
import { FederationClient } from '../src/deploy/client.ts';
import { FederationServer } from '../src/deploy/server.ts';
import { loadKit } from '../src/provision/kit.ts';
import { parseProject } from '../src/provision/project.ts';
import { provision } from '../src/provision/provision.ts';
import type { Logger } from '../src/util/log.ts';
import { CuttableProxy } from './helpers/cuttable-proxy.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'flotilla-deploy-resume-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function capture(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: pino<never>({ level: 'info' }, { write: (s: string) => void lines.push(s) }), lines };
}

async function until(what: string, ok: () => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('a session whose connection is cut resumes over a new call; a job deployed afterwards runs', async () => {
  const project = parseProject({
    name: 'resume',
    participants: [
      { type: 'server', name: 'server', org: 'hub', host: 'localhost', port: 1 },
      { type: 'client', name: 'site-1', org: 'a' },
      { type: 'admin', name: 'boss@hub.org', org: 'hub', role: 'project_admin' },
    ],
  });
  const { kits } = await provision(project, { outDir: join(tmp, 'kits') });
  const srvLog = capture();
  const server = new FederationServer({ kit: loadKit(kits.server!, 'server'), workspace: join(tmp, 'server'), host: '127.0.0.1', port: 0, log: srvLog.log });
  const port = await server.start();
  const proxy = new CuttableProxy();
  await proxy.start(port);
  const cliLog = capture();
  let hellos = 0;
  const client = new FederationClient({ kit: loadKit(kits['site-1']!, 'client'), workspace: join(tmp, 'site-1'), host: '127.0.0.1', port: proxy.port, log: cliLog.log, onConnected: () => hellos++ });
  const running = client.run();
  const admin = new AdminClient(kits['boss@hub.org']!, { host: '127.0.0.1', port });
  try {
    await until('the site to connect', () => server.siteList().length === 1);
    const connectedAt = server.siteList()[0]!.connectedAt;

    proxy.cut();
    await until('the session to resume', () => cliLog.lines.some((l) => l.includes('session resumed')) && server.siteList().length === 1);
    assert.ok(cliLog.lines.some((l) => l.includes('session connection lost')), 'the cut was seen');
    assert.equal(hellos, 1, 'no new session: the old one resumed');
    assert.equal(server.siteList()[0]!.connectedAt, connectedAt);
    assert.ok(srvLog.lines.some((l) => l.includes('session resumed over a new connection')));

    // the resumed session carries the deploy message (and its job folder payload)
    const dir = join(tmp, 'tiny');
    cpSync(join(repo, 'test/fixtures/jobs/tiny'), dir, { recursive: true });
    writeFileSync(join(dir, 'job.yaml'), readFileSync(join(dir, 'job.yaml'), 'utf8').replace('minClients: 2', 'minClients: 1').replace('rounds: 3', 'rounds: 1'));
    writeFileSync(join(dir, 'trainer.ts'), readFileSync(join(dir, 'trainer.ts'), 'utf8').replaceAll('../../../../src/', `${repo}src/`));
    const id = await admin.submit(dir);
    let state = '';
    await until('the job to finish', () => {
      state = server.store.get(id)?.state ?? '';
      return state === 'FINISHED' || state === 'FAILED';
    }, 30_000);
    assert.equal(state, 'FINISHED', JSON.stringify(server.store.get(id)));
    assert.equal(hellos, 1);
  } finally {
    admin.close();
    client.stop('test over');
    await running;
    await server.stop();
    await proxy.close();
  }
});
