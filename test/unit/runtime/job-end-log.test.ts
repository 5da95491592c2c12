// A job's normal end is not a dropout: sites that leave after end() with nothing pending are logged at
// info ("site left the ended job"), while a site whose link breaks during the job is still warned of as
// dropped, with its pending task failed.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import pino from 'pino';
import type { ClientAPI } from '../../../src/client/api.ts';
import { InProcessTrainerHost } from '../../../src/client/host/in-process-host.ts';
import type { FLModelInfo } from '../../../src/core/fl-model.ts';
import { ServerRuntime } from '../../../src/runtime/controller.ts';
import { runSite } from '../../../src/runtime/site.ts';
import { InMemoryHub } from '../../../src/transport/in-memory.ts';
import { silentLogger } from '../../../src/util/log.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-job-end-log-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const info: FLModelInfo = { paramsType: 'FULL', metrics: {}, meta: {}, currentRound: 0, totalRounds: 1 };
const echo = async (flare: ClientAPI): Promise<void> => {
  await flare.init();
  for (let m = await flare.receive(); m; m = await flare.receive()) await flare.send({ ...m, params: new Map(), metrics: { ok: 1 } });
};
/** What the server logged: [level, msg, site]. */
function capture(): { log: pino.Logger; lines: [number, string, string | undefined][] } {
  const lines: [number, string, string | undefined][] = [];
  const log = pino(
    { level: 'info' },
    {
      write(line: string) {
        const e = JSON.parse(line) as { level: number; msg: string; site?: string };
        lines.push([e.level, e.msg, e.site]);
      },
    },
  );
  return { log, lines };
}
const WARN = 40;
const INFO = 30;

test('sites leaving a job after its end are logged as leaving, not as dropped', async () => {
  const hub = new InMemoryHub();
  const { log, lines } = capture();
  const server = new ServerRuntime(hub, { jobId: 'ends', log });
  server.start();
  const sites = ['site-1', 'site-2'].map((site) =>
    runSite(hub.connect(site), {
      site,
      jobId: 'ends',
      workspace: join(tmp, site),
      host: new InProcessTrainerHost(echo),
      log: silentLogger(),
    }),
  );
  await server.waitForSites(2, 5000);
  assert.equal((await server.sendTo('site-1', { name: 'train', info, params: null })).ok, true);
  await server.end('job over');
  await Promise.allSettled(sites);
  await new Promise((r) => setTimeout(r, 50));
  await server.close();
  const leaving = lines.filter(([, msg]) => msg === 'site left the ended job' || msg === 'site dropped from the job');
  assert.deepEqual(leaving.map(([level, msg, site]) => [level, msg, site]).sort(), [
    [INFO, 'site left the ended job', 'site-1'],
    [INFO, 'site left the ended job', 'site-2'],
  ]);
});

test('a site whose link breaks during the job is still warned of as dropped, its task failed', async () => {
  const hub = new InMemoryHub();
  const { log, lines } = capture();
  const server = new ServerRuntime(hub, { jobId: 'drops', log });
  server.start();
  const link = hub.connect('site-1');
  const hang = async (flare: ClientAPI): Promise<void> => {
    await flare.init();
    await flare.receive();
    link.close();
    await new Promise((r) => setTimeout(r, 10_000));
  };
  const site = runSite(link, {
    site: 'site-1',
    jobId: 'drops',
    workspace: join(tmp, 'd1'),
    host: new InProcessTrainerHost(hang),
    log: silentLogger(),
  });
  try {
    await server.waitForSites(1, 5000);
    const r = await server.sendTo('site-1', { name: 'train', info, params: null });
    assert.equal(r.ok, false);
    assert.ok(
      lines.some(([level, msg, s]) => level === WARN && msg === 'site dropped from the job' && s === 'site-1'),
      JSON.stringify(lines),
    );
  } finally {
    await server.end('test over');
    await server.close();
    await Promise.race([site.catch(() => undefined), new Promise((r) => setTimeout(r, 1000))]);
  }
});
