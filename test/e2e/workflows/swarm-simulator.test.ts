// Swarm learning in the simulator: each round one site aggregates the others' results (the server only
// routes and persists). With a deterministic trainer the swarm's model is a direct FedAvg computation's,
// and the FedAvg workflow's bit for bit; the aggregators go round-robin (or by the seeded ranking), each
// round's model is persisted with its aggregator named, and offloading to the aggregator's disk changes nothing.
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { SafetensorsFile, readSafetensors } from '../../../src/core/safetensors.ts';
import { parseJobConfig } from '../../../src/runtime/job-config.ts';
import { simulate } from '../../../src/simulator/simulator.ts';
import { chooseAggregator } from '../../../src/workflows/swarm.ts';
import { repo } from '../../helpers/federation.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-swarm-sim-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function job(name: string, edit: (yaml: string) => string = (y) => y): string {
  const dir = join(tmp, name);
  cpSync(join(repo, 'test/fixtures/jobs/swarm'), dir, { recursive: true });
  writeFileSync(join(dir, 'job.yaml'), edit(readFileSync(join(dir, 'job.yaml'), 'utf8')));
  return dir;
}

/** FedAvg by hand: each site k moves w halfway to k + i/4 (rounded to f32), weighted by 10k. */
function direct(rounds: number, sites: number[], n = 6): number[] {
  let w = new Array<number>(n).fill(0);
  for (let r = 0; r < rounds; r++) {
    const total = sites.reduce((s, k) => s + 10 * k, 0);
    w = w.map((x, i) => Math.fround(sites.reduce((s, k) => s + 10 * k * Math.fround(x + 0.5 * (k + i / 4 - x)), 0) / total));
  }
  return w;
}

const weights = (m: Map<string, { data: unknown }>): number[] => [...(m.get('w')!.data as Float32Array)];
/** The job's final model: in memory, or (swarm: the last round's file) on disk. */
async function final(r: { model: Map<string, { data: unknown }> | null; modelPath?: string }): Promise<number[]> {
  return weights(r.model ?? (await readSafetensors(r.modelPath!)).tensors);
}

test('a swarm job gives the direct FedAvg computation and the FedAvg workflow bit for bit, each round aggregated by a site in turn', async () => {
  const r = await simulate({ jobDir: job('rr'), clients: 3, threads: 0, workspace: join(tmp, 'rr-ws') });
  assert.deepEqual(
    r.rounds.map((s) => s.aggregator),
    ['site-1', 'site-2', 'site-3', 'site-1'],
  );
  for (const s of r.rounds) {
    assert.deepEqual(s.sites, ['site-1', 'site-2', 'site-3']);
    assert.equal(s.attempts, 1);
    assert.deepEqual(s.failures, {});
  }
  assert.deepEqual(await final(r), direct(4, [1, 2, 3]));
  // every round's global model is persisted in the server's workspace, naming its aggregator
  for (const [round, agg] of ['site-1', 'site-2', 'site-3', 'site-1'].entries()) {
    const f = await SafetensorsFile.open(join(tmp, 'rr-ws', 'server', `round-${round}`, 'global_model.safetensors'));
    assert.equal(f.metadata.swarm_aggregator, agg);
    assert.equal(f.metadata.workflow, 'swarm');
    await f.close();
  }
  const last = await readSafetensors(join(tmp, 'rr-ws', 'server', 'global_model.safetensors'));
  assert.deepEqual(weights(last.tensors), direct(4, [1, 2, 3]));

  const fedavg = await simulate({
    jobDir: job('fedavg', (y) => y.replace(/type: swarm\n.*\n.*aggregator.*\n/, 'type: fedavg\n    rounds: 4\n')),
    clients: 3,
    threads: 0,
    workspace: join(tmp, 'fedavg-ws'),
  });
  assert.equal(fedavg.rounds.length, 4);
  assert.deepEqual(await final(r), await final(fedavg), 'swarm and the FedAvg workflow give the same bits');
});

test('seeded random aggregators follow the ranking, and aggregating on the aggregator’s disk gives the same model', async () => {
  const dir = job('random', (y) =>
    y.replace('{ select: round_robin }', '{ select: random, seed: 7 }').replace('rounds: 4', 'rounds: 5\n    offload: true'),
  );
  const r = await simulate({ jobDir: dir, clients: ['a', 'b', 'c'], threads: 0, workspace: join(tmp, 'random-ws') });
  const expected = [0, 1, 2, 3, 4].map((round) => chooseAggregator(['a', 'b', 'c'], round, 'random', 7));
  assert.deepEqual(
    r.rounds.map((s) => s.aggregator),
    expected,
  );
  assert.ok(new Set(expected).size > 1, `the seeded choice varies over rounds: ${expected.join(', ')}`);
  // sites a, b, c train as site number 1 (no digits in the name)
  assert.deepEqual(await final(r), direct(5, [1, 1, 1]));
});

