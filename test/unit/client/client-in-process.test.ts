import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type ClientAPI, type ScalarRecord, isScalar, type TaskInput, type TrainerContext } from '../../../src/client/api.ts';
import { InProcessTrainerHost } from '../../../src/client/host/in-process-host.ts';
import { f16ToF32 } from '../../../src/core/dtypes.ts';
import { type FLModel, flModel } from '../../../src/core/fl-model.ts';
import { type TensorDict, f32 } from '../../../src/core/tensor.ts';
import { addOneTrainer, sampleParams } from '../../fixtures/trainers/add-one-lib.ts';

function ctx(metrics: ScalarRecord[] = []): TrainerContext {
  return { siteName: 'site-1', jobId: 'job-42', workspace: '/nonexistent', onMetric: (m) => void (isScalar(m) && metrics.push(m)) };
}

function task(i: number, params: TensorDict, taskName = 'train'): TaskInput {
  return {
    taskId: `t${i}`,
    taskName,
    model: flModel(params, { currentRound: i, totalRounds: 3, meta: { tag: `r${i}`, nested: { a: [1, 2] } }, metrics: { prev: i } }),
  };
}

describe('InProcessTrainerHost', () => {
  it('runs the add-one trainer over 3 tasks: values, meta, metrics and log round-trip', async () => {
    const metrics: ScalarRecord[] = [];
    const host = new InProcessTrainerHost(addOneTrainer);
    await host.start(ctx(metrics));
    const orig = sampleParams();
    let params = orig;
    let last: FLModel | undefined;
    for (let i = 0; i < 3; i++) {
      last = await host.runTask(task(i, params));
      assert.equal(last.currentRound, i);
      assert.equal(last.totalRounds, 3);
      assert.deepEqual(last.metrics, { round: i, tensors: 4 });
      assert.deepEqual(last.meta, {
        tag: `r${i}`,
        nested: { a: [1, 2] },
        site: 'site-1',
        job: 'job-42',
        task: 'train',
        isTrain: true,
        isEvaluate: false,
        NUM_STEPS_CURRENT_ROUND: 7,
      });
      params = last.params;
    }
    assert.deepEqual([...(params.get('w')!.data as Float32Array)], [3, 4, 5, 0, 3.25, 1e6 + 3]);
    assert.deepEqual([...(params.get('h')!.data as Uint16Array)].map(f16ToF32), [3.5, 4.5, 1, 103]);
    assert.equal(params.get('h')!.dtype, 'F16');
    assert.deepEqual([...(params.get('steps')!.data as BigInt64Array)], [8n, -4n]);
    assert.deepEqual(params.get('empty')!.shape, [0]);
    // the caller's tensors are untouched
    assert.deepEqual([...(orig.get('w')!.data as Float32Array)], [0, 1, 2, -3, 0.25, 1e6]);
    assert.deepEqual(
      metrics.map((m) => [m.site, m.key, m.round, m.step]),
      [
        ['site-1', 'loss', 0, 0],
        ['site-1', 'loss', 1, 1],
        ['site-1', 'loss', 2, 2],
      ],
    );
    const v = await host.runTask(task(3, params, 'validate'));
    assert.equal(v.meta.task, 'validate');
    assert.equal(v.meta.isEvaluate, true);
    await host.stop();
    await assert.rejects(host.runTask(task(9, params)), /trainer has returned|stopping/);
  });

  it('queues tasks submitted before the trainer asks for them', async () => {
    const host = new InProcessTrainerHost(addOneTrainer);
    await host.start(ctx());
    const results = await Promise.all([0, 1, 2].map((i) => host.runTask(task(i, new Map([['x', f32([1], [i])]])))));
    assert.deepEqual(
      results.map((r) => (r.params.get('x')!.data as Float32Array)[0]),
      [1, 2, 3],
    );
    await host.stop();
  });

  it('rejects the pending task with the error a throwing trainer throws', async () => {
    const boom = new Error('trainer exploded');
    const host = new InProcessTrainerHost(async (flare) => {
      await flare.receive();
      throw boom;
    });
    await host.start(ctx());
    await assert.rejects(host.runTask(task(0, sampleParams())), (e) => e === boom);
    // and every later task, without hanging
    await assert.rejects(host.runTask(task(1, sampleParams())), (e) => e === boom);
    await host.stop();
  });

  it('rejects a task left pending by a trainer that returns', async () => {
    const host = new InProcessTrainerHost(async (flare) => {
      await flare.receive();
    });
    await host.start(ctx());
    await assert.rejects(host.runTask(task(0, sampleParams())), /returned while task "t0" \(train\) was pending/);
  });

  it('a trainer that throws before any task surfaces the error from stop()', async () => {
    const host = new InProcessTrainerHost(async () => {
      throw new Error('init failed');
    });
    await host.start(ctx());
    await new Promise((r) => setImmediate(r));
    await assert.rejects(host.stop(), /init failed/);
  });

  it('stop() makes receive() return null and isRunning() false, and waits for the trainer to return', async () => {
    const seen: Array<FLModel | null> = [];
    let runningAfter: boolean | undefined;
    let returned = false;
    let api: ClientAPI | undefined;
    const host = new InProcessTrainerHost(async (flare) => {
      api = flare;
      while (flare.isRunning()) seen.push(await flare.receive());
      runningAfter = flare.isRunning();
      await new Promise((r) => setTimeout(r, 50)); // stop() must wait for this
      returned = true;
    });
    await host.start(ctx());
    await new Promise((r) => setImmediate(r));
    assert.equal(api?.isRunning(), true);
    await host.stop();
    assert.equal(returned, true);
    assert.deepEqual(seen, [null]);
    assert.equal(runningAfter, false);
  });

  it('stop() is bounded when the trainer ignores it', async () => {
    let keepGoing = true;
    const host = new InProcessTrainerHost(
      async () => {
        while (keepGoing) await new Promise((r) => setTimeout(r, 20));
      },
      { stopTimeoutMs: 200 },
    );
    await host.start(ctx());
    const t0 = Date.now();
    await assert.rejects(host.stop(), /did not return within 200 ms/);
    assert.ok(Date.now() - t0 < 2000);
    keepGoing = false;
  });

  it('an AbortSignal rejects runTask; the late send() is dropped and the next task works', async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => (release = r));
    const host = new InProcessTrainerHost(async (flare) => {
      for (let m = await flare.receive(); m; m = await flare.receive()) {
        if (m.currentRound === 0) await gate;
        await flare.send(m);
      }
    });
    await host.start(ctx());
    const ac = new AbortController();
    const p = host.runTask(task(0, sampleParams()), ac.signal);
    ac.abort(new Error('round timed out'));
    await assert.rejects(p, /round timed out/);
    release();
    const r = await host.runTask(task(1, sampleParams()));
    assert.equal(r.currentRound, 1);
    // already-aborted signal
    await assert.rejects(host.runTask(task(2, sampleParams()), AbortSignal.abort(new Error('too late'))), /too late/);
    await host.stop();
  });

  it('receive() twice without send() is a trainer error that fails the task', async () => {
    const host = new InProcessTrainerHost(async (flare) => {
      await flare.receive();
      await flare.receive();
    });
    await host.start(ctx());
    await assert.rejects(host.runTask(task(0, sampleParams())), /receive\(\) called before send\(\) answered task "t0"/);
  });

  it('copyParams: false hands the tensors over as they are', async () => {
    let received: TensorDict | undefined;
    const host = new InProcessTrainerHost(
      async (flare) => {
        for (let m = await flare.receive(); m; m = await flare.receive()) {
          received = m.params;
          await flare.send(m);
        }
      },
      { copyParams: false },
    );
    await host.start(ctx());
    const params = sampleParams();
    const out = await host.runTask(task(0, params));
    assert.equal(received!.get('w'), params.get('w'));
    assert.equal(out.params.get('w'), params.get('w'));
    await host.stop();
  });
});
