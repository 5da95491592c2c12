// POC mode: prepare, start (detached server + clients), see the sites, stop.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AdminClient } from '../src/admin/client.ts';
import { freePortPair } from './helpers/federation.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const ws = join(mkdtempSync(join(tmpdir(), 'flotilla-poc-')), 'poc');
const run = (...args: string[]): string => execFileSync(process.execPath, ['--import', 'tsx', join(repo, 'src/cli/main.ts'), ...args], { cwd: repo, encoding: 'utf8' });

after(() => {
  // whatever happened, no POC process outlives the test
  const pids = join(ws, 'pids.json');
  if (existsSync(pids)) for (const pid of Object.values(JSON.parse(readFileSync(pids, 'utf8')) as Record<string, number>)) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  rmSync(join(ws, '..'), { recursive: true, force: true });
});

test('poc prepare / start / stop runs a local federation', async () => {
  const port = await freePortPair(); // the server listens on port and port + 1 (data plane)
  assert.match(run('poc', 'prepare', '--clients', '2', '-w', ws, '-p', String(port)), /POC prepared/);
  assert.match(run('poc', 'start', '-w', ws), /Started server, site-1, site-2/);
  const pids = JSON.parse(readFileSync(join(ws, 'pids.json'), 'utf8')) as Record<string, number>;
  assert.deepEqual(Object.keys(pids), ['server', 'site-1', 'site-2']);
  const admin = new AdminClient(join(ws, 'poc', 'prod_01', 'admin@poc.example'));
  try {
    const deadline = Date.now() + 30_000;
    let sites: string[] = [];
    while (Date.now() < deadline) {
      sites = await admin.call('sites').then((r) => r.map((s) => s.site), () => []);
      if (sites.length === 2) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.deepEqual(sites, ['site-1', 'site-2']);
  } finally {
    admin.close();
  }
  assert.match(run('poc', 'stop', '-w', ws), /Stopped server, site-1, site-2/);
  assert.ok(!existsSync(join(ws, 'pids.json')));
  const alive = (pid: number): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const deadline = Date.now() + 10_000;
  while (Object.values(pids).some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(Object.values(pids).filter(alive), [], 'every POC process is gone');
});
