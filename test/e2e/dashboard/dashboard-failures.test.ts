// Result failures by reason on /metrics: a site whose trainer throws in the last round fails its
// result there; the round completes with the other site (minClients 1), the job FINISHES, and
// flotilla_result_failures_total counts one failure with reason "error" (none of the others).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { tinyJob, until } from '../../helpers/federation.ts';
import { observedFederation } from '../../helpers/observed.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-dashboard-failures-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const scrape = (port: number): Promise<string> =>
  new Promise((resolve, reject) => {
    get(`http://127.0.0.1:${port}/metrics`, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });

test('a site whose trainer throws: flotilla_result_failures_total{reason="error"} counts it', { timeout: 90_000 }, async () => {
  const fed = await observedFederation(join(tmp, 'fed'), { metrics: { host: '127.0.0.1', port: 0 } });
  try {
    const job = tinyJob(join(tmp, 'job'), { minClients: 1, rounds: 2 });
    const trainer = join(job, 'trainer.ts');
    writeFileSync(
      trainer,
      readFileSync(trainer, 'utf8').replace(
        'const w = m.params',
        "if (ctx.siteIndex === 1 && m.currentRound === 1) throw new Error('site-2 fails round 1 on purpose');\n      const w = m.params",
      ),
    );
    const id = await fed.admin('boss').submit(job);
    await until('the job to end', () => ['FINISHED', 'FAILED'].includes(fed.server.store.get(id)?.state ?? ''), 60_000);
    const rec = fed.server.store.get(id)!;
    assert.equal(rec.state, 'FINISHED', rec.detail ?? undefined);
    const rounds = (rec.result as { rounds: { round: number; failures: Record<string, string> }[] }).rounds;
    assert.deepEqual(rounds[0]!.failures, {});
    assert.deepEqual(Object.keys(rounds[1]!.failures), ['site-2']);
    assert.match(rounds[1]!.failures['site-2']!, /on purpose/);
    const body = await scrape(fed.server.metricsPort!);
    const counted = [...body.matchAll(/^flotilla_result_failures_total\{reason="([a-z_]+)"\} (\d+)$/gm)].map(([, r, n]) => [r, Number(n)]);
    assert.deepEqual(
      counted,
      [['error', 1]],
      body
        .split('\n')
        .filter((l) => l.includes('failures'))
        .join('\n'),
    );
  } catch (e) {
    console.error(fed.lines.slice(-30).join(''));
    throw e;
  } finally {
    await fed.stop();
  }
});
