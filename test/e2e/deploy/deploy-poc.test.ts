// POC mode: prepare, start (detached server + clients), see the sites, stop.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { freePortPair } from '../../helpers/federation.ts';
import { killPoc } from '../../helpers/poc.ts';

const repo = fileURLToPath(new URL('../../..', import.meta.url));
const ws = join(mkdtempSync(join(tmpdir(), 'flotilla-poc-')), 'poc');
const run = (...args: string[]): string =>
  execFileSync(process.execPath, ['--import', 'tsx', join(repo, 'src/cli/main.ts'), ...args], { cwd: repo, encoding: 'utf8' });

after(() => {
  // whatever happened, no POC process outlives the test
  killPoc(ws);
  rmSync(join(ws, '..'), { recursive: true, force: true });
});

const cli = (...args: string[]): { status: number | null; out: string } => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(repo, 'src/cli/main.ts'), ...args], { cwd: repo, encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
};

test('poc prepare / start / stop runs a local federation', async () => {
  const port = await freePortPair(); // the server listens on port and port + 1 (data plane)
  assert.match(run('poc', 'prepare', '--clients', '2', '-w', ws, '-p', String(port)), /POC prepared/);
  assert.match(run('poc', 'start', '-w', ws), /Started server, site-1, site-2/);
  const pids = Object.fromEntries(
    Object.entries(JSON.parse(readFileSync(join(ws, 'pids.json'), 'utf8')) as Record<string, { pid: number }>).map(([k, v]) => [k, v.pid]),
  );
  assert.deepEqual(Object.keys(pids), ['server', 'site-1', 'site-2']);
  const admin = new AdminClient(join(ws, 'poc', 'prod_01', 'admin@poc.example'));
  try {
    const deadline = Date.now() + 30_000;
    let sites: string[] = [];
    while (Date.now() < deadline) {
      sites = await admin.call('sites').then(
        (r) => r.map((s) => s.site),
        () => [],
      );
      if (sites.length === 2) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.deepEqual(sites, ['site-1', 'site-2']);
  } finally {
    admin.close();
  }
  assert.match(run('poc', 'status', '-w', ws), /^server\s+pid \d+\s+running\nsite-1\s+pid \d+\s+running\nsite-2\s+pid \d+\s+running\n$/);
  assert.match(run('poc', 'stop', '-w', ws), /Stopped server, site-1, site-2/);
  const stopped = cli('poc', 'status', '-w', ws);
  assert.notEqual(stopped.status, 0);
  assert.match(stopped.out, /no POC is running/);
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

test('poc prepare refuses a non-empty folder that holds no POC, and re-provisions its own only with --force', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'flotilla-pocprep-'));
  try {
    writeFileSync(join(dir, 'thesis.tex'), 'years of work');
    const r = cli('poc', 'prepare', '-w', dir);
    assert.notEqual(r.status, 0);
    assert.match(r.out, /is not empty and holds no POC/);
    assert.equal(readFileSync(join(dir, 'thesis.tex'), 'utf8'), 'years of work', 'nothing was deleted');

    const poc = join(dir, 'poc');
    assert.equal(cli('poc', 'prepare', '-w', poc, '-p', '18002').status, 0);
    const layout = JSON.parse(readFileSync(join(poc, 'poc.json'), 'utf8')) as { server: string };
    const fedServer = JSON.parse(readFileSync(join(layout.server, 'startup', 'fed_server.json'), 'utf8')) as { listen: { host: string } };
    assert.equal(fedServer.listen.host, '127.0.0.1', 'a POC server listens on loopback only (bind in its project.yml)');
    mkdirSync(join(layout.server, 'workspace'), { recursive: true });
    writeFileSync(join(layout.server, 'workspace', 'jobs.sqlite'), 'the job store');
    const again = cli('poc', 'prepare', '-w', poc);
    assert.notEqual(again.status, 0);
    assert.match(again.out, /already holds a POC: re-provision it with --force --keep-jobs/);
    assert.match(cli('poc', 'prepare', '-w', poc, '--force').out, /exactly one of --keep-jobs/);
    assert.equal(cli('poc', 'prepare', '-w', poc, '--force', '--keep-jobs').status, 0);
    const kept = JSON.parse(readFileSync(join(poc, 'poc.json'), 'utf8')) as { server: string };
    assert.ok(existsSync(join(kept.server, 'startup')), 're-provisioned');
    assert.equal(readFileSync(join(kept.server, 'workspace', 'jobs.sqlite'), 'utf8'), 'the job store', '--keep-jobs keeps the job store');
    assert.equal(cli('poc', 'prepare', '-w', poc, '--force', '--discard-jobs').status, 0);
    const fresh = JSON.parse(readFileSync(join(poc, 'poc.json'), 'utf8')) as { server: string };
    assert.ok(!existsSync(join(fresh.server, 'workspace', 'jobs.sqlite')), '--discard-jobs deletes it');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('poc stop leaves alone a process whose PID it did not start (PID reuse)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'flotilla-pocstop-'));
  const foreign = spawn('sleep', ['60'], { stdio: 'ignore' });
  try {
    await new Promise((r) => foreign.once('spawn', r));
    const pid = foreign.pid!;
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const startTime = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
    // what pids.json says after a crash: the recorded server's PID now names another process
    writeFileSync(
      join(dir, 'pids.json'),
      JSON.stringify({
        server: { pid, startTime: String(Number(startTime) - 1), cmdline: `${process.execPath} src/cli/main.ts server start kit` },
        'site-1': { pid, startTime, cmdline: `${process.execPath} src/cli/main.ts client start kit` },
      }),
    );
    const r = cli('poc', 'stop', '-w', dir);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /Stopped nothing/);
    assert.match(r.out, new RegExp(`Left server alone: PID ${pid} now belongs to another process \\(sleep 60\\)`));
    assert.match(r.out, new RegExp(`Left site-1 alone: PID ${pid} runs "sleep 60", not the recorded`));
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(foreign.exitCode, null, 'the foreign process is still running');
    assert.equal(foreign.signalCode, null);
    process.kill(pid, 0);
  } finally {
    foreign.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('poc start on a port another program holds fails at once, naming the port, and starts nothing', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'flotilla-pocport-'));
  const port = await freePortPair();
  const holder = createServer().listen(port, '127.0.0.1');
  await once(holder, 'listening');
  try {
    assert.equal(cli('poc', 'prepare', '--clients', '1', '-w', dir, '-p', String(port)).status, 0);
    const r = cli('poc', 'start', '-w', dir);
    assert.notEqual(r.status, 0, r.out);
    assert.match(r.out, new RegExp(`port ${port} on \\S+ is in use \\(EADDRINUSE\\).*poc prepare -p`));
    assert.ok(!existsSync(join(dir, 'pids.json')), 'nothing recorded as started');
  } finally {
    holder.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
