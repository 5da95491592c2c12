// Cross-site evaluation interrupted and resumed, at the runtime level: a job (one FedAvg round, then
// cross-site evaluation) runs through runWorkflows on a ServerRuntime with three in-process sites; the
// "server" is killed midway (its job aborted and its runtime closed, as a crash leaves it: only what
// progress.json holds survives), then a fresh runtime and fresh sites resume from readProgress. Every task
// each site receives is counted: after the resume no round is trained again, no model that was in is asked
// for again, no finished row is evaluated again, and the matrix equals an uninterrupted run's.
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { Trainer } from '../../../src/client/api.ts';
import { InProcessTrainerHost } from '../../../src/client/host/in-process-host.ts';
import { ModelRef } from '../../../src/core/model-ref.ts';
import { f32 } from '../../../src/core/tensor.ts';
import { ServerRuntime } from '../../../src/runtime/controller.ts';
import { type Job, loadJob } from '../../../src/runtime/job.ts';
import { runSite } from '../../../src/runtime/site.ts';
import { ServerWorkspace } from '../../../src/runtime/workspace.ts';
import { InMemoryHub } from '../../../src/transport/in-memory.ts';
import { silentLogger } from '../../../src/util/log.ts';
import { CrossSiteStateSchema } from '../../../src/workflows/cross-site-eval.ts';
import { type Progress, readProgress } from '../../../src/workflows/progress.ts';
import { runWorkflows } from '../../../src/workflows/run-job.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-xsite-resume-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const SITES = ['a', 'b', 'c'];
/** rows: server + 3 sites; each row one validate task per site */
const OWNERS = 4;

interface Task {
  site: string;
  name: string;
  owner?: string;
}

function job(dir: string): Job {
  cpSync(join(import.meta.dirname, '../../fixtures/jobs/tiny'), dir, { recursive: true });
  const yaml = readFileSync(join(dir, 'job.yaml'), 'utf8').replace(
    '  - type: fedavg\n    rounds: 3\n',
    '  - type: fedavg\n    rounds: 1\n  - type: cross_site_eval\n',
  );
  writeFileSync(join(dir, 'job.yaml'), yaml);
  return loadJob(dir);
}

/**
 * A deterministic trainer: train adds k, submit_model sends k·10, validate scores the model's first weight
 * plus k/100. `onTask` sees each task as it arrives and may hold it (a promise) before it is answered.
 */
function trainer(site: string, tasks: Task[], onTask: (t: Task) => Promise<'answer' | 'drop'>): Trainer {
  const k = SITES.indexOf(site) + 1;
  return async (flare) => {
    await flare.init();
    while (flare.isRunning()) {
      const m = await flare.receive();
      if (!m) break;
      const t: Task = { site, name: flare.taskName(), ...(flare.isEvaluate() && { owner: m.meta.modelOwner as string }) };
      tasks.push(t);
      if ((await onTask(t)) === 'drop') continue;
      if (flare.isSubmitModel()) {
        await flare.send({ ...m, params: new Map([['w', f32([2], [k * 10, k * 10])]]) });
      } else if (flare.isEvaluate()) {
        const w = m.params.get('w')!.data as Float32Array;
        await flare.send({ ...m, params: new Map(), metrics: { score: w[0]! + k / 100 } });
      } else {
        const w = m.params.get('w')!.data as Float32Array;
        await flare.send({
          ...m,
          params: new Map([
            [
              'w',
              f32(
                [2],
                w.map((x) => x + k),
              ),
            ],
          ]),
          meta: { numSamples: 1 },
        });
      }
    }
  };
}

/**
 * One server run of the job on `dir` (resumed from its progress.json when there is one). `kill(t, dir)`
 * decides, per task, whether this is when the server dies: then the job's signal is aborted, the runtime
 * closed, and the run's error returned.
 */
async function serve(
  dir: string,
  j: Job,
  kill: (t: Task, dir: string) => boolean | Promise<boolean> = () => false,
): Promise<{ tasks: Task[]; resume: Progress | null; crossSite?: unknown; error?: Error }> {
  const hub = new InMemoryHub();
  const log = silentLogger();
  const server = new ServerRuntime(hub, { jobId: 'xsite', log });
  server.start();
  const abort = new AbortController();
  const tasks: Task[] = [];
  const crash = async (): Promise<void> => {
    abort.abort(new Error('server killed'));
    await server.close();
  };
  const onTask = async (t: Task): Promise<'answer' | 'drop'> => {
    if (abort.signal.aborted) return 'drop';
    if (!(await kill(t, dir))) return 'answer';
    await crash();
    return 'drop';
  };
  const sites = SITES.map((site) =>
    runSite(hub.connect(site), {
      site,
      jobId: 'xsite',
      workspace: join(dir, site),
      host: new InProcessTrainerHost(trainer(site, tasks, onTask), { stopTimeoutMs: 1_000 }),
      log,
    }),
  );
  const resume = readProgress(join(dir, 'server'));
  try {
    await server.waitForSites(SITES.length, 60_000);
    const initial = ModelRef.memory(new Map([['w', f32([2], [1, 2])]]));
    const ctx = { controller: server, workspace: new ServerWorkspace(dir), log, signal: abort.signal };
    const outcome = await runWorkflows(j, initial, ctx, false, resume);
    return { tasks, resume, crossSite: outcome.crossSite };
  } catch (e) {
    return { tasks, resume, error: e as Error };
  } finally {
    await server.end('done').catch(() => undefined);
    await server.close().catch(() => undefined);
    await Promise.allSettled(sites);
  }
}

