// scripts/soak.ts kept from rotting: a 5-round soak of 2 sites prints one valid JSON object and
// leaves no process behind; interrupted mid-job (Ctrl-C), it stops every POC process too.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { repo, until } from '../../helpers/federation.ts';
import { killPoc, pocPids } from '../../helpers/poc.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-soak-test-'));
after(() => {
  for (const w of ['short', 'int']) killPoc(join(tmp, w, 'poc'));
  rmSync(tmp, { recursive: true, force: true });
});

/** Whether `pid` still runs (a zombie, dead but not yet reaped, has no command line). */
const alive = (pid: number): boolean => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').length > 0;
  } catch {
    return false;
  }
};

function soak(...args: string[]): {
  done: Promise<{ code: number | null; stdout: string; stderr: string }>;
  stderr: () => string;
  kill: (s: NodeJS.Signals) => void;
} {
  const child = spawn(process.execPath, ['--conditions=flotilla-source', '--import', 'tsx', join(repo, 'scripts/soak.ts'), ...args], {
    cwd: repo,
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((res) =>
    child.on('close', (code) => res({ code, stdout, stderr })),
  );
  return { done, stderr: () => stderr, kill: (s) => child.kill(s) };
}

test('a 5-round soak of 2 sites prints one JSON object with every process sampled, and stops its POC', { timeout: 120_000 }, async () => {
  const ws = join(tmp, 'short');
  const r = await soak('--rounds', '5', '--sites', '2', '--interval', '0.3', '--warmup', '0', '--floats', '64', '--workspace', ws).done;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /^\[\s+0\.\d s\] workspace /, 'progress from the first second');
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 1, 'one line on stdout');
  const out = JSON.parse(lines[0]!) as {
    rounds: number;
    sites: number;
    commit: string | null;
    processes: Record<
      string,
      { pid: number; samples: number; rssMB: { max: number } | null; fds: { min: number } | null; activeHandles: { max: number } | null }
    >;
    verdict: { flat: boolean | null; thresholds: object };
    machine: { cpus: number };
  };
  assert.equal(out.rounds, 5);
  assert.equal(out.sites, 2);
  assert.deepEqual(
    Object.keys(out.processes)
      .filter((n) => !n.includes('/'))
      .sort(),
    ['server', 'site-1', 'site-2'],
  );
  assert.ok(
    Object.keys(out.processes).every((n) => !n.includes('/') || n.endsWith('/esbuild')),
    `besides the server and the sites, only tsx's compiler processes: ${Object.keys(out.processes).join(', ')}`,
  );
  for (const [name, p] of Object.entries(out.processes).filter(([n]) => !n.includes('/'))) {
    assert.ok(p.samples >= 1, `${name} sampled`);
    assert.ok(p.rssMB!.max > 10 && p.fds!.min >= 3, `${name}: RSS and descriptors read from /proc`);
    assert.ok(p.activeHandles!.max >= 1, `${name}: its own report (handles, timers) read`);
    assert.ok(!alive(p.pid), `${name} (pid ${p.pid}) stopped`);
  }
  assert.ok('flat' in out.verdict && 'rssMB' in out.verdict.thresholds);
  assert.ok(out.machine.cpus >= 1);
  assert.ok(!existsSync(join(ws, 'poc', 'pids.json')), 'poc stopped');
});

test('Ctrl-C mid-job stops every POC process', { timeout: 120_000 }, async () => {
  const ws = join(tmp, 'int');
  const s = soak('--rounds', '100000', '--sites', '2', '--interval', '0.3', '--floats', '64', '--workspace', ws);
  await until('the job to run', () => /RUNNING round [1-9]/.test(s.stderr()), 90_000);
  const pids = Object.values(pocPids(join(ws, 'poc'))).map((p) => p.pid);
  assert.equal(pids.length, 3);
  s.kill('SIGINT');
  const r = await s.done;
  assert.equal(r.code, 130, r.stderr);
  assert.match(r.stderr, /SIGINT: stopping the POC/);
  assert.equal(r.stdout, '', 'no result for an interrupted run');
  assert.deepEqual(pids.filter(alive), [], 'no POC process outlives the script');
  assert.ok(existsSync(join(ws, 'poc', 'logs')), 'a --workspace given is kept');
  assert.ok(readFileSync(join(ws, 'poc', 'logs', 'server.log'), 'utf8').length > 0);
});
