// A slow site is not a dead one: with a job heartbeat timeout of 0.5 s, a trainer that takes 2 s per
// task still answers, because its runner heartbeats from its own timer at the pace the server asked
// for at registration (its default pace, 10 s, would get it dropped here).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { ClientAPI } from '../../../src/client/api.ts';
import { InProcessTrainerHost } from '../../../src/client/host/in-process-host.ts';
import type { FLModelInfo } from '../../../src/core/fl-model.ts';
import { ServerRuntime } from '../../../src/runtime/controller.ts';
import { runSite } from '../../../src/runtime/site.ts';
import { InMemoryHub } from '../../../src/transport/in-memory.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-fault-slow-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const info: FLModelInfo = { paramsType: 'FULL', metrics: {}, meta: {}, currentRound: 0, totalRounds: 1 };

test('a site slower than the heartbeat timeout but alive is kept in the job', async () => {
  const hub = new InMemoryHub();
  const server = new ServerRuntime(hub, { jobId: 'slow', heartbeatTimeoutMs: 500 });
  server.start();
  const slow = async (flare: ClientAPI): Promise<void> => {
    await flare.init();
    for (let m = await flare.receive(); m; m = await flare.receive()) {
      await new Promise((r) => setTimeout(r, 2000));
      await flare.send({ ...m, params: new Map(), metrics: { slow: 1 } });
    }
  };
  const site = runSite(hub.connect('site-1'), {
    site: 'site-1',
    jobId: 'slow',
    workspace: join(tmp, 's1'),
    host: new InProcessTrainerHost(slow),
  });
  try {
    await server.waitForSites(1, 5000);
    const r = await server.sendTo('site-1', { name: 'train', info, params: null });
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.deepEqual(server.sites(), ['site-1'], 'still in the job after a task four timeouts long');
  } finally {
    await server.end('test over');
    await site.catch(() => undefined);
    await server.close();
  }
});
