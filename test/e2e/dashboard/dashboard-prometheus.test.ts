// The server's /metrics scraped by a real Prometheus (Debian's `prometheus`, started here with a
// config and storage of its own on loopback; over plain HTTP, and over the dashboard's HTTPS with a
// bearer token and the project CA) while a federation of two sites over mutual TLS runs
// a three-round job; PromQL then answers with the job's rounds, bytes per site and direction,
// sites, jobs by state and the process' memory.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { encodedBytes } from '../../../src/core/tensor-stream.ts';
import { dictSource } from '../../../src/core/model-source.ts';
import { f32 } from '../../../src/core/tensor.ts';
import { tinyJob, until } from '../../helpers/federation.ts';
import { observedFederation, promQuery, startPrometheus } from '../../helpers/observed.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-prom-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('a real Prometheus scrapes /metrics of a running federation and answers PromQL with the job', { timeout: 30_000 }, async () => {
  const fed = await observedFederation(join(tmp, 'fed'), {
    metrics: { host: '127.0.0.1', port: 0 },
    dashboard: { host: '127.0.0.1', port: 0 },
  });
  let prom: Awaited<ReturnType<typeof startPrometheus>> | null = null;
  try {
    // the plain HTTP endpoint, and the dashboard's HTTPS /metrics with a member's dashboard token and the project CA
    const { token } = await fed.admin('viewer').call('dashboard-token');
    prom = await startPrometheus(join(tmp, 'prom'), `127.0.0.1:${fed.server.metricsPort}`, {
      target: `127.0.0.1:${fed.server.dashboardPort}`,
      token,
      caFile: join(fed.kits.server!, 'startup', 'rootCA.pem'),
      serverName: 'localhost',
    });
    const p = prom;
    // the target is up before the job is submitted
    let up: { value: number }[] = [];
    await until(
      'the first scrape',
      () => {
        void promQuery(p.url, 'up').then(
          (r) => (up = r),
          () => undefined,
        );
        return up.length === 2 && up.every((u) => u.value === 1);
      },
      10_000,
    );
    const boss = fed.admin('boss');
    const id = await boss.submit(tinyJob(join(tmp, 'job'), { rounds: 3, sleepMs: 300 }));
    await until('the job to finish', () => fed.server.store.get(id)?.state === 'FINISHED', 20_000);

    // every query is retried until a scrape after the job's end has landed
    const q = async (query: string, ok: (r: { metric: Record<string, string>; value: number }[]) => boolean) => {
      let last: { metric: Record<string, string>; value: number }[] = [];
      await until(
        `${query} (last: ${JSON.stringify(last)})`,
        () => {
          void promQuery(p.url, query).then(
            (r) => (last = r),
            () => undefined,
          );
          return ok(last);
        },
        8_000,
      );
      return last;
    };
    const one = (r: { value: number }[]): number | undefined => (r.length === 1 ? r[0]!.value : undefined);

    const rounds = await q(
      'sum by (job) (flotilla_rounds_completed_total{job_name="tiny"})',
      (r) => r.length === 2 && r.every((s) => s.value === 3),
    );
    // both scrape jobs read the same server: over HTTP, and over HTTPS with the token
    assert.deepEqual(rounds.map((s) => [s.metric.job, s.value]).sort(), [
      ['flotilla', 3],
      ['flotilla-https', 3],
    ]);
    assert.equal(one(await q('sum(flotilla_round_duration_seconds_count{job="flotilla",job_name="tiny"})', (r) => one(r) === 3)), 3);
    // each round took at least the trainers' 300 ms
    const slowest = one(await q('max(flotilla_round_duration_seconds_sum{job="flotilla"}) / 3', (r) => r.length === 1));
    assert.ok(slowest! >= 0.3, `mean round ${slowest} s`);
    // bytes per site and direction: 3 tasks of the 4-float model sent to each site, 3 results of the same size back
    const modelBytes = encodedBytes(dictSource(new Map([['w', f32([4], [0, 0, 0, 0])]])).header);
    const bytes = await q('flotilla_transfer_bytes_total{job="flotilla"}', (r) => r.length === 4);
    const bySite = Object.fromEntries(bytes.map((s) => [`${s.metric.site}/${s.metric.direction}`, s.value]));
    console.log(JSON.stringify({ modelBytes, bySite }));
    assert.deepEqual(bySite, {
      'site-1/sent': 3 * modelBytes,
      'site-1/received': 3 * modelBytes,
      'site-2/sent': 3 * modelBytes,
      'site-2/received': 3 * modelBytes,
    });
    assert.equal(one(await q('flotilla_connected_sites{job="flotilla"}', (r) => one(r) === 2)), 2);
    assert.equal(one(await q('flotilla_jobs{job="flotilla",state="FINISHED"}', (r) => one(r) === 1)), 1);
    assert.equal(one(await q('sum(flotilla_transfers_in_flight{job="flotilla"})', (r) => one(r) === 0)), 0);
    assert.equal(one(await q('sum(flotilla_result_failures_total{job="flotilla"})', (r) => r.length <= 1)) ?? 0, 0);
    const rss = one(await q('process_resident_memory_bytes{job="flotilla"}', (r) => r.length === 1));
    assert.ok(rss! > 20e6, `resident memory ${rss}`);
  } catch (e) {
    console.error(prom?.log() ?? '', fed.lines.join(''));
    throw e;
  } finally {
    await prom?.stop();
    await fed.stop();
  }
});
