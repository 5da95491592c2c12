// "round done" is said only of a durable round: when a workflow logs a round done, the job's
// progress.json already names that round, so a server killed right after the line resumes after that
// round, not before it (a kill in that gap once made a restarted job run its last round again). Checked
// for FedAvg and cyclic, whose rounds the chain persists, with two in-process sites on a ServerRuntime:
// at each "round done" line the progress file is read synchronously, in the logger's own write.
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import pino from 'pino';
import type { Trainer } from '../../../src/client/api.ts';
import { InProcessTrainerHost } from '../../../src/client/host/in-process-host.ts';
import { ModelRef } from '../../../src/core/model-ref.ts';
import { f32 } from '../../../src/core/tensor.ts';
import { ServerRuntime } from '../../../src/runtime/controller.ts';
import { loadJob } from '../../../src/runtime/job.ts';
import { runSite } from '../../../src/runtime/site.ts';
import { ServerWorkspace } from '../../../src/runtime/workspace.ts';
import { InMemoryHub } from '../../../src/transport/in-memory.ts';
import { silentLogger } from '../../../src/util/log.ts';
import { readProgress } from '../../../src/workflows/progress.ts';
import { runWorkflows } from '../../../src/workflows/run-job.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-round-durable-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const SITES = ['a', 'b'];

const trainer: Trainer = async (flare) => {
  await flare.init();
  while (flare.isRunning()) {
    const m = await flare.receive();
    if (!m) break;
    const w = m.params.get('w')!.data as Float32Array;
    await flare.send({ ...m, params: new Map([['w', f32([2], [w[0]! + 1, w[1]! + 1])]]), meta: { numSamples: 1 } });
  }
};

for (const workflow of ['fedavg', 'cyclic'] as const)
  test(`${workflow}: progress.json names a round before the round is logged done`, async () => {
    const dir = join(tmp, workflow);
    cpSync(join(import.meta.dirname, '../../fixtures/jobs/tiny'), join(dir, 'job'), { recursive: true });
    const yaml = join(dir, 'job', 'job.yaml');
    writeFileSync(yaml, readFileSync(yaml, 'utf8').replace('type: fedavg\n    rounds: 3', `type: ${workflow}\n    rounds: 4`));
    const job = loadJob(join(dir, 'job'));
    const serverDir = new ServerWorkspace(join(dir, 'ws')).serverDir;
    // [round logged done, the round progress.json held at that moment]
    const seen: [number, number | null][] = [];
    const log = pino(
      { level: 'info' },
      {
        write(line: string) {
          const e = JSON.parse(line) as { msg: string; round?: number };
          if (e.msg === 'round done') seen.push([e.round!, readProgress(serverDir)?.round ?? null]);
        },
      },
    );
    const hub = new InMemoryHub();
    const server = new ServerRuntime(hub, { jobId: 'durable', log: silentLogger() });
    server.start();
    const sites = SITES.map((site) =>
      runSite(hub.connect(site), {
        site,
        jobId: 'durable',
        workspace: join(dir, site),
        host: new InProcessTrainerHost(trainer, { stopTimeoutMs: 1_000 }),
        log: silentLogger(),
      }),
    );
    try {
      await server.waitForSites(SITES.length, 30_000);
      const ctx = { controller: server, workspace: new ServerWorkspace(join(dir, 'ws')), log };
      const out = await runWorkflows(job, ModelRef.memory(new Map([['w', f32([2], [0, 0])]])), ctx);
      assert.equal(out.rounds.length, 4);
    } finally {
      await server.end('done').catch(() => undefined);
      await server.close().catch(() => undefined);
      await Promise.allSettled(sites);
    }
    assert.deepEqual(seen, [
      [0, 0],
      [1, 1],
      [2, 2],
      [3, 3],
    ]);
  });
