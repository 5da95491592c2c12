import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { JobConfigError, parseJobConfig, readJobConfig } from '../../../src/runtime/job-config.ts';

const good = {
  name: 'ok-job',
  minClients: 2,
  model: { module: 'model.ts' },
  workflows: [{ type: 'fedavg', rounds: 3 }],
  executor: { trainer: { module: 'trainer.ts' } },
};

function jobDir(file: string, text: string): string {
  const d = mkdtempSync(join(tmpdir(), 'flotilla-job-'));
  writeFileSync(join(d, file), text);
  return d;
}

test('a valid config parses, with defaults filled in', () => {
  const c = parseJobConfig(good);
  assert.equal(c.workflows[0]!.type, 'fedavg');
  assert.deepEqual(c.filters, []);
  assert.deepEqual(c.executor, { trainer: { module: 'trainer.ts', export: 'default' }, params: 'memory' });
});

const bad: [string, unknown, RegExp][] = [
  ['unknown top-level key', { ...good, rouns: 3 }, /\(top level\): unknown key\(s\) "rouns"/],
  ['unknown workflow key', { ...good, workflows: [{ type: 'fedavg', rounds: 3, lr: 1 }] }, /workflows\.0: unknown key\(s\) "lr"/],
  ['wrong type', { ...good, minClients: 'three' }, /minClients: .*number/i],
  ['rounds below 1', { ...good, workflows: [{ type: 'fedavg', rounds: 0 }] }, /workflows\.0\.rounds/],
  ['unknown workflow type', { ...good, workflows: [{ type: 'fedsgd', rounds: 1 }] }, /workflows\.0\.type/],
  ['path escaping the job folder', { ...good, model: { path: '../../etc/passwd' } }, /model.*inside the job folder/s],
  ['bad job name', { ...good, name: 'has space' }, /name: job names/],
  ['unknown filter type', { ...good, filters: [{ type: 'rot13' }] }, /filters\.0(\.type)?: unknown filter type/],
  ['no executor', { ...good, executor: undefined }, /executor/],
];
for (const [what, raw, re] of bad) {
  test(`rejected with the field named: ${what}`, () => {
    assert.throws(
      () => parseJobConfig(raw, '/jobs/x/job.json'),
      (e: Error) => e instanceof JobConfigError && re.test(e.message) && e.message.startsWith('/jobs/x/job.json'),
    );
  });
}

test('files: YAML and JSON are read; bad syntax and a missing config name the file', () => {
  const y = jobDir(
    'job.yaml',
    'name: y\nminClients: 1\nmodel: {path: m.safetensors}\nworkflows: [{type: cyclic, rounds: 2}]\nexecutor: {script: {command: python3, args: [train.py]}}\n',
  );
  assert.equal(readJobConfig(y).config.workflows[0]!.type, 'cyclic');
  const broken = jobDir('job.json', '{"name": ');
  assert.throws(() => readJobConfig(broken), /job\.json: not valid JSON/);
  const yamlTypo = jobDir(
    'job.yaml',
    'name: y\nminClients: 1\nmodel: {path: m.safetensors}\nworkflows: [{type: fedavg, rounds: "5"}]\nexecutor: {trainer: {module: t.ts}}\n',
  );
  assert.throws(
    () => readJobConfig(yamlTypo),
    (e: Error) => /job\.yaml: invalid job config/.test(e.message) && /workflows\.0\.rounds/.test(e.message),
  );
  const empty = mkdtempSync(join(tmpdir(), 'flotilla-job-'));
  assert.throws(() => readJobConfig(empty), /has no config file: create one of job\.yaml/);
});

test('heartbeatTimeoutSeconds: optional, at least 0.5 s and at most a day, the field named when wrong', () => {
  assert.equal(parseJobConfig(good).heartbeatTimeoutSeconds, undefined);
  assert.equal(parseJobConfig({ ...good, heartbeatTimeoutSeconds: 2 }).heartbeatTimeoutSeconds, 2);
  for (const v of [0, 0.1, -1, 86_401, '30']) {
    assert.throws(() => parseJobConfig({ ...good, heartbeatTimeoutSeconds: v }), /heartbeatTimeoutSeconds/, String(v));
  }
});
