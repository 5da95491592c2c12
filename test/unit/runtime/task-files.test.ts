// A site's per-task files (params: file) are removed however the task ends, through the real runtime
// (ServerRuntime and runSite over a channel, an in-process trainer reading and writing real files):
// answered, cancelled by the server after its timeout, failed at the site (a non-finite metric), failed
// by the trainer, and cut off half-way through its model's transfer.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { ClientAPI } from '../../../src/client/api.ts';
import { InProcessTrainerHost } from '../../../src/client/host/in-process-host.ts';
import type { FLModelInfo } from '../../../src/core/fl-model.ts';
import { type ModelSource, dictSource } from '../../../src/core/model-source.ts';
import { SafetensorsFile, writeSafetensors } from '../../../src/core/safetensors.ts';
import { f32 } from '../../../src/core/tensor.ts';
import { ServerRuntime } from '../../../src/runtime/controller.ts';
import { runSite } from '../../../src/runtime/site.ts';
import { InMemoryHub } from '../../../src/transport/in-memory.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-task-files-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const info = (kind: string): FLModelInfo => ({ paramsType: 'FULL', metrics: {}, meta: { kind }, currentRound: 0, totalRounds: 1 });
// 1 MiB of float32: big enough that the transfer is several pieces
const model = (): ModelSource => dictSource(new Map([['w', f32([512, 512], new Float32Array(512 * 512).fill(1))]]));

/** A source whose stream breaks after its first piece, as a server dying half-way through a send. */
function brokenSource(): ModelSource {
  const src = model();
  return {
    header: src.header,
    open: () => {
      const s = src.open(64 << 10);
      return {
        header: s.header,
        async *pieces() {
          let n = 0;
          for await (const p of s.pieces()) {
            if (n++ === 2) throw new Error('the sender broke off');
            yield p;
          }
        },
      };
    },
  };
}

async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a task in file mode leaves no files at the site whether it is answered, cancelled, failed at the site, failed by the trainer or cut off', async () => {
  const hub = new InMemoryHub();
  const server = new ServerRuntime(hub, { jobId: 'files-1' });
  server.start();
  const workspace = join(tmp, 'site-1');
  const tasks = join(workspace, 'tasks');
  const inputs: string[] = [];
  const trainer = async (flare: ClientAPI): Promise<void> => {
    await flare.init();
    for (;;) {
      const m = await flare.receive();
      if (!m) return;
      assert.ok(m.paramsPath, 'the task came as a file');
      inputs.push(m.paramsPath);
      const input = await SafetensorsFile.open(m.paramsPath);
      await input.close();
      const kind = m.meta.kind;
      if (kind === 'throw') throw new Error('the trainer broke');
      if (kind === 'slow') {
        // waits for the cancel, then back to receive() without an answer
        const signal = flare.taskSignal();
        await new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));
        continue;
      }
      const out = join(m.paramsPath, '..', 'result.safetensors');
      await writeSafetensors(out, new Map([['w', f32([2], [1, 2])]]));
      await flare.send({ ...m, params: new Map(), paramsPath: out, metrics: kind === 'nan' ? { loss: NaN } : { loss: 1 } });
    }
  };
  const site = runSite(hub.connect('site-1'), {
    site: 'site-1',
    jobId: 'files-1',
    workspace,
    params: 'file',
    host: new InProcessTrainerHost(trainer),
  });
  const leftovers = (): string[] => (existsSync(tasks) ? readdirSync(tasks) : []);
  try {
    await server.waitForSites(1, 5000);

    const ok = await server.sendTo('site-1', { name: 'train', info: info('ok'), params: model() }, 10_000);
    assert.equal(ok.ok, true, JSON.stringify(ok));
    assert.ok(ok.ok && ok.params);
    if (ok.ok) ok.discard();
    assert.equal(inputs.length, 1);
    assert.match(inputs[0]!, /site-1\/tasks\/[^/]+\/input\.safetensors$/);
    await until('the answered task files to go', () => leftovers().length === 0);

    const slow = await server.sendTo('site-1', { name: 'train', info: info('slow'), params: model() }, 300);
    assert.equal(slow.ok, false);
    assert.match((slow as { error: string }).error, /timed out after 300 ms/);
    assert.ok(existsSync(inputs[1]!) || leftovers().length === 0, 'the cancelled task had its input while it ran');
    await until('the cancelled task files to go', () => leftovers().length === 0);

    const nan = await server.sendTo('site-1', { name: 'train', info: info('nan'), params: model() }, 10_000);
    assert.equal(nan.ok, false);
    assert.match((nan as { error: string }).error, /not finite numbers \("loss" is NaN\)/);
    await until('the failed task files to go', () => leftovers().length === 0);

    const cut = await server.sendTo('site-1', { name: 'train', info: info('ok'), params: brokenSource() }, 3000);
    assert.equal(cut.ok, false, 'a task whose model never arrived whole fails');
    await until('the cut-off task files to go', () => leftovers().length === 0);
    assert.equal(inputs.length, 3, 'the trainer never saw the cut-off task');

    const thrown = await server.sendTo('site-1', { name: 'train', info: info('throw'), params: model() }, 10_000);
    assert.equal(thrown.ok, false);
    assert.match((thrown as { error: string }).error, /the trainer broke/);
    await until('the thrown task files to go', () => leftovers().length === 0);
    for (const p of inputs) assert.equal(existsSync(p), false, `${p} removed`);
    assert.ok(statSync(workspace).isDirectory(), 'the workspace itself stays');
  } finally {
    await server.end('test over');
    await site;
    await server.close();
  }
});
