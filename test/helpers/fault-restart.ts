/**
 * The server-restart scenario (shared by test/e2e/deploy/fault-server-restart.test.ts and
 * scripts/faults.ts): the server and two sites are real `flotilla` processes over mutual TLS on
 * loopback, as in POC mode; the server is killed with SIGKILL inside a round, `kills` times in one
 * job, and started again on the same workspace each time. Returned: the rounds the job ran after
 * each restart, the times, and the final model against an uninterrupted run's.
 */
import { appendFileSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { AdminClient } from '../../src/admin/admin-client.ts';
import { loadKit } from '../../src/provision/kit.ts';
import { type LogEvent, ServerProcess, SiteProcesses, federationKits, jobEndStatus, jobEvents } from './fault.ts';
import { type FaultRun, againstUninterrupted, median, roundSeconds } from './fault-scenarios.ts';
import { tinyJob, until } from './federation.ts';

const RESUMED = 'job resumed from its last completed round';

export interface RestartRun extends FaultRun {
  offload: boolean;
  /** per kill: the last round completed before it, the round the job resumed after, the first round done after the restart */
  restarts: {
    lastCompletedRound: number;
    resumedAfterRound: number;
    firstRoundAfter: number;
    /** restart → the server listening again (a new Node process: most of the time on a loaded machine) */
    restartToListeningSeconds: number;
    /** restart → the job running again (resumed from its checkpoint) */
    restartToRunningSeconds: number;
    restartToNextRoundDoneSeconds: number;
  }[];
  /** rounds done more than once, and rounds never done */
  roundsRepeated: number;
  states: string[];
}

const count = (hay: string, needle: string): number => hay.split(needle).length - 1;

export async function serverRestart(
  dir: string,
  o: { rounds: number; sleepMs: number; offload: boolean; kills: number },
): Promise<RestartRun> {
  const k = await federationKits(join(dir, 'kits'), 'restart', 2);
  const port = loadKit(k.server!, 'server').config.listen.port;
  const workspace = join(dir, 'server');
  const server = new ServerProcess(k.server!, workspace);
  server.start();
  const out = server.out;
  const sites = new SiteProcesses(k);
  for (const s of ['site-1', 'site-2']) sites.start(s, join(dir, s));
  const job = tinyJob(join(dir, 'job'), { minClients: 2, rounds: o.rounds, sleepMs: o.sleepMs });
  if (o.offload) writeOffload(job);
  let id = '';
  const admin = (): AdminClient => new AdminClient(k['boss@hub.org']!, { host: '127.0.0.1', port });
  try {
    await until('the server to listen', () => out.join('').includes('listening on port'), 90_000);
    await until('two sites', () => [...sites.output.values()].every((s) => s.join('').includes('connected to')), 60_000);
    const a1 = admin();
    id = await a1.submit(job);
    a1.close();
    const events = (): LogEvent[] => jobEvents(workspace, id);
    const rounds = (): LogEvent[] => events().filter((e) => e.msg === 'round done');
    const restarts: RestartRun['restarts'] = [];
    for (let i = 0; i < o.kills; i++) {
      // each kill inside a later round: after round 1 + 2 i has been done since the previous restart
      const before = rounds().length;
      await until(`round ${before + 1} done`, () => rounds().length >= before + (i === 0 ? 2 : 1), 60_000);
      await new Promise((r) => setTimeout(r, o.sleepMs * 0.8)); // inside the next round
      await server.kill();
      const lastCompletedRound = Math.max(...rounds().map((e) => e.round as number));
      const resumedBefore = events().filter((e) => e.msg === RESUMED).length;
      const listening = count(out.join(''), 'listening on port');
      const restartedAt = Date.now();
      server.start();
      await until('the server to listen again', () => count(out.join(''), 'listening on port') > listening, 60_000);
      const listeningAt = Date.now();
      await until('the job resumed', () => events().filter((e) => e.msg === RESUMED).length > resumedBefore, 60_000);
      const resumed = events()
        .filter((e) => e.msg === RESUMED)
        .at(-1)!;
      await until('the next round after the restart', () => rounds().some((e) => e.time >= restartedAt), 60_000);
      const firstAfter = rounds().find((e) => e.time >= restartedAt)!;
      restarts.push({
        lastCompletedRound,
        resumedAfterRound: resumed.lastRound as number,
        firstRoundAfter: firstAfter.round as number,
        restartToListeningSeconds: (listeningAt - restartedAt) / 1000,
        restartToRunningSeconds: (resumed.time - restartedAt) / 1000,
        restartToNextRoundDoneSeconds: (firstAfter.time - restartedAt) / 1000,
      });
      if (firstAfter.round === o.rounds - 1) break; // the job is at its end: no round left to kill in
    }
    await until('the last round', () => rounds().some((e) => e.round === o.rounds - 1), o.rounds * 20_000);
    const a2 = admin();
    const st = await jobEndStatus(a2, id, 20_000);
    a2.close();
    // the rounds as finally run: after the last restart, and before it those not run again
    const done = rounds().map((e) => e.round as number);
    const distinct = new Set(done);
    const final = join(workspace, 'jobs', id, 'workspace', 'server', 'global_model.safetensors');
    return {
      fault: 'server-restart',
      injected: restarts.length,
      state: st.state,
      rounds: o.rounds,
      roundsLost: o.rounds - distinct.size,
      roundsRepeated: done.length - distinct.size,
      corruptedBytesAccepted:
        st.state === 'FINISHED' ? await againstUninterrupted({ job, sites: 2, final, dir, offload: o.offload }) : null,
      roundSecondsMedian: median(roundSeconds(rounds())),
      offload: o.offload,
      restarts,
      states: st.events.map((e) => e.state),
    };
  } catch (e) {
    console.error(out.join(''), ...jobEvents(workspace, id).map((l) => JSON.stringify(l) + '\n'));
    for (const [s, lines] of sites.output) console.error(`${s}:`, lines.join(''));
    throw e;
  } finally {
    await sites.stopAll();
    await server.stop();
    server.killAll();
  }
}

function writeOffload(job: string): void {
  const yaml = readFileSync(join(job, 'job.yaml'), 'utf8').replace('  - type: fedavg\n', '  - type: fedavg\n    offload: true\n');
  rmSync(join(job, 'job.yaml'));
  appendFileSync(join(job, 'job.yaml'), yaml);
}

/** What a server-restart run should show, as the failures found (none: []). */
export function restartProblems(r: RestartRun): string[] {
  const p: string[] = [];
  if (r.state !== 'FINISHED') p.push(`job ${r.state}`);
  const expected = ['SUBMITTED', 'RUNNING', ...r.restarts.flatMap(() => ['SUBMITTED', 'RUNNING']), 'FINISHED'];
  if (r.states.join() !== expected.join()) p.push(`states ${r.states.join(' → ')}`);
  for (const [i, k] of r.restarts.entries()) {
    if (k.resumedAfterRound !== k.lastCompletedRound)
      p.push(`restart ${i + 1}: resumed after round ${k.resumedAfterRound}, not ${k.lastCompletedRound}`);
    if (k.firstRoundAfter !== k.lastCompletedRound + 1) p.push(`restart ${i + 1}: first round after it ${k.firstRoundAfter}`);
  }
  if (r.roundsLost !== 0) p.push(`${r.roundsLost} rounds lost`);
  if (r.roundsRepeated !== 0) p.push(`${r.roundsRepeated} rounds run twice`);
  if (r.corruptedBytesAccepted !== 0) p.push(`final model: ${r.corruptedBytesAccepted} bytes differ from the uninterrupted run's`);
  return p;
}
