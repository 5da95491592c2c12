// The workflow registry and ModelRef: a job's own workflow module (examples/custom-workflow) runs in the
// simulator and through a POC deployment; its args are validated by the schema it exports, errors naming
// the file and the field; `flotilla validate` resolves it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ModelRef } from '../../../src/core/model-ref.ts';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import { streamToDict } from '../../../src/core/tensor-stream.ts';
import { f32 } from '../../../src/core/tensor.ts';
import { simulate } from '../../../src/simulator/simulator.ts';
import { registeredWorkflows } from '../../../src/workflows/registry.ts';
import { freePortPair, repo, tinyJob } from '../../helpers/federation.ts';
import { flotilla as run, killPoc, waitForJobEnd, waitForSites } from '../../helpers/poc.ts';

const example = join(repo, 'examples/custom-workflow');
const tmp = mkdtempSync(join(tmpdir(), 'flotilla-registry-'));
const ws = join(tmp, 'poc');
after(() => {
  killPoc(ws);
  rmSync(tmp, { recursive: true, force: true });
});

const cli = (...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', join(repo, 'src/cli/main.ts'), ...args], { cwd: repo, encoding: 'utf8' });

/** A copy of the example with job.yaml edited. */
function variant(name: string, edit: (yaml: string) => string): string {
  const dir = join(tmp, name);
  cpSync(example, dir, { recursive: true });
  writeFileSync(join(dir, 'job.yaml'), edit(readFileSync(join(dir, 'job.yaml'), 'utf8')));
  return dir;
}

test('ModelRef: memory and file refs open streams, materialize, persist; take() hands the tensors over once', async () => {
  const t = new Map([['w', f32([3], [1, 2, 3])]]);
  const mem = ModelRef.memory(t, { card: 'x' });
  assert.equal(mem.onDisk, false);
  assert.deepEqual([...(await streamToDict((await mem.source()).open())).get('w')!.data], [1, 2, 3]);
  const file = await mem.persist(join(tmp, 'ref', 'm.safetensors'), { round: '0' });
  assert.equal(file.onDisk, true);
  assert.deepEqual(file.metadata, { card: 'x', round: '0' });
  assert.deepEqual([...(await file.materialize()).get('w')!.data], [1, 2, 3]);
  assert.equal(await file.persist(join(tmp, 'other.safetensors')), file, 'a file ref is its own file');
  assert.equal(await mem.take(), t);
  assert.equal(mem.released, true);
  await assert.rejects(mem.source(), /already taken/);
  await assert.rejects(ModelRef.file(join(tmp, 'missing.safetensors')));
  assert.deepEqual(registeredWorkflows().sort(), ['cross_site_eval', 'cyclic', 'fedavg', 'fedopt', 'scaffold', 'swarm']);
});

test('a job-defined workflow (type: custom) runs in the simulator, then hands its model to cross-site evaluation', async () => {
  const r = await simulate({ jobDir: example, clients: 2, threads: 0, workspace: join(tmp, 'sim') });
  // the sites' targets are 1 and 1.2: the loss falls below targetLoss 0.05 in round 4 (0.0289), well before maxRounds 10
  assert.equal(r.rounds.length, 4);
  assert.ok(r.rounds[3]!.metrics.loss! < 0.05 && r.rounds[2]!.metrics.loss! >= 0.05, JSON.stringify(r.rounds.map((x) => x.metrics)));
  for (const v of r.model!.get('w')!.data as Float32Array) assert.ok(Math.abs(v - 1.1 * (1 - 0.5 ** 4)) < 1e-5, String(v));
  assert.deepEqual(Object.keys(r.crossSite as object).sort(), ['server', 'site-1', 'site-2']);
  const saved = await readSafetensors(join(tmp, 'sim', 'server', 'global_model.safetensors'));
  assert.equal(saved.metadata.workflow, 'fedavg_until');
  assert.equal(saved.metadata.round, '3');
});

test("a custom workflow's args are checked by its own schema: validate and simulate name the file and the field", async () => {
  const bad = variant('bad-args', (y) =>
    y.replace('maxRounds: 10', 'maxRounds: 0').replace('targetLoss: 0.05', 'targetLoss: 0.05\n      extra: 1'),
  );
  const v = cli('validate', bad);
  assert.equal(v.status, 1, v.stdout);
  assert.match(v.stderr, /job\.yaml: workflows\.0\.args\.maxRounds: .*>=1/);
  assert.match(v.stderr, /workflows\.0\.args: unknown key\(s\) "extra" \(the schema workflow\.ts exports\)/);
  await assert.rejects(simulate({ jobDir: bad, clients: 2, threads: 0, workspace: join(tmp, 'bad') }), /workflows\.0\.args\.maxRounds/);

  const missing = variant('missing', (y) => y.replace('module: workflow.ts', 'module: nope.ts'));
  assert.match(cli('validate', missing).stderr, /job\.yaml: workflows\.0\.module: cannot load .*nope\.ts/);
  const notDef = variant('not-def', (y) => y.replace('module: workflow.ts', 'module: trainer.ts\n    export: createTrainer'));
  assert.match(cli('validate', notDef).stderr, /workflows\.0: export "createTrainer" of trainer\.ts is not a workflow definition/);
  assert.match(cli('validate', example).stdout, /ok \(job "custom-workflow", custom workflow\.ts → cross_site_eval/);
});

test("the same custom workflow runs through a POC deployment (server process loads the job's module)", { timeout: 180_000 }, async () => {
  assert.match(run('poc', 'prepare', '--clients', '2', '-w', ws, '-p', String(await freePortPair())), /POC prepared/);
  assert.match(run('poc', 'start', '-w', ws), /Started server, site-1, site-2/);
  const admin = join(ws, 'poc', 'prod_01', 'admin@poc.example');
  try {
    assert.equal((await waitForSites(admin, 2)).length, 2);
    const id = /Submitted job (\S+)/.exec(run('admin', admin, 'submit', example))?.[1];
    assert.ok(id);
    type Status = { state: string; result?: { rounds: { metrics: Record<string, number> }[]; crossSite?: object } };
    const status = await waitForJobEnd<Status>(admin, id);
    assert.equal(status.state, 'FINISHED', JSON.stringify(status));
    assert.equal(status.result!.rounds.length, 4, 'the custom workflow stopped at its target loss');
    assert.ok(status.result!.rounds[3]!.metrics.loss! < 0.05);
    assert.deepEqual(Object.keys(status.result!.crossSite ?? {}).sort(), ['server', 'site-1', 'site-2']);
  } finally {
    run('poc', 'stop', '-w', ws);
  }
});

test('chained workflows keep separate checkpoints: cyclic then fedavg under server/<index>-<type>/round-<r>/', async () => {
  const dir = tinyJob(join(tmp, 'chain'), { rounds: 2 });
  writeFileSync(
    join(dir, 'job.yaml'),
    readFileSync(join(dir, 'job.yaml'), 'utf8').replace(
      '  - type: fedavg\n    rounds: 2\n',
      '  - type: cyclic\n    rounds: 2\n  - type: fedavg\n    rounds: 2\n',
    ),
  );
  const work = join(tmp, 'chain-ws');
  const r = await simulate({ jobDir: dir, clients: 2, threads: 0, workspace: work });
  assert.deepEqual(
    r.rounds.map((x) => `${x.workflow}:${x.round}`),
    ['0-cyclic:0', '0-cyclic:1', '1-fedavg:0', '1-fedavg:1'],
  );
  const server = join(work, 'server');
  assert.ok(!existsSync(join(server, 'round-0')), 'no checkpoint outside the workflows’ folders');
  const byWorkflow: Record<string, number[]> = {};
  for (const [label, type] of [
    ['0-cyclic', 'cyclic'],
    ['1-fedavg', 'fedavg'],
  ] as const)
    for (const round of [0, 1]) {
      const saved = await readSafetensors(join(server, label, `round-${round}`, 'global_model.safetensors'));
      assert.equal(saved.metadata.workflow, type);
      assert.equal(saved.metadata.round, String(round));
      (byWorkflow[label] ??= []).push((saved.tensors.get('w')!.data as Float32Array)[0]!);
    }
  // cyclic's last model is what fedavg starts from; each keeps its own rounds
  assert.notDeepEqual(byWorkflow['0-cyclic'], byWorkflow['1-fedavg']);
  const latest = await readSafetensors(join(server, 'global_model.safetensors'));
  assert.deepEqual(latest.tensors.get('w')!.data, r.model!.get('w')!.data);
  assert.equal(latest.metadata.workflow, 'fedavg');
});
