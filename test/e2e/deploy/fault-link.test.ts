// A site's network link faulted on a whole deployment: a FederationServer in this process, two
// `flotilla client start` site processes over mutual TLS, site-2 dialling both server ports through
// a FaultProxy (test/helpers/fault-proxy.ts). Delayed: every chunk both ways 15–25 ms late; the job
// finishes, slower, with site-2 in every round. Corrupted: a bit flipped in chunks of the data plane;
// TLS refuses the record and drops the connection, the job connection resumes on a redial, and the
// final model equals an uninterrupted run's (0 corrupted bytes accepted). The scenario is
// test/helpers/fault-runs.ts (scripts/faults.ts runs it longer and more often).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { linkFault, linkProblems } from '../../helpers/fault-runs.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-fault-link-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const ROUNDS = 4;

test('a site whose link is delayed finishes every round: no round lost, the model exact', { timeout: 90_000 }, async () => {
  const r = await linkFault(join(tmp, 'delay'), 'delay', { rounds: ROUNDS, sleepMs: 100, floats: 1 << 16, delayMs: 15, jitterMs: 10 });
  console.log(JSON.stringify(r));
  assert.ok(r.injected > 50, `only ${r.injected} chunks delayed`);
  // finished, site-2 in every round, the final model equal to the uninterrupted run's
  assert.deepEqual(linkProblems(r), []);
});

test('corrupted chunks under TLS drop the connection, the job resumes, 0 corrupted bytes accepted', { timeout: 90_000 }, async () => {
  const r = await linkFault(join(tmp, 'corrupt'), 'corrupt', { rounds: ROUNDS, sleepMs: 100, floats: 1 << 16, every: 15, count: 3 });
  console.log(JSON.stringify(r));
  assert.ok(r.injected >= 1, 'nothing was corrupted');
  // finished, the link redialled and the job connection resumed, site-2 in every round, the final
  // model equal to the uninterrupted run's
  assert.deepEqual(linkProblems(r), []);
});
