// A site keeps nothing of a finished task: 40 tasks answered with 1 MB results each through the real
// runtime (ServerRuntime and a site's ClientRunner over a channel) leave the site's ArrayBuffer memory
// where it was. The soak run found a site holding every task's result for the job's life (one model
// per round): an abort listener left on the task's composite signal (AbortSignal.any), which Node
// keeps alive while it has one.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { FLModelInfo } from '../../../src/core/fl-model.ts';
import { f32 } from '../../../src/core/tensor.ts';
import { dictToStream, streamToDict } from '../../../src/core/tensor-stream.ts';
import { ServerRuntime } from '../../../src/runtime/controller.ts';
import { ClientRunner } from '../../../src/runtime/executor.ts';
import { InMemoryHub } from '../../../src/transport/in-memory.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const settledMB = async (): Promise<number> => {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 20));
  }
  return process.memoryUsage().arrayBuffers / 2 ** 20;
};

const info: FLModelInfo = { paramsType: 'FULL', metrics: {}, meta: {}, currentRound: 0, totalRounds: 1 };
const FLOATS = 1 << 18; // 1 MiB of float32 per result

test("a finished task's result is not kept by the site: 40 results of 1 MiB leave its memory flat", { timeout: 60_000 }, async () => {
  const hub = new InMemoryHub();
  const server = new ServerRuntime(hub, { jobId: 'task-memory' });
  server.start();
  const runner = new ClientRunner(hub.connect('site-1'), {
    site: 'site-1',
    executor: {
      '*': async (task) => ({ info: task.info, params: dictToStream(new Map([['w', f32([FLOATS], new Float32Array(FLOATS).fill(1))]])) }),
    },
  });
  const running = runner.run();
  const round = async (): Promise<void> => {
    const r = await server.sendTo('site-1', { name: 'train', info, params: null }, 10_000);
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal((await streamToDict(r.params!)).get('w')!.data.length, FLOATS);
  };
  try {
    await server.waitForSites(1, 5000);
    for (let i = 0; i < 5; i++) await round(); // warm-up
    const before = await settledMB();
    for (let i = 0; i < 40; i++) await round();
    const after = await settledMB();
    console.log(JSON.stringify({ arrayBuffersMBBefore: +before.toFixed(1), arrayBuffersMBAfter40Tasks: +after.toFixed(1) }));
    assert.ok(after - before < 8, `ArrayBuffer memory grew ${(after - before).toFixed(1)} MiB over 40 tasks of 1 MiB results`);
  } finally {
    await server.end('test over');
    await running;
    runner.close();
    await server.close();
  }
});
