// The web dashboard in a real browser: Debian's Chromium driven by playwright-core opens the
// dashboard of a running federation (server over HTTPS with its own certificate, two sites over
// mutual TLS), sees a metric plot gain points while rounds complete, is refused an abort with a
// member's token, and aborts the job with a project admin's. Without a valid token nothing but the
// page itself is served. FLOTILLA_SCREENSHOTS=<dir> keeps the screenshots (docs/dashboard.md's).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { type Browser, type Page, chromium } from 'playwright-core';
import { tinyJob } from '../../helpers/federation.ts';
import { observedFederation } from '../../helpers/observed.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-dashboard-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const shots = process.env.FLOTILLA_SCREENSHOTS ?? join(tmp, 'shots');
mkdirSync(shots, { recursive: true });

/** GET over HTTPS trusting only the project's CA, for the name in the server's certificate. */
function get(port: number, path: string, ca: string, token?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, ca, servername: 'localhost', headers: token ? { authorization: `Bearer ${token}` } : {} },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

const points = async (page: Page, metric: string, source: string): Promise<number> =>
  Number((await page.getAttribute(`.chart[data-metric="${metric}"][data-source="${source}"]`, 'data-points', { timeout: 10_000 })) ?? 0);

test('the dashboard shows a live job, plots its rounds and enforces the role of the token on abort', { timeout: 90_000 }, async () => {
  const fed = await observedFederation(join(tmp, 'fed'), { dashboard: { host: '127.0.0.1', port: 0, tickMs: 200 } });
  let browser: Browser | null = null;
  try {
    const port = fed.server.dashboardPort!;
    const ca = readFileSync(join(fed.kits.server!, 'startup', 'rootCA.pem'), 'utf8');
    const boss = await fed.admin('boss').call('dashboard-token');
    const viewer = await fed.admin('viewer').call('dashboard-token');
    assert.equal(boss.role, 'project_admin');
    assert.equal(viewer.role, 'member');
    assert.equal(boss.dashboardPort, port);

    // the page is served over HTTPS with the server's certificate (verified against the project CA); no data without a token
    assert.equal((await get(port, '/', ca)).status, 200);
    for (const path of ['/api/overview', '/api/jobs/x', '/api/events', '/api/audit', '/metrics']) {
      assert.equal((await get(port, path, ca)).status, 401, `${path} without a token`);
      assert.equal((await get(port, path, ca, `${boss.token.slice(0, -3)}abc`)).status, 401, `${path} with a forged token`);
    }
    assert.match((await get(port, '/metrics', ca, boss.token)).body, /flotilla_connected_sites 2/);
    assert.equal((await get(port, '/api/audit', ca, viewer.token)).status, 403, 'a member reads no audit log');

    const id = await fed.admin('boss').submit(tinyJob(join(tmp, 'job'), { rounds: 30, sleepMs: 350 }));
    browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
    // Chromium does not know the project CA: the certificate itself was checked above
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    page.on('dialog', (d) => void d.accept());
    const base = `https://localhost:${port}/`;

    await page.goto(`${base}#token=${viewer.token}`);
    await page.waitForSelector(`tr[data-job="${id}"]`);
    await page.goto(`${base}#/job/${encodeURIComponent(id)}`);
    await page.waitForSelector('#job-state:text("RUNNING")');
    // the per-round plot of the sites' result metric gains points while rounds complete
    await page.waitForSelector('.chart[data-metric="loss"][data-source="result"]', { timeout: 15_000 });
    const first = await points(page, 'loss', 'result');
    const deadline = Date.now() + 10_000;
    let later = first;
    while (later <= first && Date.now() < deadline) {
      await page.waitForTimeout(200);
      later = await points(page, 'loss', 'result');
    }
    assert.ok(later > first, `the plot went from ${first} to ${later} points`);
    assert.ok((await points(page, 'loss', 'log')) >= 2, 'the logged metric is plotted too');

    // a member may not abort: the server refuses, the job runs on
    await page.click('#abort');
    await page.waitForSelector('.toast.bad:text("permission denied")');
    assert.equal(fed.server.store.get(id)?.state, 'RUNNING');
    await page.screenshot({ path: join(shots, 'dashboard-job.png'), fullPage: true });

    // a project admin may
    const admin = await context.newPage();
    admin.on('dialog', (d) => void d.accept());
    await admin.goto(`${base}#token=${boss.token}`);
    await admin.waitForSelector(`tr[data-job="${id}"] .badge.RUNNING`);
    await admin.waitForSelector('#audit td:text("dashboard-token")');
    // the sites table names the running job on each site
    for (const site of ['site-1', 'site-2']) await admin.waitForSelector(`tr[data-site="${site}"] td.mono:text("${id}")`);
    await admin.screenshot({ path: join(shots, 'dashboard-overview.png'), fullPage: true });
    await admin.goto(`${base}#/job/${encodeURIComponent(id)}`);
    await admin.waitForSelector('#job-state:text("RUNNING")');
    await admin.click('#abort');
    await admin.waitForSelector('#job-state:text("ABORTED")', { timeout: 10_000 });
    assert.equal(fed.server.store.get(id)?.state, 'ABORTED');
    assert.match(fed.server.store.get(id)?.detail ?? '', /aborted by boss@hub\.org/);
    // the HTTP API's metric rows are the tracking store's, from a row id on
    const stored = fed.server.store.tracking.all(id);
    assert.ok(stored.length >= 4);
    const api = (after: number) => get(port, `/api/jobs/${encodeURIComponent(id)}/metrics?after=${after}`, ca, viewer.token);
    assert.deepEqual(JSON.parse((await api(0)).body), stored);
    assert.deepEqual(JSON.parse((await api(stored[1]!.id)).body), stored.slice(2));
    assert.equal((await get(port, `/api/jobs/${encodeURIComponent(id)}/metrics`, ca)).status, 401);
    // download, the page's other action, has the admin command's policy too: a member is refused the
    // list and each file; the project admin gets the list and a file's bytes as the server has them
    const files = `/api/jobs/${encodeURIComponent(id)}/files`;
    const refused = await get(port, files, ca, viewer.token);
    assert.equal(refused.status, 403, refused.body);
    assert.match(refused.body, /permission denied/);
    assert.equal((await get(port, `${files}/log.jsonl`, ca, viewer.token)).status, 403);
    const listed = await get(port, files, ca, boss.token);
    assert.equal(listed.status, 200, listed.body);
    const names = (JSON.parse(listed.body) as { files: { path: string }[] }).files.map((f) => f.path);
    assert.ok(names.includes('log.jsonl'), names.join(', '));
    const serverDir = join(fed.server.jobsDir, id, 'workspace', 'server');
    const log = await get(port, `${files}/log.jsonl`, ca, boss.token);
    assert.equal(log.status, 200);
    assert.ok(log.body.length > 0 && readFileSync(join(serverDir, 'log.jsonl'), 'utf8').startsWith(log.body.slice(0, 200)));
    // both attempts are in the audit log, as the admin commands they are
    const audit = fed.server.store.auditLog().filter((a) => a.command === 'abort');
    assert.deepEqual(
      audit.map((a) => [a.user, a.allowed]),
      [
        ['viewer@hub.org', false],
        ['boss@hub.org', true],
      ],
    );
  } catch (e) {
    console.error(fed.lines.slice(-40).join(''));
    throw e;
  } finally {
    await browser?.close();
    await fed.stop();
  }
});
