/**
 * Fault scenarios on a federation with an in-process server (test/helpers/fault-scenarios.ts):
 * a site killed mid-round and started again, a site's link cut / delayed / corrupted through a
 * FaultProxy, a slow site. Each returns its figures; the callers (tests, scripts/faults.ts) assert.
 */
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type LogEvent } from './fault.ts';
import { type FaultRun, againstUninterrupted, median, roundSeconds, withFederation } from './fault-scenarios.ts';
import { tinyJob, until } from './federation.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface KillSiteRun extends FaultRun {
  heartbeatTimeoutSeconds: number;
  killRound: number;
  /** the sites of the round in progress at the kill */
  killRoundSites: string[];
  droppedReason: string;
  killToDropSeconds: number;
  killToRoundDoneSeconds: number;
  roundSecondsBeforeKill: number | null;
  roundSecondsAfterDrop: number | null;
  restartToRejoinRoundSeconds: number;
  rejoinRound: number;
  /** the round in progress when the restarted site's job connection registered (it rejoins from the next broadcast) */
  registeredDuringRound: number | null;
  roundSecondsAfterRejoin: number | null;
  /** rounds after the rejoin round without all three sites */
  roundsAfterRejoinWithoutAll: number;
}

/**
 * Three site processes, a FedAvg job of `rounds` rounds (minClients 2, trainers sleeping sleepMs);
 * `kill -9` of site-3 inside round `killAfterRounds`, then site-3 started again.
 */
export async function killSite(
  dir: string,
  o: { rounds: number; heartbeatTimeoutSeconds: number; sleepMs: number; killAfterRounds: number },
): Promise<KillSiteRun> {
  return withFederation(dir, 3, [], async (f) => {
    await f.connected();
    const job = tinyJob(join(dir, 'job'), { minClients: 2, rounds: o.rounds, sleepMs: o.sleepMs });
    appendFileSync(join(job, 'job.yaml'), `heartbeatTimeoutSeconds: ${o.heartbeatTimeoutSeconds}\n`);
    await f.submit(job);
    await until(`round ${o.killAfterRounds - 1}`, () => f.rounds().length >= o.killAfterRounds, 60_000);
    await sleep(o.sleepMs / 2); // inside the next round: every site is training
    const killRound = f.rounds().length; // rounds count from 0: the one in progress
    const killedAt = Date.now();
    await f.sites.kill('site-3');
    const dropped = (): LogEvent | undefined => f.events().find((e) => e.msg === 'site dropped from the job' && e.site === 'site-3');
    await until('site-3 dropped from the job', () => dropped() !== undefined, 30_000);
    await until(`round ${killRound}`, () => f.rounds().length > killRound, 30_000);
    const restartedAt = Date.now();
    f.sites.start('site-3', join(dir, 'site-3'));
    const withSite3 = (): LogEvent | undefined =>
      f.rounds().find((e) => (e.round as number) > killRound && (e.sites as string[]).includes('site-3'));
    await until('site-3 back in a round', () => withSite3() !== undefined, 90_000);
    const state = await f.ended(60_000);
    const all = f.rounds();
    const drop = dropped()!;
    const back = withSite3()!;
    const registered = f.events().find((e) => e.msg === 'site registered' && e.site === 'site-3' && e.time >= restartedAt);
    const at = (r: number): LogEvent | undefined => all.find((e) => e.round === r);
    // null where the round is not in the job (site-3 may rejoin in the last round on a loaded machine)
    const secs = (r: number): number | null => {
      const [a, b] = [at(r - 1), at(r)];
      return a && b ? (b.time - a.time) / 1000 : null;
    };
    return {
      fault: 'kill-site',
      injected: 1,
      state,
      rounds: o.rounds,
      roundsLost: o.rounds - all.length,
      corruptedBytesAccepted: null,
      roundSecondsMedian: median(roundSeconds(all)),
      heartbeatTimeoutSeconds: o.heartbeatTimeoutSeconds,
      killRound,
      killRoundSites: (at(killRound)?.sites as string[] | undefined) ?? [],
      droppedReason: String(drop.reason),
      killToDropSeconds: (drop.time - killedAt) / 1000,
      killToRoundDoneSeconds: (at(killRound)!.time - killedAt) / 1000,
      roundSecondsBeforeKill: secs(killRound - 1),
      roundSecondsAfterDrop: secs(killRound + 1),
      restartToRejoinRoundSeconds: (back.time - restartedAt) / 1000,
      rejoinRound: back.round as number,
      registeredDuringRound: registered ? all.filter((e) => e.time <= registered.time).length : null,
      roundSecondsAfterRejoin: secs((back.round as number) + 1),
      roundsAfterRejoinWithoutAll: all.filter((e) => (e.round as number) > (back.round as number) && (e.sites as string[]).length !== 3)
        .length,
    };
  });
}

