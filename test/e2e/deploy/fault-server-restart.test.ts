// A server killed with SIGKILL mid-job, as in POC mode (the server and two sites are real
// `flotilla` processes over mutual TLS on loopback), then started again: the job resumes at the
// round after the last completed one (no round run twice, none lost) and its final model equals an
// uninterrupted run's bit for bit (FedAvg, deterministic trainer; in memory and offloaded).
// Prints the time from the restart to the job running again and to its next round.
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { AdminClient } from '../../../src/admin/admin-client.ts';
import { readSafetensors } from '../../../src/core/safetensors.ts';
import { loadKit } from '../../../src/provision/kit.ts';
import { simulate } from '../../../src/simulator/simulator.ts';
import { tinyJob, until } from '../../helpers/federation.ts';
import { type LogEvent, ServerProcess, SiteProcesses, federationKits, jobEndStatus, jobEvents } from '../../helpers/fault.ts';

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-fault-restart-'));
const servers: ServerProcess[] = [];
after(() => {
  for (const s of servers) s.killAll();
  rmSync(tmp, { recursive: true, force: true });
});

const ROUNDS = 5;

const hex = async (path: string): Promise<string> =>
  Buffer.from((await readSafetensors(path)).tensors.get('w')!.data.buffer).toString('hex');

for (const offload of [false, true]) {
  test(
    `FedAvg${offload ? ' (offloaded)' : ''}: a server killed -9 mid-job resumes at the next round and ends with the uninterrupted model`,
    { timeout: 60_000 },
    async () => {
      const name = offload ? 'off' : 'mem';
      const k = await federationKits(join(tmp, `kits-${name}`), `restart-${name}`, 2);
      const port = loadKit(k.server!, 'server').config.listen.port;
      const workspace = join(tmp, `server-${name}`);
      const server = new ServerProcess(k.server!, workspace);
      servers.push(server);
      server.start();
      const out = server.out;
      const sites = new SiteProcesses(k);
      for (const s of ['site-1', 'site-2']) sites.start(s, join(tmp, `${name}-${s}`));
      const job = tinyJob(join(tmp, `job-${name}`), { minClients: 2, rounds: ROUNDS, sleepMs: 150 });
      if (offload) writeOffload(job);
      let id = '';
      const admin = (): AdminClient => new AdminClient(k['boss@hub.org']!, { host: '127.0.0.1', port });
      try {
        await until('the server to listen', () => out.join('').includes('listening on port'), 20_000);
        await until('two sites', () => [...sites.output.values()].every((o) => o.join('').includes('connected to')), 30_000);
        const a1 = admin();
        id = await a1.submit(job);
        a1.close();
        const rounds = (): LogEvent[] => jobEvents(workspace, id).filter((e) => e.msg === 'round done');
        await until('round 1 done', () => rounds().length >= 2, 30_000);
        await new Promise((r) => setTimeout(r, 120)); // inside round 2
        await server.kill();
        const lastDone = Math.max(...rounds().map((e) => e.round as number));

        const restartedAt = Date.now();
        server.start();
        await until(
          'the job resumed',
          () => jobEvents(workspace, id).some((e) => e.msg === 'job resumed from its last completed round'),
          30_000,
        );
        const resumed = jobEvents(workspace, id).find((e) => e.msg === 'job resumed from its last completed round')!;
        await until('the next round after the restart', () => rounds().filter((e) => e.time >= restartedAt).length >= 1, 30_000);
        const firstAfter = rounds().find((e) => e.time >= restartedAt)!;
        await until('the job to end', () => rounds().filter((e) => e.round === ROUNDS - 1).length > 0, 40_000);
        const a2 = admin();
        const st = await jobEndStatus(a2, id, 10_000);
        a2.close();
        assert.equal(st.state, 'FINISHED', st.detail ?? undefined);
        assert.deepEqual(
          st.events.map((e) => e.state),
          ['SUBMITTED', 'RUNNING', 'SUBMITTED', 'RUNNING', 'FINISHED'],
        );
        assert.equal(resumed.lastRound, lastDone, 'resumed from the last completed round');
        assert.equal(firstAfter.round, lastDone + 1, 'the first round after the restart is the one after the last completed');
        // every round ran once after the restart: none repeated, none lost
        const after = rounds()
          .filter((e) => e.time >= restartedAt)
          .map((e) => e.round);
        assert.deepEqual(
          after,
          Array.from({ length: ROUNDS - lastDone - 1 }, (_, i) => lastDone + 1 + i),
        );

        // the uninterrupted run of the same job, simulated with the same two sites
        const sim = join(tmp, `sim-${name}`);
        await simulate({ jobDir: job, clients: 2, threads: 0, workspace: sim, ...(offload && { offload: true }) });
        const final = join(workspace, 'jobs', id, 'workspace', 'server', 'global_model.safetensors');
        assert.ok(existsSync(final));
        assert.equal(
          await hex(final),
          await hex(join(sim, 'server', 'global_model.safetensors')),
          'final model differs from the uninterrupted run',
        );
        console.log(
          JSON.stringify({
            offload,
            lastCompletedRound: lastDone,
            restartToJobResumedSeconds: (resumed.time - restartedAt) / 1000,
            restartToNextRoundDoneSeconds: (firstAfter.time - restartedAt) / 1000,
          }),
        );
      } catch (e) {
        console.error(out.join(''), ...jobEvents(workspace, id).map((l) => JSON.stringify(l) + '\n'));
        for (const [s, o] of sites.output) console.error(`${s}:`, o.join(''));
        throw e;
      } finally {
        await sites.stopAll();
        await server.stop();
      }
    },
  );
}

function writeOffload(job: string): void {
  const yaml = readFileSync(join(job, 'job.yaml'), 'utf8').replace('  - type: fedavg\n', '  - type: fedavg\n    offload: true\n');
  rmSync(join(job, 'job.yaml'));
  appendFileSync(join(job, 'job.yaml'), yaml);
}
