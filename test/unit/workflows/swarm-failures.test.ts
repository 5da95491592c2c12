// Swarm learning when the aggregator lets the round down without dying: one site (site-3) runs the real
// runtime with a faulty swarm step (its swarm.open fails, or swarm.finish answers a model that does not
// fit). The server replaces it, redoes the round with the next site, and the model is still the direct
// FedAvg computation; with maxAttempts exhausted the job fails naming the aggregators.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { InProcessTrainerHost } from '../../../src/client/host/in-process-host.ts';
import { ModelRef } from '../../../src/core/model-ref.ts';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import { dictToStream, streamToDict } from '../../../src/core/tensor-stream.ts';
import { f32 } from '../../../src/core/tensor.ts';
import { ServerRuntime } from '../../../src/runtime/controller.ts';
import { ClientRunner, type Executor } from '../../../src/runtime/executor.ts';
import { runSite } from '../../../src/runtime/site.ts';
import { SWARM_CONCURRENT_TASKS, SwarmTasks, swarmExecutor } from '../../../src/runtime/swarm-site.ts';
import { ServerWorkspace } from '../../../src/runtime/workspace.ts';
import { InMemoryHub } from '../../../src/transport/in-memory.ts';
import { silentLogger } from '../../../src/util/log.ts';
import { Swarm } from '../../../src/workflows/swarm.ts';
import type { RoundSummary } from '../../../src/workflows/workflow.ts';
import { createTrainer } from '../../fixtures/jobs/swarm/trainer.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-swarm-fail-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

type Fault = 'open-fails' | 'bad-model';

/** site-3's executor: trains as the fixture trainer (k = 3) and runs the swarm steps with `fault`. */
function faultyExecutor(fault: Fault, workspace: string): Executor {
  const swarm = swarmExecutor({ workspace });
  return {
    ...swarm,
    [SwarmTasks.open]: async (task, signal) => {
      if (fault === 'open-fails') throw new Error('no space left on device');
      return swarm[SwarmTasks.open]!(task, signal);
    },
    [SwarmTasks.finish]: async (task, signal) => {
      const out = await swarm[SwarmTasks.finish]!(task, signal);
      if (fault !== 'bad-model') return out;
      return { info: out.info, params: dictToStream(new Map([['w', f32([2], [1, 2])]])) };
    },
    '*': async (task) => {
      const w = (await streamToDict(task.params!)).get('w')!.data as Float32Array;
      const out = w.map((x, i) => x + 0.5 * (3 + i / 4 - x));
      return {
        info: { paramsType: 'FULL', metrics: {}, meta: { numSamples: 30 }, currentRound: task.info.currentRound, totalRounds: 0 },
        params: dictToStream(new Map([['w', f32([w.length], out)]])),
      };
    },
  };
}

async function run(name: string, fault: Fault, maxAttempts = 3): Promise<{ rounds: RoundSummary[]; w: number[] }> {
  const dir = join(tmp, name);
  const hub = new InMemoryHub();
  const server = new ServerRuntime(hub, { jobId: name });
  server.start();
  const log = silentLogger();
  const sites = ['site-1', 'site-2'].map((site, i) =>
    runSite(hub.connect(site), {
      site,
      jobId: name,
      workspace: join(dir, site),
      host: new InProcessTrainerHost(createTrainer({ site, siteIndex: i, numSites: 3, args: { rate: 0.5 }, jobDir: dir })),
      log,
    }),
  );
  const bad = new ClientRunner(hub.connect('site-3'), {
    site: 'site-3',
    executor: faultyExecutor(fault, join(dir, 'site-3')),
    concurrentTasks: SWARM_CONCURRENT_TASKS,
  });
  const badDone = bad.run();
  try {
    await server.waitForSites(3, 10_000);
    const swarm = new Swarm({
      rounds: 3,
      minClients: 2,
      initialModel: ModelRef.memory(new Map([['w', f32([6], [0, 0, 0, 0, 0, 0])]])),
      maxAttempts,
    });
    const r = await swarm.runRef({ controller: server, workspace: new ServerWorkspace(dir), log });
    return { rounds: r.rounds, w: [...((await readSafetensors(r.model.path!)).tensors.get('w')!.data as Float32Array)] };
  } finally {
    await server.end('done');
    await Promise.allSettled([...sites, badDone]);
    await server.close();
  }
}

function direct(rounds: number, sites: number[]): number[] {
  let w = new Array<number>(6).fill(0);
  const total = sites.reduce((s, k) => s + 10 * k, 0);
  for (let r = 0; r < rounds; r++)
    w = w.map((x, i) => Math.fround(sites.reduce((s, k) => s + 10 * k * Math.fround(x + 0.5 * (k + i / 4 - x)), 0) / total));
  return w;
}

for (const [fault, why] of [
  ['open-fails', /swarm\.open: no space left on device/],
  ['bad-model', /returned a model that does not fit: .*tensor "w" is F32\[2\]/],
] as const) {
  test(`an aggregator whose ${fault === 'open-fails' ? 'swarm.open fails' : 'mean does not fit the model'} is replaced and its round redone`, async () => {
    const r = await run(fault, fault);
    assert.deepEqual(
      r.rounds.map((s) => [s.aggregator, s.attempts]),
      [
        ['site-1', 1],
        ['site-2', 1],
        ['site-1', 2], // site-3's turn: it failed, the next site in the order (site-1) redid the round
      ],
    );
    assert.match(r.rounds[2]!.failures['site-3']!, why);
    // site-3 still trains: only its aggregation failed
    for (const s of r.rounds) assert.deepEqual(s.sites, ['site-1', 'site-2', 'site-3']);
    assert.deepEqual(r.w, direct(3, [1, 2, 3]));
  });
}

test('when maxAttempts aggregators fail, the job fails naming them', async () => {
  await assert.rejects(run('exhausted', 'open-fails', 1), /swarm round 2: 1 aggregators failed: .*site-3.*no space left on device/);
});