const count = (tasks: Task[], name: string): number => tasks.filter((t) => t.name === name).length;
const state = (p: Progress | null): { models: string[]; rows: string[] } => {
  const s = CrossSiteStateSchema.parse(p?.state);
  return { models: [...s.models].sort(), rows: Object.keys(s.rows).sort() };
};

/** Kills the server when the second row's first validate task arrives; `owners` collects the rows started. */
const atSecondRow =
  (owners: Set<string>) =>
  (t: Task): boolean => {
    if (t.owner) owners.add(t.owner);
    return owners.size === 2;
  };

const uninterrupted = (async () => {
  const dir = join(tmp, 'whole');
  const r = await serve(dir, job(join(tmp, 'job-whole')));
  assert.equal(r.error, undefined);
  return r;
})();

test('uninterrupted: one round, every model asked for once, every row once', async () => {
  const r = await uninterrupted;
  assert.equal(count(r.tasks, 'train'), 3);
  assert.equal(count(r.tasks, 'submit_model'), 3);
  assert.equal(count(r.tasks, 'validate'), OWNERS * SITES.length);
  // fedavg: [1, 2] + mean(1, 2, 3) = [3, 4]; site k submits [10k, 10k]
  assert.deepEqual(r.crossSite, {
    server: { a: { score: 3.01 }, b: { score: 3.02 }, c: { score: 3.03 } },
    a: { a: { score: 10.01 }, b: { score: 10.02 }, c: { score: 10.03 } },
    b: { a: { score: 20.01 }, b: { score: 20.02 }, c: { score: 20.03 } },
    c: { a: { score: 30.01 }, b: { score: 30.02 }, c: { score: 30.03 } },
  });
});

test('killed at the start of the second row: the resumed run evaluates only the three rows not done', async () => {
  const dir = join(tmp, 'rows');
  const j = job(join(tmp, 'job-rows'));
  const owners = new Set<string>();
  const first = await serve(dir, j, atSecondRow(owners));
  assert.match(first.error?.message ?? '', /server killed/);
  const second = await serve(dir, j);
  assert.equal(second.error, undefined, second.error?.message);
  assert.equal(second.resume?.index, 1, 'resumed at cross-site evaluation, the second workflow');
  assert.deepEqual(state(second.resume), { models: SITES, rows: [[...owners][0]!] });
  assert.equal(count(second.tasks, 'train'), 0, 'no round trained again');
  assert.equal(count(second.tasks, 'submit_model'), 0, 'no model asked for again');
  assert.equal(count(second.tasks, 'validate'), (OWNERS - 1) * SITES.length, 'only the rows not done');
  assert.ok(!second.tasks.some((t) => t.owner === [...owners][0]), 'the done row is not evaluated again');
  assert.deepEqual(second.crossSite, (await uninterrupted).crossSite);
});

test('killed while c submits its model: the resumed run asks c only, then evaluates every row', async () => {
  const dir = join(tmp, 'models');
  const j = job(join(tmp, 'job-models'));
  const first = await serve(dir, j, async (t, d) => {
    if (t.site !== 'c' || t.name !== 'submit_model') return false;
    // c dies once the others' models are in (saved), so what survives is known
    for (let i = 0; i < 3000 && (readProgress(join(d, 'server'))?.state as { models?: unknown[] } | undefined)?.models?.length !== 2; i++)
      await new Promise((r) => setTimeout(r, 10));
    return true;
  });
  assert.match(first.error?.message ?? '', /server killed/);
  const second = await serve(dir, j);
  assert.equal(second.error, undefined, second.error?.message);
  assert.deepEqual(state(second.resume), { models: ['a', 'b'], rows: [] });
  assert.deepEqual(
    second.tasks.filter((t) => t.name === 'submit_model').map((t) => t.site),
    ['c'],
  );
  assert.equal(count(second.tasks, 'train'), 0);
  assert.equal(count(second.tasks, 'validate'), OWNERS * SITES.length);
  assert.deepEqual(second.crossSite, (await uninterrupted).crossSite);
});

test('a saved model whose file is gone is asked for again', async () => {
  const dir = join(tmp, 'gone');
  const j = job(join(tmp, 'job-gone'));
  const owners = new Set<string>();
  const first = await serve(dir, j, atSecondRow(owners));
  assert.match(first.error?.message ?? '', /server killed/);
  rmSync(join(dir, 'server', 'cross_site', 'models', 'b.safetensors'));
  const second = await serve(dir, j);
  assert.equal(second.error, undefined, second.error?.message);
  const done = [...owners][0]!;
  assert.deepEqual(
    second.tasks.filter((t) => t.name === 'submit_model').map((t) => t.site),
    done === 'b' ? [] : ['b'],
  );
  assert.deepEqual(second.crossSite, (await uninterrupted).crossSite);
});
