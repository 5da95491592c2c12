// `admin status` says what a job is doing: a queued job names why it waits ("waiting for 2 sites,
// 1 connected: site-1"), then runs once the second site connects, and the summary a person reads
// shows the state, the rounds and the history (a real server, sites and admin over mutual TLS).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { followJob, formatJobStatus } from '../../../src/cli/job-status.ts';
import { FINAL_STATES } from '../../../src/deploy/job-store.ts';
import { FederationServer } from '../../../src/deploy/server.ts';
import { FederationSite } from '../../../src/deploy/site.ts';
import { loadKit } from '../../../src/provision/kit.ts';
import { capture, tinyJob } from '../../helpers/federation.ts';
import { federationKits } from '../../helpers/fault.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-admin-status-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

test(
  'a queued job says which sites it waits for; running and finished, the summary shows rounds and history',
  { timeout: 60_000 },
  async () => {
    const k = await federationKits(join(tmp, 'kits'), 'status', 2);
    const server = new FederationServer({
      kit: loadKit(k.server!, 'server'),
      workspace: join(tmp, 'server'),
      host: '127.0.0.1',
      port: 0,
      log: capture().log,
    });
    const port = await server.start();
    const site = (name: string): FederationSite =>
      new FederationSite({ kit: loadKit(k[name]!, 'client'), workspace: join(tmp, name), host: '127.0.0.1', port, log: capture().log });
    const s1 = site('site-1');
    const s2 = site('site-2');
    const admin = new AdminClient(k['boss@hub.org']!, { host: '127.0.0.1', port });
    try {
      void s1.run();
      const deadlineSites = Date.now() + 20_000;
      while ((await admin.call('sites')).length < 1 && Date.now() < deadlineSites) await new Promise((r) => setTimeout(r, 100));
      const id = await admin.submit(tinyJob(join(tmp, 'job'), { minClients: 2, rounds: 2 }));
      const queued = await admin.call('status', { job: id });
      assert.equal(queued.state, 'SUBMITTED');
      assert.equal(queued.waiting, 'waiting for 2 sites, 1 connected: site-1');
      assert.match(formatJobStatus(queued), /: SUBMITTED\n[\s\S]*waiting for 2 sites, 1 connected: site-1/);

      void s2.run();
      // what `admin submit --wait` and `admin status --follow` print: a line per change, to the end
      const lines: string[] = [];
      const done = await followJob(
        () => admin.call('status', { job: id }),
        (state) => (FINAL_STATES as readonly string[]).includes(state),
        (l) => lines.push(l),
        100,
      );
      console.log(lines.join('\n'));
      assert.match(lines[0]!, /: SUBMITTED \(waiting for 2 sites, 1 connected: site-1\)|: RUNNING/);
      assert.match(lines.at(-1)!, new RegExp(`^${id}: FINISHED · rounds 2/2$`));
      assert.equal(done.state, 'FINISHED');
      const text = formatJobStatus(done);
      console.log(text);
      assert.match(text, new RegExp(`^Job ${id} \\(\\w[\\w-]*\\): FINISHED`));
      assert.match(text, /last round 2\/2 \(2 sites/);
      assert.match(text, /history:\n.*SUBMITTED[\s\S]*RUNNING[\s\S]*FINISHED/);
      assert.ok(text.split('\n').length < 20, `a summary, not a dump:\n${text}`);
    } finally {
      admin.close();
      s1.stop('test over');
      s2.stop('test over');
      await server.stop();
    }
  },
);