test('a trainer silent past taskTimeoutSeconds is skipped; the aggregator, its own training stalled, still folds the others', async () => {
  const dir = job('stall', (y) =>
    y
      .replace('rounds: 4', 'rounds: 3\n    taskTimeoutSeconds: 1')
      .replace('rate: 0.5', 'rate: 0.5\n      stallSite: site-2\n      stallRound: 1\n      stallMs: 1500'),
  );
  const r = await simulate({ jobDir: dir, clients: 3, threads: 0, workspace: join(tmp, 'stall-ws') });
  const one = r.rounds[1]!;
  assert.equal(one.aggregator, 'site-2');
  assert.deepEqual(one.sites, ['site-1', 'site-3'], 'round 1 went on without the stalled trainer');
  assert.match(one.failures['site-2']!, /timed out after 1000 ms/);
  assert.deepEqual(r.rounds[0]!.sites, ['site-1', 'site-2', 'site-3']);
  // whichever sites each round used (site-2 may miss round 2 too on a slow machine), the model is their FedAvg
  let w = new Array<number>(6).fill(0);
  for (const s of r.rounds) {
    const ks = s.sites.map((x) => Number(x.slice(5)));
    const total = ks.reduce((a, k) => a + 10 * k, 0);
    w = w.map((x, i) => Math.fround(ks.reduce((a, k) => a + 10 * k * Math.fround(x + 0.5 * (k + i / 4 - x)), 0) / total));
  }
  assert.deepEqual(await final(r), w);
});

test('the swarm settings are validated by their schema, errors naming the field', () => {
  const base = { name: 'j', minClients: 2, model: { path: 'm.safetensors' }, executor: { trainer: { module: 't.ts' } } };
  const ok = parseJobConfig({ ...base, workflows: [{ type: 'swarm', rounds: 2 }] });
  assert.deepEqual(ok.workflows[0], {
    type: 'swarm',
    rounds: 2,
    aggregator: { select: 'round_robin', seed: 0 },
    maxAttempts: 3,
    offload: false,
  });
  assert.throws(
    () => parseJobConfig({ ...base, workflows: [{ type: 'swarm', rounds: 2, aggregator: { select: 'best' } }] }),
    /workflows\.0\.aggregator\.select/,
  );
  assert.throws(() => parseJobConfig({ ...base, workflows: [{ type: 'swarm', rounds: 2, aggregater: {} }] }), /aggregater/);
});

test('a swarm job resumed at round 2 from the persisted round-1 model (a server restart) ends bit for bit as an uninterrupted one', async () => {
  const first = await simulate({
    jobDir: job('first', (y) => y.replace('rounds: 4', 'rounds: 2')),
    clients: 3,
    threads: 0,
    workspace: join(tmp, 'first-ws'),
  });
  assert.deepEqual(await final(first), direct(2, [1, 2, 3]));
  const from = join(tmp, 'first-ws', 'server', 'round-1', 'global_model.safetensors');
  // the swarm workflow as the job runner builds it on a resume (WorkflowInput.startRound 2, the model after round 1)
  const dir = job('resumed', (y) =>
    y.replace(/type: swarm\n.*\n.*aggregator.*\n/, `type: custom\n    module: resume.ts\n    args: { from: ${JSON.stringify(from)} }\n`),
  );
  writeFileSync(
    join(dir, 'resume.ts'),
    [
      "import { z } from 'flotilla/client';",
      "import { ModelRef } from 'flotilla/core';",
      "import { defineWorkflow, registeredWorkflow } from 'flotilla/workflows';",
      'export default defineWorkflow({',
      "  name: 'swarm_resumed',",
      '  schema: z.strictObject({ from: z.string() }),',
      '  async create(a, input) {',
      "    const swarm = registeredWorkflow('swarm')!;",
      "    const spec = { type: 'swarm', rounds: 4, aggregator: { select: 'round_robin' } };",
      '    return swarm.create(swarm.schema.parse(spec) as never, { ...input, model: await ModelRef.file(a.from), startRound: 2 });',
      '  },',
      '});',
      '',
    ].join('\n'),
  );
  const resumed = await simulate({ jobDir: dir, clients: 3, threads: 0, workspace: join(tmp, 'resumed-ws') });
  assert.deepEqual(
    resumed.rounds.map((s) => [s.round, s.aggregator]),
    [
      [2, 'site-3'],
      [3, 'site-1'],
    ],
    'rounds 2 and 3 only, with the aggregators an uninterrupted job chooses',
  );
  assert.deepEqual(await final(resumed), direct(4, [1, 2, 3]));
});
