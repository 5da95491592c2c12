// One server per workspace and one process per site kit, with real processes: a second
// `flotilla server start` on a workspace in use is refused naming the holder, a lock left by a
// killed server is taken over; a second site process with the same kit is refused by the server
// while the first keeps its session.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { parseProject } from '../../../src/provision/project.ts';
import { provision } from '../../../src/provision/provision.ts';
import { freePort, repo } from '../../helpers/federation.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-hardening-locks-'));
const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
});

interface Proc {
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

function cli(args: string[]): Proc {
  const child = spawn(process.execPath, ['--conditions=flotilla-source', '--import', 'tsx', join(repo, 'src/cli/main.ts'), ...args], {
    cwd: repo,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let text = '';
  child.stdout.on('data', (b: Buffer) => (text += b.toString()));
  child.stderr.on('data', (b: Buffer) => (text += b.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, out: () => text, exited };
}

async function waitFor(what: string, ok: () => boolean, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function kits(port: number): Promise<Record<string, string>> {
  const project = parseProject({
    name: 'locks',
    participants: [
      { type: 'server', name: 'server', org: 'hub', host: 'localhost', port, dataPort: null },
      { type: 'client', name: 'site-1', org: 'a' },
      { type: 'client', name: 'site-2', org: 'b' },
      { type: 'admin', name: 'boss@hub.org', org: 'hub', role: 'project_admin' },
    ],
  });
  return (await provision(project, { outDir: join(tmp, 'kits') })).kits;
}

test(
  'a second server on a locked workspace is refused naming the holder; the lock of a killed server is taken over; a second site process with the same kit is refused',
  { timeout: 120_000 },
  async () => {
    const port = await freePort();
    const k = await kits(port);
    const first = cli(['server', 'start', k.server!]);
    await waitFor('the first server', () => /listening on port/.test(first.out()));

    // the same workspace: refused before it opens the job store or binds a port
    const second = cli(['server', 'start', k.server!, '--port', String(await freePort())]);
    assert.notEqual(await second.exited, 0);
    assert.match(second.out(), new RegExp(`server workspace .* is in use by process ${first.child.pid} \\(`));
    assert.match(second.out(), /stop it first, or use another folder/);

    // one site process connects; a second one with the same kit (its own workspace) is refused by the server
    const site1 = cli(['client', 'start', k['site-1']!, '-w', join(tmp, 'site-1a')]);
    await waitFor('site-1 to connect', () => /connected/.test(site1.out()));
    const admin = new AdminClient(k['boss@hub.org']!, { host: '127.0.0.1', port });
    try {
      const before = await admin.call('sites', {});
      assert.deepEqual(
        before.map((s) => s.site),
        ['site-1'],
      );
      const twin = cli(['client', 'start', k['site-1']!, '-w', join(tmp, 'site-1b')]);
      const serverLog = join(k.server!, 'workspace', 'log.jsonl');
      await waitFor('the server to refuse the twin', () => readFileSync(serverLog, 'utf8').includes('is already connected from'));
      // give the twin a few retries: the first process's session must survive all of them
      await new Promise((r) => setTimeout(r, 2500));
      const twinLog = readFileSync(join(tmp, 'site-1b', 'log.jsonl'), 'utf8');
      assert.match(twinLog, /server refused the session: site-1 is already connected from 127\.0\.0\.1:\d+ since /);
      assert.ok(!readFileSync(serverLog, 'utf8').includes('replaced by a new session'), 'the first session was never replaced');
      const now = await admin.call('sites', {});
      assert.equal(now.length, 1);
      assert.equal(now[0]!.connectedAt, before[0]!.connectedAt, 'site-1 kept its first session');
      twin.child.kill('SIGKILL');
      await twin.exited;
    } finally {
      admin.close();
    }

    // a server killed without a chance to clean up leaves its lock; the next start takes it over
    first.child.kill('SIGKILL');
    await first.exited;
    const lockFile = join(k.server!, 'workspace', 'server.lock');
    assert.ok(existsSync(lockFile), 'the killed server left its lock file');
    const third = cli(['server', 'start', k.server!]);
    await waitFor('the third server', () => /listening on port/.test(third.out()) || third.child.exitCode !== null);
    assert.match(third.out(), /listening on port/);
    assert.match(readFileSync(lockFile, 'utf8'), new RegExp(`"pid":${third.child.pid},`));
    assert.match(
      readFileSync(join(k.server!, 'workspace', 'log.jsonl'), 'utf8'),
      new RegExp(`took over the workspace lock of process ${first.child.pid}, which is no longer running`),
    );
    third.child.kill('SIGTERM');
    await third.exited;
    site1.child.kill('SIGKILL');
    // a server that stops cleanly releases its lock
    assert.ok(!existsSync(lockFile), 'a clean stop removes the lock file');
  },
);
