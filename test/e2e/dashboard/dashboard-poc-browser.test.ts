// The dashboard of a running POC job in a real browser, through the CLI as a user would run it:
// `flotilla poc prepare`, `poc start --dashboard-port`, the link `flotilla admin <kit> dashboard-token`
// prints, opened in Debian's Chromium (playwright-core). The job's per-round plot gains points while
// rounds complete; a member's token (the POC has one admin: signed here with the server's own
// dashboard key) is refused the abort, and the POC admin's aborts the job from the page.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { type Browser, type Page, chromium } from 'playwright-core';
import { TokenSigner } from '../../../src/dashboard/token.ts';
import { freePort, freePortPair, tinyJob } from '../../helpers/federation.ts';
import { type JobStatus, flotilla, flotillaAsync, killPoc, waitForJobEnd, waitForSites } from '../../helpers/poc.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-dashboard-poc-'));
const ws = join(tmp, 'poc');
after(() => {
  killPoc(ws);
  rmSync(tmp, { recursive: true, force: true });
});

const points = async (page: Page, metric: string, source: string): Promise<number> =>
  Number((await page.getAttribute(`.chart[data-metric="${metric}"][data-source="${source}"]`, 'data-points', { timeout: 15_000 })) ?? 0);

test(
  'a POC job in the browser: its plot gains points, a member is refused the abort, the admin aborts it',
  { timeout: 180_000 },
  async () => {
    const dashboardPort = await freePort();
    flotilla('poc', 'prepare', '--clients', '2', '-w', ws, '-p', String(await freePortPair()));
    assert.match(
      await flotillaAsync('poc', 'start', '-w', ws, '--dashboard-port', String(dashboardPort)),
      /Dashboard at https:\/\/localhost:/,
    );
    const admin = join(ws, 'poc', 'prod_01', 'admin@poc.example');
    let browser: Browser | null = null;
    try {
      assert.equal((await waitForSites(admin, 2)).length, 2);
      const printed = await flotillaAsync('admin', admin, 'dashboard-token');
      const link = /Open (https:\/\/localhost:\d+\/#token=\S+)/.exec(printed)?.[1];
      assert.ok(link, printed);
      assert.ok(link.startsWith(`https://localhost:${dashboardPort}/`));
      const { server } = JSON.parse(readFileSync(join(ws, 'poc.json'), 'utf8')) as { server: string };
      const member = TokenSigner.open(join(server, 'workspace', 'dashboard.key')).issue({
        name: 'viewer@poc.example',
        org: 'poc',
        role: 'member',
      }).token;

      const submitted = await flotillaAsync('admin', admin, 'submit', tinyJob(join(tmp, 'job'), { rounds: 300, sleepMs: 300 }));
      const id = /(tiny-[0-9a-f]+)/.exec(submitted)?.[1];
      assert.ok(id, submitted);

      browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
      // Chromium does not know the POC's CA (the in-process browser test checks the certificate against it)
      const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
      const page = await context.newPage();
      page.on('dialog', (d) => void d.accept());
      await page.goto(link);
      await page.waitForSelector(`tr[data-job="${id}"]`, { timeout: 30_000 });
      await page.goto(`https://localhost:${dashboardPort}/#/job/${encodeURIComponent(id)}`);
      await page.waitForSelector('#job-state:text("RUNNING")', { timeout: 30_000 });
      await page.waitForSelector('.chart[data-metric="loss"][data-source="result"]', { timeout: 60_000 });
      const first = await points(page, 'loss', 'result');
      let later = first;
      for (const deadline = Date.now() + 30_000; later <= first && Date.now() < deadline;) {
        await page.waitForTimeout(300);
        later = await points(page, 'loss', 'result');
      }
      assert.ok(later > first, `the plot went from ${first} to ${later} points`);

      // the member's page: the abort is refused by the server, the job runs on
      const viewer = await context.newPage();
      viewer.on('dialog', (d) => void d.accept());
      await viewer.goto(`https://localhost:${dashboardPort}/#token=${member}`);
      await viewer.goto(`https://localhost:${dashboardPort}/#/job/${encodeURIComponent(id)}`);
      await viewer.waitForSelector('#job-state:text("RUNNING")', { timeout: 30_000 });
      await viewer.click('#abort');
      await viewer.waitForSelector('.toast.bad:text("permission denied")', { timeout: 30_000 });
      assert.equal((JSON.parse(await flotillaAsync('admin', admin, 'status', id, '--json')) as JobStatus).state, 'RUNNING');

      // the POC admin (project_admin) aborts it, from a page opened with the printed link
      const boss = await context.newPage();
      boss.on('dialog', (d) => void d.accept());
      await boss.goto(link);
      await boss.goto(`https://localhost:${dashboardPort}/#/job/${encodeURIComponent(id)}`);
      await boss.waitForSelector('#job-state:text("RUNNING")', { timeout: 30_000 });
      await boss.click('#abort');
      await boss.waitForSelector('#job-state:text("ABORTED")', { timeout: 30_000 });
      const end = await waitForJobEnd(admin, id, 30_000);
      assert.equal(end.state, 'ABORTED');
      assert.match(end.detail ?? '', /aborted by admin@poc\.example/);
    } finally {
      await browser?.close();
      await flotillaAsync('poc', 'stop', '-w', ws).catch(() => killPoc(ws));
    }
  },
);
