// A deployment's server stores what its sites log in jobs.sqlite while the job runs;
// `flotilla admin <kit> metrics <job> --follow --csv` prints the rows as they come and exits when the job ends.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { FederationServer } from '../../../src/deploy/server.ts';
import { FederationSite } from '../../../src/deploy/site.ts';
import { parseProject } from '../../../src/provision/project.ts';
import { provision } from '../../../src/provision/provision.ts';
import { loadKit } from '../../../src/provision/kit.ts';
import { capture, freePortPair, repo, until } from '../../helpers/federation.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-tracking-admin-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test('admin metrics --follow --csv: rows while the job runs, all of them by its end, the same as the store', async () => {
  const port = await freePortPair();
  const project = parseProject({
    name: 'tracking',
    participants: [
      { type: 'server', name: 'server', org: 'hub', host: 'localhost', port },
      { type: 'client', name: 'site-1', org: 'a' },
      { type: 'admin', name: 'boss@hub.org', org: 'hub', role: 'project_admin' },
    ],
  });
  const kits = (await provision(project, { outDir: join(tmp, 'kits') })).kits;
  const server = new FederationServer({ kit: loadKit(kits.server!, 'server'), workspace: join(tmp, 'server'), log: capture().log });
  await server.start();
  const site = new FederationSite({ kit: loadKit(kits['site-1']!, 'client'), workspace: join(tmp, 'site-1'), log: capture().log });
  const running = site.run();
  const admin = new AdminClient(kits['boss@hub.org']!);
  try {
    await until('the site to connect', () => server.siteList().length === 1);
    const job = join(tmp, 'job');
    const gate = join(tmp, 'gate');
    cpSync(join(repo, 'test/fixtures/jobs/tracked'), job, { recursive: true });
    writeFileSync(
      join(job, 'job.yaml'),
      readFileSync(join(job, 'job.yaml'), 'utf8')
        .replace('minClients: 2', 'minClients: 1')
        .replace('steps: 3', `steps: 3\n      gate: ${JSON.stringify(gate)}`),
    );
    const jobId = await admin.submit(job);

    const child = spawn(
      process.execPath,
      [join(repo, 'bin/flotilla.js'), 'admin', kits['boss@hub.org']!, 'metrics', jobId, '--follow', '--csv'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    let err = '';
    let endedAt = 0;
    const firstRowAt: { at: number } = { at: 0 };
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!firstRowAt.at && out.includes(',step_loss,')) {
        firstRowAt.at = Date.now();
        writeFileSync(gate, ''); // round 1 may run now: the rows of round 0 were printed while the job ran
      }
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', r));
    await until(
      'the job to end',
      () => {
        const s = server.store.get(jobId)?.state;
        if (s === 'FINISHED' || s === 'FAILED') endedAt ||= Date.now();
        return endedAt > 0;
      },
      60_000,
    );
    assert.equal(await exited, 0, err);
    assert.ok(firstRowAt.at > 0 && firstRowAt.at < endedAt, `a row was printed while the job ran (${firstRowAt.at} < ${endedAt})`);

    const lines = out.trim().split('\n');
    assert.equal(lines[0], 'id,job,site,round,step,kind,key,value,time');
    const stored = (await admin.call('metrics', { job: jobId })).rows;
    assert.equal(lines.length - 1, stored.length, out);
    assert.deepEqual(
      lines.slice(1).map((l) => l.split(',').slice(0, 8).join(',')),
      stored.map((r) => [r.id, jobId, r.site || 'server', r.round ?? '', r.step ?? '', r.kind, r.key, r.value ?? r.text].join(',')),
    );
    assert.equal(stored.filter((r) => r.key === 'step_loss').length, 6, '3 steps × 2 rounds');
    assert.deepEqual(
      stored.filter((r) => r.kind === 'param').map((r) => [r.key, r.text]),
      [
        ['rate', '0.5'],
        ['steps', '3'],
        ['target', '1'],
        ['optimizer', 'toward-target'],
        ['shuffle', 'false'],
      ],
    );
    // paging: after the first row's id, limit 2
    const page = await admin.call('metrics', { job: jobId, after: stored[0]!.id, limit: 2 });
    assert.deepEqual(
      page.rows.map((r) => r.id),
      stored.slice(1, 3).map((r) => r.id),
    );
    assert.equal(page.lastId, stored[2]!.id);
  } finally {
    admin.close();
    site.stop('test over');
    await running;
    await server.stop();
  }
});
