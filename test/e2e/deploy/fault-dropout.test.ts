// Dropout and rejoin with real processes on loopback: a FederationServer in this process and three
// `flotilla client start` site processes over mutual TLS. One site is killed with SIGKILL mid-round;
// the job drops it after its heartbeat timeout (2 s here), the round goes on with the two others,
// and the site, started again, is given the running job and trains again from a later round.
// The timings are printed (docs/reliability.md has them); the asserts are about what happened.
// The scenario is test/helpers/fault-runs.ts (scripts/faults.ts runs it longer).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { killSite, killSiteProblems } from '../../helpers/fault-runs.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-fault-dropout-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const HEARTBEAT_TIMEOUT_S = 2;

test(
  'a site killed mid-round is dropped within the heartbeat timeout, the round goes on, and the restarted site rejoins',
  { timeout: 150_000 },
  async () => {
    // enough rounds after the kill for the restarted site's process to start and rejoin on a loaded machine
    const r = await killSite(tmp, { rounds: 48, heartbeatTimeoutSeconds: HEARTBEAT_TIMEOUT_S, sleepMs: 300, killAfterRounds: 4 });
    console.log(JSON.stringify(r));
    // finished, no round lost, the round of the kill went on with the two live sites, the drop for no
    // heartbeat, every round after the rejoin with all three, kill → round done far under the old 300 s
    assert.deepEqual(killSiteProblems(r), []);
    assert.ok(r.killToDropSeconds <= HEARTBEAT_TIMEOUT_S + 1, `kill → drop ${r.killToDropSeconds} s`);
  },
);
