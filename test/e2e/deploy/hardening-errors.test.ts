// Errors that name the cause: a NaN metric fails the site's task naming the metric (never
// "malformed message"), in TypeScript and in the Python package; a wrong type inside a union names
// the field; a damaged job store names the file and what to do.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { FederationServer } from '../../../src/deploy/server.ts';
import { loadKit } from '../../../src/provision/kit.ts';
import { readJobConfig } from '../../../src/runtime/job-config.ts';
import { simulate } from '../../../src/simulator/simulator.ts';
import { oneSiteKits, repo, tinyJob } from '../../helpers/federation.ts';

const PY = process.env.FLOTILLA_PYTHON ?? '/usr/bin/python3';
const tmp = mkdtempSync(join(tmpdir(), 'flotilla-hardening-errors-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('a NaN metric fails the task naming the metric, not as a malformed message, whether logged or in the result', async () => {
  const nanJob = (name: string, edit: (src: string) => string): string => {
    const dir = tinyJob(join(tmp, name), { rounds: 1 });
    const f = join(dir, 'trainer.ts');
    writeFileSync(f, edit(readFileSync(f, 'utf8')));
    return dir;
  };
  const inResult = nanJob('nan-result', (s) => s.replace('metrics: { loss,', 'metrics: { loss: NaN,'));
  await assert.rejects(simulate({ jobDir: inResult, clients: 2, threads: 0, workspace: join(tmp, 'ws-r') }), (e: Error) => {
    assert.match(e.message, /metrics that are not finite numbers \(\\?"loss\\?" is NaN\)/);
    assert.doesNotMatch(e.message, /malformed/);
    return true;
  });
  // flare.log refuses it at the call (as the Python package's log does), naming the key
  const logged = nanJob('nan-log', (s) => s.replace("flare.log('loss', loss);", "flare.log('loss', NaN);"));
  await assert.rejects(simulate({ jobDir: logged, clients: 2, threads: 0, workspace: join(tmp, 'ws-l') }), (e: Error) => {
    assert.match(e.message, /log\(\\?"loss\\?"\): value must be a finite number or a string, got NaN/);
    assert.doesNotMatch(e.message, /malformed/);
    return true;
  });
});

test('the Python package names the metric that is NaN', { skip: spawnSync(PY, ['-c', 'import numpy']).status !== 0 }, () => {
  const r = spawnSync(
    PY,
    [
      '-c',
      `from flotilla.framing import encode_control
try:
    encode_control({"type": "result", "model": {"metrics": {"loss": float("nan"), "acc": 1.0}}})
except Exception as e:
    print(e)`,
    ],
    { env: { ...process.env, PYTHONPATH: join(repo, 'python') }, encoding: 'utf8' },
  );
  assert.match(r.stdout, /result message has values that are not finite numbers \(model\.metrics\.loss is nan\)/);
});

test('a wrong type inside a union names the field (trainer.args), not the other branch’s keys', () => {
  const dir = join(tmp, 'union');
  mkdirSync(dir);
  writeFileSync(
    join(dir, 'job.yaml'),
    'name: u\nminClients: 1\nmodel: {path: m.safetensors}\nworkflows: [{type: fedavg, rounds: 1}]\nexecutor:\n  trainer: {module: t.ts, factory: make, args: [1, 2]}\n',
  );
  assert.throws(
    () => readJobConfig(dir),
    (e: Error) => {
      assert.match(e.message, /executor\.trainer\.args: .*expected record, received array/);
      assert.doesNotMatch(e.message, /unknown key/);
      return true;
    },
  );
});

test('a damaged job store names the file and what to do, and leaves the workspace unlocked', async () => {
  const kits = await oneSiteKits(join(tmp, 'kits'), 'store');
  const ws = join(tmp, 'store-ws');
  mkdirSync(ws);
  writeFileSync(join(ws, 'jobs.sqlite'), 'this is not a database, only text long enough to have a header page '.repeat(100));
  const kit = loadKit(kits.server!, 'server');
  assert.throws(
    () => new FederationServer({ kit, workspace: ws, host: '127.0.0.1', port: 0 }),
    (e: Error) => {
      assert.match(e.message, new RegExp(`cannot open the job store ${join(ws, 'jobs.sqlite')}: file is not a database`));
      assert.match(e.message, /move it .* aside to start with an empty job store, or restore it from a backup/);
      return true;
    },
  );
  rmSync(join(ws, 'jobs.sqlite'));
  const server = new FederationServer({ kit, workspace: ws, host: '127.0.0.1', port: 0 });
  await server.start();
  await server.stop();
});
