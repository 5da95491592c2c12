// A trainer's and an initial-model hook's settings, declared by a schema in the job's own module
// (defineTrainer, defineInitialModel): parsed with their defaults before anything runs, and a bad
// value refused by `flotilla validate` and by the simulator, naming the job.yaml field.
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import { checkJob } from '../../../src/runtime/job-check.ts';
import { simulate } from '../../../src/simulator/simulator.ts';
import { repo } from '../../helpers/federation.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-declared-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** A copy of the fixture job with job.yaml edited by `edit`. */
function job(name: string, edit: (yaml: string) => string = (y) => y): string {
  const dir = join(tmp, name);
  cpSync(join(repo, 'test/fixtures/jobs/declared'), dir, { recursive: true });
  writeFileSync(join(dir, 'job.yaml'), edit(readFileSync(join(dir, 'job.yaml'), 'utf8')));
  return dir;
}

test('declared args are parsed with their defaults: the trainer gets scale 2 the job left out, the model hook its size', async () => {
  const dir = job('ok');
  await checkJob(dir);
  const r = await simulate({ jobDir: dir, clients: 2, threads: 0, workspace: join(tmp, 'ws-ok') });
  assert.equal(r.rounds.length, 2);
  const saved = await readSafetensors(join(tmp, 'ws-ok', 'server', 'global_model.safetensors'));
  const w = saved.tensors.get('w')!;
  assert.deepEqual(w.shape, [4], 'model.args.size reached the hook');
  // sites 1 and 2 send 0.5 × 2 × 1 and 0.5 × 2 × 2 with equal weights: the mean is 1.5
  for (const v of w.data as Float32Array) assert.equal(v, 1.5);
});

test('a bad trainer arg is refused naming executor.trainer.args.<field>, by validate and by the simulator', async () => {
  const dir = job('bad-trainer', (y) => y.replace('args: { step: 0.5 }', 'args: { step: -1, extra: true }'));
  await assert.rejects(checkJob(dir), (e: Error) => {
    assert.match(e.message, /job\.yaml: executor\.trainer\.args\.step: .*(>0|positive|greater)/i);
    assert.match(e.message, /executor\.trainer\.args: unknown key\(s\) "extra"/);
    assert.match(e.message, /the schema job\.ts declares/);
    return true;
  });
  await assert.rejects(simulate({ jobDir: dir, clients: 2, threads: 0, workspace: join(tmp, 'ws-bad') }), /executor\.trainer\.args\.step/);
});

test('a per-site executor is named by its own field; a bad model arg names model.args.<field>', async () => {
  const site = job(
    'bad-site',
    (y) => `${y}sites:\n  site-2:\n    executor:\n      trainer: { module: job.ts, factory: trainer, args: { step: "fast" } }\n`,
  );
  await assert.rejects(checkJob(site), /sites\.site-2\.executor\.trainer\.args\.step: .*number/i);
  const model = job('bad-model', (y) => y.replace('args: { size: 4 }', 'args: { size: 0 }'));
  await assert.rejects(checkJob(model), /model\.args\.size: .*>=1/);
  await assert.rejects(simulate({ jobDir: model, clients: 2, threads: 0, workspace: join(tmp, 'ws-m') }), /model\.args\.size/);
});
