// Transfers in flight as the dashboard's API and /metrics show them while a 96 MiB model moves
// between the server and a site over mutual TLS: bytes of the total, a rate and an ETA, the
// in-flight gauge at 1; and nothing in flight once the job is over.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { TransferView } from '../../../src/dashboard/telemetry.ts';
import { observedFederation } from '../../helpers/observed.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-dashboard-transfers-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const FLOATS = (96 * 2 ** 20) / 4;

function bigJob(dir: string): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), '{ "type": "module" }\n');
  writeFileSync(
    join(dir, 'job.yaml'),
    'name: big\nminClients: 1\nmodel:\n  module: trainer.ts\n  export: initialModel\nworkflows:\n  - type: fedavg\n    rounds: 2\nexecutor:\n  trainer:\n    module: trainer.ts\n    factory: createTrainer\n',
  );
  writeFileSync(
    join(dir, 'trainer.ts'),
    `import { f32 } from 'flotilla/core';
export function createTrainer() {
  return async (flare) => {
    await flare.init();
    while (flare.isRunning()) {
      const m = await flare.receive();
      if (!m) break;
      await flare.send({ params: m.params, paramsType: 'FULL', metrics: {}, meta: { numSamples: 1 }, currentRound: m.currentRound, totalRounds: m.totalRounds });
    }
  };
}
export function initialModel() {
  return new Map([['w', f32([${FLOATS}], new Float32Array(${FLOATS}).fill(0.5))]]);
}
`,
  );
  return dir;
}

function get(port: number, path: string, ca: string, token: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, ca, servername: 'localhost', headers: { authorization: `Bearer ${token}` } },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve(body));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

test(
  'a model moving shows as a transfer in flight: bytes of its total, rate, ETA; the gauge at 1; none after the job',
  { timeout: 120_000 },
  async () => {
    const fed = await observedFederation(join(tmp, 'fed'), { dashboard: { host: '127.0.0.1', port: 0, tickMs: 100 } }, ['site-1']);
    try {
      const port = fed.server.dashboardPort!;
      const ca = readFileSync(join(fed.kits.server!, 'startup', 'rootCA.pem'), 'utf8');
      const { token } = await fed.admin('viewer').call('dashboard-token');
      const id = await fed.admin('boss').submit(bigJob(join(tmp, 'job')));
      const seen: TransferView[] = [];
      let gauge = 0;
      const ended = (): boolean => ['FINISHED', 'FAILED'].includes(fed.server.store.get(id)?.state ?? '');
      while (!ended()) {
        const { transfers } = JSON.parse(await get(port, '/api/overview', ca, token)) as { transfers: TransferView[] };
        seen.push(...transfers.filter((t) => t.bytes > 0 && t.total !== null && t.bytes < t.total));
        const m = /^flotilla_transfers_in_flight\{direction="(sent|received)"\} (\d+)$/gm;
        for (const [, , n] of (await get(port, '/metrics', ca, token)).matchAll(m)) gauge = Math.max(gauge, Number(n));
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(fed.server.store.get(id)?.state, 'FINISHED');
      assert.ok(seen.length > 0, 'a transfer was seen part way');
      const t = seen[0]!;
      assert.equal(t.job, id);
      assert.equal(t.site, 'site-1');
      assert.ok(t.total! >= FLOATS * 4, `total ${t.total}`);
      assert.ok(t.bytesPerSecond > 0 && t.etaSeconds !== null && t.etaSeconds > 0, JSON.stringify(t));
      assert.equal(gauge, 1, 'the in-flight gauge counted the transfer');
      assert.ok(
        seen.some((s) => s.bytes > 2 ** 20 && s.bytes < s.total!),
        'seen part way past its first MiB',
      );
      const directions = new Set(seen.map((s) => s.direction));
      console.log(JSON.stringify({ seen: seen.length, directions: [...directions], first: t }));
      let left: TransferView[] = [];
      for (const deadline = Date.now() + 10_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) {
        left = (JSON.parse(await get(port, '/api/overview', ca, token)) as { transfers: TransferView[] }).transfers;
        if (!left.length) break;
      }
      assert.deepEqual(left, [], 'nothing in flight after the job');
    } catch (e) {
      console.error(fed.lines.slice(-30).join(''));
      throw e;
    } finally {
      await fed.stop();
    }
  },
);
