// Task cancellation through the real runtime (ServerRuntime and a site's ClientRunner over a channel):
// a timed-out task and a broadcast's straggler are cancelled at the site; an in-process trainer sees
// its task's signal aborted; a handler that ignores the signal does not hold the site, which answers
// the next task at once.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { ClientAPI } from '../../../src/client/api.ts';
import { InProcessTrainerHost } from '../../../src/client/host/in-process-host.ts';
import type { FLModelInfo } from '../../../src/core/fl-model.ts';
import { ServerRuntime, type TaskResult } from '../../../src/runtime/controller.ts';
import { ClientRunner } from '../../../src/runtime/executor.ts';
import { runSite } from '../../../src/runtime/site.ts';
import { InMemoryHub } from '../../../src/transport/in-memory.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-fault-cancel-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const info = (meta: Record<string, string>): FLModelInfo => ({ paramsType: 'FULL', metrics: {}, meta, currentRound: 0, totalRounds: 1 });

test('a timed-out task is cancelled at the site: the in-process trainer sees the abort and the next task is answered at once', async () => {
  const hub = new InMemoryHub();
  const server = new ServerRuntime(hub, { jobId: 'cancel-1' });
  server.start();
  const seen: string[] = [];
  const trainer = async (flare: ClientAPI): Promise<void> => {
    await flare.init();
    for (;;) {
      const m = await flare.receive();
      if (!m) return;
      if (m.meta.kind === 'slow') {
        const signal = flare.taskSignal();
        await new Promise<void>((r) => {
          const t = setTimeout(r, 20_000);
          signal.addEventListener('abort', () => (clearTimeout(t), r()), { once: true });
        });
        seen.push(`slow aborted=${signal.aborted}: ${(signal.reason as Error | undefined)?.message ?? ''}`);
        continue; // back to receive() without send(): the task is gone
      }
      await flare.send({ ...m, params: new Map(), metrics: { answered: 1 } });
    }
  };
  const site = runSite(hub.connect('site-1'), {
    site: 'site-1',
    jobId: 'cancel-1',
    workspace: join(tmp, 's1'),
    host: new InProcessTrainerHost(trainer),
  });
  try {
    await server.waitForSites(1, 5000);
    const slow = await server.sendTo('site-1', { name: 'train', info: info({ kind: 'slow' }), params: null }, 300);
    assert.equal(slow.ok, false);
    assert.match((slow as { error: string }).error, /timed out after 300 ms/);
    const t0 = performance.now();
    const next: TaskResult = await server.sendTo('site-1', { name: 'train', info: info({ kind: 'fast' }), params: null }, 5000);
    const ms = performance.now() - t0;
    assert.equal(next.ok, true, JSON.stringify(next));
    assert.equal((next as { info: FLModelInfo }).info.metrics.answered, 1);
    assert.deepEqual(seen, ['slow aborted=true: task cancelled by the server: task train timed out after 300 ms']);
    console.log(JSON.stringify({ nextTaskAfterCancelMs: +ms.toFixed(1) }));
  } finally {
    await server.end('test over');
    await site;
    await server.close();
  }
});

test('a handler that ignores the cancel does not hold the site; a broadcast straggler is cancelled when the round has its results', async () => {
  const hub = new InMemoryHub();
  const server = new ServerRuntime(hub, { jobId: 'cancel-2' });
  server.start();
  const signals: AbortSignal[] = [];
  const runners = ['site-1', 'site-2'].map(
    (name) =>
      new ClientRunner(hub.connect(name), {
        site: name,
        executor: {
          '*': async (task, signal) => {
            signals.push(signal);
            // site-2 is slow at 'train' and never looks at its signal
            if (task.taskName === 'train' && name === 'site-2') await new Promise((r) => setTimeout(r, 4000));
            return { info: { ...task.info, metrics: { at: name === 'site-1' ? 1 : 2 } }, params: null };
          },
        },
      }),
  );
  const running = runners.map((r) => r.run());
  try {
    await server.waitForSites(2, 5000);
    const results: TaskResult[] = [];
    for await (const r of server.broadcast({ name: 'train', info: info({}), params: null }, { minResponses: 1, waitAfterMinMs: 100 }))
      results.push(r);
    assert.deepEqual(
      results.map((r) => [r.site, r.ok]),
      [['site-1', true]],
      'the round closed with site-1 only',
    );
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(signals.filter((s) => s.aborted).length, 1, "site-2's task was cancelled");
    const t0 = performance.now();
    const next = await server.sendTo('site-2', { name: 'validate', info: info({}), params: null }, 3000);
    const ms = performance.now() - t0;
    assert.equal(next.ok, true, 'site-2 answers the next task while its old handler still sleeps');
    console.log(JSON.stringify({ nextTaskWhileHandlerIgnoresCancelMs: +ms.toFixed(1) }));
  } finally {
    await server.end('test over');
    await Promise.allSettled(running);
    for (const r of runners) r.close();
    await server.close();
  }
});
