// `--log-level` sets the level of the log.jsonl files: `simulate` (server and sites, worker threads
// included) and `server start`; an unknown level is refused naming the flag and the levels.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { federationKits } from '../../helpers/fault.ts';
import { repo, tinyJob, until } from '../../helpers/federation.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-loglevel-'));
const started: ChildProcess[] = [];
after(() => {
  for (const p of started) if (p.exitCode === null) p.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
});

const CLI = ['--conditions=flotilla-source', '--import', 'tsx', join(repo, 'src/cli/main.ts')];
const env = { ...process.env, FLOTILLA_LOG_LEVEL: '' };
const levels = (file: string): number[] =>
  readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => (JSON.parse(l) as { level: number }).level);

test('simulate --log-level warn keeps info lines out of every log.jsonl (info is the default: "round done")', () => {
  const job = tinyJob(join(tmp, 'job'), { rounds: 1 });
  const ws = join(tmp, 'sim');
  const r = spawnSync(process.execPath, [...CLI, 'simulate', job, '-n', '2', '-t', '1', '-w', ws, '--log-level', 'warn'], {
    cwd: repo,
    encoding: 'utf8',
    env,
  });
  assert.equal(r.status, 0, r.stderr);
  const logs = [
    join(ws, 'server', 'log.jsonl'),
    ...readdirSync(ws)
      .filter((d) => d.startsWith('site-'))
      .map((d) => join(ws, d, 'log.jsonl')),
  ];
  assert.ok(existsSync(logs[0]!));
  for (const f of logs.filter(existsSync))
    assert.deepEqual(
      levels(f).filter((l) => l < 40),
      [],
      `${f} has lines below warn`,
    );
});

test('server start --log-level warn writes no info line (with --data-port none: payloads over gRPC); an unknown level is refused naming the flag', async () => {
  const kits = await federationKits(join(tmp, 'kits'), 'loglevel', 1);
  const bad = spawnSync(process.execPath, [...CLI, 'server', 'start', kits.server!, '--log-level', 'loud'], {
    cwd: repo,
    encoding: 'utf8',
    env,
  });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /--log-level must be one of fatal, error, warn, info, debug, trace, silent, got "loud"/);
  // at info (the default) the server's first line is its "listening" line (level 30)
  for (const level of ['warn']) {
    const ws = join(tmp, `server-${level}`);
    const p = spawn(process.execPath, [...CLI, 'server', 'start', kits.server!, '-w', ws, '--log-level', level, '--data-port', 'none'], {
      cwd: repo,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    started.push(p);
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.stderr.on('data', (b: Buffer) => (out += b.toString()));
    await until(`server (${level}) listening`, () => /listening on port|rror/.test(out), 30_000);
    assert.match(out, /listening on port \d+, job payloads over gRPC/);
    p.kill('SIGTERM');
    await new Promise((r) => p.once('exit', r));
    const got = levels(join(ws, 'log.jsonl'));
    assert.deepEqual(
      got.filter((l) => l < 40),
      [],
    );
  }
});
