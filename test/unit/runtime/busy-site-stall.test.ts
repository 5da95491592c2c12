// A site busy with one task while the server sends it the next: the next task's payload waits,
// unread, in the site's channel (tasks run one at a time) for longer than the stall timeout. The
// site is alive (it heartbeats, and its channel says it holds the bytes), so the transfer must not
// fail as a stall; a site that is gone still fails it after the stall timeout.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { FLModelInfo } from '../../../src/core/fl-model.ts';
import { dictSource } from '../../../src/core/model-source.ts';
import { f32 } from '../../../src/core/tensor.ts';
import { streamToDict } from '../../../src/core/tensor-stream.ts';
import { ServerRuntime } from '../../../src/runtime/controller.ts';
import { ClientRunner } from '../../../src/runtime/executor.ts';
import { InMemoryHub } from '../../../src/transport/in-memory.ts';

const STALL_MS = 300;
const info = (meta: Record<string, string>): FLModelInfo => ({ paramsType: 'FULL', metrics: {}, meta, currentRound: 0, totalRounds: 1 });
const model = () => dictSource(new Map([['w', f32([1024], new Float32Array(1024).fill(1))]]));

test('a task queued behind a long one at a live site is not failed as a stall of its payload', async () => {
  const hub = new InMemoryHub();
  const server = new ServerRuntime(hub, { jobId: 'busy-1', channel: { stallTimeoutMs: STALL_MS } });
  server.start();
  const runner = new ClientRunner(hub.connect('site-1'), {
    site: 'site-1',
    heartbeatMs: 100,
    channel: { stallTimeoutMs: STALL_MS },
    executor: {
      '*': async (task) => {
        if (task.info.meta.kind === 'long') await new Promise((r) => setTimeout(r, STALL_MS * 5));
        const w = task.params ? (await streamToDict(task.params)).get('w') : undefined;
        return { info: { ...task.info, metrics: { done: 1, size: w?.data.length ?? 0 } }, params: null };
      },
    },
  });
  const site = runner.run();
  try {
    await server.waitForSites(1, 5000);
    const [a, b] = await Promise.all([
      server.sendTo('site-1', { name: 'train', info: info({ kind: 'long' }), params: model() }, 10_000),
      server.sendTo('site-1', { name: 'train', info: info({ kind: 'next' }), params: model() }, 10_000),
    ]);
    assert.equal(a.ok, true, JSON.stringify(a));
    assert.equal(b.ok, true, JSON.stringify(b));
    // the queued task's model arrived whole, read after the long task had run five stall timeouts
    assert.equal((b as { info: FLModelInfo }).info.metrics.size, 1024);
  } finally {
    await server.end('test over');
    await site;
    await server.close();
  }
});