export type LinkFault = 'cut' | 'delay' | 'corrupt';

export interface LinkRun extends FaultRun {
  /** the faulted site's connections through its proxies (1 per connection: more after each drop) */
  connections: number;
  /** the site's job log says its job connection resumed (after a cut or a corrupted TLS record) */
  jobConnectionResumed: boolean;
  delayMs?: number;
  jitterMs?: number;
}

/**
 * Two site processes, site-2 through its FaultProxies (both server ports); a FedAvg job of `rounds`
 * rounds (minClients 2, a `floats`-float model) with site-2's link faulted while it runs:
 * - cut: its connections destroyed every `everyMs` (at most `count` times);
 * - delay: every chunk both ways `delayMs` + up to `jitterMs` late;
 * - corrupt: one bit flipped in every `every`-th chunk (at most `count`): TLS drops the connection.
 * Checked by the caller: the job finishes, every round has both sites, the final model equals the
 * uninterrupted run's (corruptedBytesAccepted 0).
 */
export async function linkFault(
  dir: string,
  fault: LinkFault,
  o: {
    rounds: number;
    sleepMs: number;
    floats: number;
    everyMs?: number;
    every?: number;
    count?: number;
    delayMs?: number;
    jitterMs?: number;
  },
): Promise<LinkRun> {
  return withFederation(dir, 2, ['site-2'], async (f) => {
    const p = f.proxies.get('site-2')!;
    const proxies = [p.grpc, ...(p.data ? [p.data] : [])];
    await f.connected();
    const job = tinyJob(join(dir, 'job'), { minClients: 2, rounds: o.rounds, sleepMs: o.sleepMs, floats: o.floats });
    if (fault === 'delay') for (const x of proxies) x.delay(o.delayMs ?? 20, o.jitterMs ?? 0);
    // the data plane carries the models: corrupt it (the session's gRPC link carries little but heartbeats)
    if (fault === 'corrupt') (p.data ?? p.grpc).corrupt({ every: o.every ?? 20, limit: o.count ?? 3 });
    const connectionsBefore = proxies.reduce((s, x) => s + x.connections, 0);
    const id = await f.submit(job);
    let cutting: Promise<void> = Promise.resolve();
    if (fault === 'cut')
      cutting = (async () => {
        await until('the first round', () => f.rounds().length >= 1, 60_000);
        for (let i = 0; i < (o.count ?? 3) && f.server.store.get(id)?.state === 'RUNNING'; i++) {
          await sleep(o.everyMs ?? 300);
          for (const x of proxies) x.cut();
        }
      })();
    const state = await f.ended(o.rounds * 20_000);
    await cutting;
    const all = f.rounds();
    const injected =
      fault === 'cut'
        ? p.grpc.cuts
        : fault === 'delay'
          ? proxies.reduce((s, x) => s + x.delayedChunks, 0)
          : proxies.reduce((s, x) => s + x.corruptedChunks, 0);
    const siteLog = join(dir, 'site-2', 'jobs', id, 'site-2', 'log.jsonl');
    return {
      fault,
      injected,
      state,
      rounds: o.rounds,
      roundsLost: o.rounds - all.filter((e) => (e.sites as string[]).includes('site-2')).length,
      corruptedBytesAccepted: state === 'FINISHED' ? await againstUninterrupted({ job, sites: 2, final: f.finalModel(), dir }) : null,
      roundSecondsMedian: median(roundSeconds(all)),
      connections: proxies.reduce((s, x) => s + x.connections, 0) - connectionsBefore,
      jobConnectionResumed: existsSync(siteLog) && /job connection resumed/.test(readFileSync(siteLog, 'utf8')),
      ...(fault === 'delay' && { delayMs: o.delayMs ?? 20, jitterMs: o.jitterMs ?? 0 }),
    };
  });
}

