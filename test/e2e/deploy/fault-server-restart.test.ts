// A server killed with SIGKILL mid-job, as in POC mode (the server and two sites are real
// `flotilla` processes over mutual TLS on loopback), then started again: the job resumes at the
// round after the last completed one (no round run twice, none lost) and its final model equals an
// uninterrupted run's bit for bit (FedAvg, deterministic trainer; in memory and offloaded).
// Prints the time from the restart to the server listening, to the job running again and to its
// next round. The scenario is test/helpers/fault-restart.ts (scripts/faults.ts runs it longer).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { restartProblems, serverRestart } from '../../helpers/fault-restart.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-fault-restart-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const ROUNDS = 5;

for (const offload of [false, true]) {
  test(
    `FedAvg${offload ? ' (offloaded)' : ''}: a server killed -9 mid-job resumes at the next round and ends with the uninterrupted model`,
    { timeout: 180_000 },
    async () => {
      const r = await serverRestart(join(tmp, offload ? 'off' : 'mem'), { rounds: ROUNDS, sleepMs: 150, offload, kills: 1 });
      console.log(JSON.stringify(r));
      assert.equal(r.restarts.length, 1);
      // finished; resumed after the last completed round and went on with the next; no round lost or
      // run twice; the final model equal to the uninterrupted run's
      assert.deepEqual(restartProblems(r), []);
      assert.deepEqual(r.states, ['SUBMITTED', 'RUNNING', 'SUBMITTED', 'RUNNING', 'FINISHED']);
    },
  );
}