export interface SlowSiteRun extends FaultRun {
  heartbeatTimeoutSeconds: number;
  slowSleepMs: number;
  /** 'site dropped from the job' events during the rounds (any site: a loaded machine can silence a fast one too) */
  drops: number;
  dropped: { site: string; reason: string }[];
}

/** Two site processes; site-2's trainer takes `slowSleepMs` per task, several heartbeat timeouts. */
export async function slowSite(
  dir: string,
  o: { rounds: number; heartbeatTimeoutSeconds: number; sleepMs: number; slowSleepMs: number },
): Promise<SlowSiteRun> {
  return withFederation(dir, 2, [], async (f) => {
    await f.connected();
    const job = tinyJob(join(dir, 'job'), { minClients: 2, rounds: o.rounds, sleepMs: [o.sleepMs, o.slowSleepMs] });
    appendFileSync(join(job, 'job.yaml'), `heartbeatTimeoutSeconds: ${o.heartbeatTimeoutSeconds}\n`);
    await f.submit(job);
    const state = await f.ended(o.rounds * (o.slowSleepMs + 20_000));
    const all = f.rounds();
    // before the last round's end: at the job's end every site's job connection closes, logged as a drop too
    const end = all.at(-1)?.time ?? Infinity;
    const dropped = f
      .events()
      .filter((e) => e.msg === 'site dropped from the job' && e.time < end)
      .map((e) => ({ site: String(e.site), reason: String(e.reason) }));
    return {
      fault: 'slow-site',
      injected: o.rounds,
      state,
      rounds: o.rounds,
      roundsLost: o.rounds - all.filter((e) => (e.sites as string[]).includes('site-2')).length,
      corruptedBytesAccepted: state === 'FINISHED' ? await againstUninterrupted({ job, sites: 2, final: f.finalModel(), dir }) : null,
      roundSecondsMedian: median(roundSeconds(all)),
      heartbeatTimeoutSeconds: o.heartbeatTimeoutSeconds,
      slowSleepMs: o.slowSleepMs,
      drops: dropped.length,
      dropped,
    };
  });
}

/** What a kill-site run should show, as the failures found (none: []). */
export function killSiteProblems(r: KillSiteRun): string[] {
  const p: string[] = [];
  if (r.state !== 'FINISHED') p.push(`job ${r.state}`);
  if (r.roundsLost !== 0) p.push(`${r.roundsLost} rounds lost`);
  if (r.killRoundSites.join() !== 'site-1,site-2') p.push(`the round of the kill had ${r.killRoundSites.join(', ')}`);
  if (!/no heartbeat/.test(r.droppedReason)) p.push(`dropped for: ${r.droppedReason}`);
  if (r.roundsAfterRejoinWithoutAll !== 0) p.push(`${r.roundsAfterRejoinWithoutAll} rounds after the rejoin without all sites`);
  // the old behaviour was the channel's 300 s resume timeout: far beyond this bound
  if (r.killToRoundDoneSeconds >= r.heartbeatTimeoutSeconds + 10) p.push(`kill → round done ${r.killToRoundDoneSeconds} s`);
  return p;
}

/** What a link-fault or slow-site run should show: the job done, the site in every round, the model exact. */
export function linkProblems(r: LinkRun | SlowSiteRun): string[] {
  const p: string[] = [];
  if (r.state !== 'FINISHED') p.push(`job ${r.state}`);
  if (r.injected < 1) p.push('nothing injected');
  if (r.roundsLost !== 0) p.push(`${r.roundsLost} rounds without the faulted site`);
  if (r.corruptedBytesAccepted !== 0) p.push(`final model: ${r.corruptedBytesAccepted} bytes differ from the uninterrupted run's`);
  if ('dropped' in r) for (const d of r.dropped) p.push(`${d.site} dropped: ${d.reason}`);
  if ('connections' in r && (r.fault === 'cut' || r.fault === 'corrupt')) {
    if (r.connections < 2) p.push(`the faulted link was not redialled (${r.connections} connections)`);
    if (!r.jobConnectionResumed) p.push('the job connection did not resume');
  }
  return p;
}
