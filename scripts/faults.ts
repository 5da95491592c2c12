/**
 * The longer fault-injection suite: the scenarios of the CI tests (test/helpers/fault-runs.ts,
 * fault-restart.ts), longer and `--repeat` times each, on real processes over mutual TLS on
 * loopback. Progress goes to stderr; stdout gets one JSON object: per fault the runs, faults
 * injected, rounds lost, corrupted bytes accepted, death → removal and restart → running seconds,
 * and what went wrong, if anything; with the machine and the git commit.
 *
 *   node --conditions=flotilla-source --import tsx scripts/faults.ts [--repeat 3] [--only kill-site,corrupt]
 *
 * Exit code 1 when a run failed or showed a problem (a round lost, a model that differs, ...).
 */
import { cpus, freemem, loadavg, tmpdir, totalmem } from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { commitFacts } from '../bench/commit.ts';
import type { FaultRun } from '../test/helpers/fault-scenarios.ts';
import { killSite, killSiteProblems, linkFault, linkProblems, slowSite } from '../test/helpers/fault-runs.ts';
import { restartProblems, serverRestart } from '../test/helpers/fault-restart.ts';

/** Each fault with the settings of the long run (the CI tests use shorter ones) and its checks. */
const FAULTS = {
  // 3 sites, kill -9 of site-3 in round 5, started again; heartbeat timeout 2 s
  'kill-site': {
    what: 'kill -9 of a site mid-round, then the site started again (3 sites, heartbeat timeout 2 s, 60 rounds)',
    run: async (dir: string) => {
      const r = await killSite(dir, { rounds: 60, heartbeatTimeoutSeconds: 2, sleepMs: 300, killAfterRounds: 4 });
      return { run: r, problems: killSiteProblems(r) };
    },
  },
  'server-restart': {
    what: 'server process killed -9 mid-round 3 times in one job and started again (2 sites, 12 rounds; offloaded FedAvg every 2nd run)',
    run: async (dir: string, i: number) => {
      const r = await serverRestart(dir, { rounds: 12, sleepMs: 200, offload: i % 2 === 1, kills: 3 });
      return { run: r, problems: restartProblems(r) };
    },
  },
  cut: {
    what: "a site's connections (gRPC and data plane) cut every 400 ms, 8 times, mid-transfer (1 MiB model, 10 rounds)",
    run: async (dir: string) => {
      const r = await linkFault(dir, 'cut', { rounds: 10, sleepMs: 150, floats: 1 << 18, everyMs: 400, count: 8 });
      return { run: r, problems: linkProblems(r) };
    },
  },
  delay: {
    what: "a site's link delayed 40 ms + up to 40 ms jitter per chunk, both ways (1 MiB model, 10 rounds)",
    run: async (dir: string) => {
      const r = await linkFault(dir, 'delay', { rounds: 10, sleepMs: 150, floats: 1 << 18, delayMs: 40, jitterMs: 40 });
      return { run: r, problems: linkProblems(r) };
    },
  },
  corrupt: {
    what: "a bit flipped in every 10th chunk of a site's data-plane link, 8 times (1 MiB model, 10 rounds, TLS)",
    run: async (dir: string) => {
      const r = await linkFault(dir, 'corrupt', { rounds: 10, sleepMs: 150, floats: 1 << 18, every: 10, count: 8 });
      return { run: r, problems: linkProblems(r) };
    },
  },
  'slow-site': {
    what: 'a site whose trainer takes 5 s per task, heartbeat timeout 2 s (2 sites, 5 rounds)',
    run: async (dir: string) => {
      const r = await slowSite(dir, { rounds: 5, heartbeatTimeoutSeconds: 2, sleepMs: 100, slowSleepMs: 5000 });
      return { run: r, problems: linkProblems(r) };
    },
  },
} satisfies Record<string, { what: string; run: (dir: string, i: number) => Promise<{ run: FaultRun; problems: string[] }> }>;

type Fault = keyof typeof FAULTS;
const NAMES = Object.keys(FAULTS) as Fault[];

const positive = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`must be a positive integer, got "${v}"`);
  return n;
};
const faultList = (v: string): Fault[] => {
  const xs = v.split(',').map((s) => s.trim());
  for (const x of xs) if (!NAMES.includes(x as Fault)) throw new InvalidArgumentError(`unknown fault "${x}": one of ${NAMES.join(', ')}`);
  return xs as Fault[];
};

const opts = new Command('faults')
  .description(`the long fault-injection suite (faults: ${NAMES.join(', ')}); one JSON object on stdout, progress on stderr`)
  .option('--repeat <n>', 'runs of each fault', positive, 3)
  .option('--only <faults>', 'comma-separated faults (default: all)', faultList)
  .option('--keep', "keep the runs' folders (printed) instead of removing them")
  .parse()
  .opts<{ repeat: number; only?: Fault[]; keep?: boolean }>();

const log = (s: string): void => void process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${s}\n`);
const stats = (xs: (number | null | undefined)[]): { min: number; median: number; max: number; n: number } | null => {
  const v = xs.filter((x): x is number => typeof x === 'number').sort((a, b) => a - b);
  return v.length === 0 ? null : { min: v[0]!, median: v[Math.floor(v.length / 2)]!, max: v.at(-1)!, n: v.length };
};
const sum = (xs: (number | null)[]): number | null => (xs.every((x) => x === null) ? null : xs.reduce<number>((s, x) => s + (x ?? 0), 0));

const started = new Date();
// read before the runs: the tree the runs used (an edit made while they run must not mark them dirty)
const commit = commitFacts();
const machine = {
  node: process.version,
  platform: `${process.platform} ${process.arch}`,
  cpu: cpus()[0]?.model ?? 'unknown',
  cores: cpus().length,
  memoryGb: Number((totalmem() / 2 ** 30).toFixed(1)),
  freeMemoryGbAtStart: Number((freemem() / 2 ** 30).toFixed(1)),
  loadAverageAtStart: loadavg().map((x) => Number(x.toFixed(2))),
};
const faults: Record<string, unknown> = {};
let failed = 0;
for (const name of opts.only ?? NAMES) {
  const f = FAULTS[name];
  const runs: (FaultRun & { problems: string[]; seconds: number })[] = [];
  const errors: string[] = [];
  for (let i = 0; i < opts.repeat; i++) {
    const dir = mkdtempSync(join(tmpdir(), `flotilla-faults-${name}-`));
    log(`${name} ${i + 1}/${opts.repeat}: ${f.what}`);
    const t0 = performance.now();
    try {
      const { run, problems } = await f.run(dir, i);
      const seconds = Number(((performance.now() - t0) / 1000).toFixed(1));
      runs.push({ ...run, problems, seconds });
      if (problems.length > 0) failed++;
      log(`${name} ${i + 1}/${opts.repeat}: ${problems.length === 0 ? 'ok' : problems.join('; ')} (${seconds} s)`);
    } catch (e) {
      failed++;
      errors.push(String((e as Error).stack ?? e).slice(0, 2000));
      log(`${name} ${i + 1}/${opts.repeat}: error: ${(e as Error).message}`);
    } finally {
      if (opts.keep) log(`kept ${dir}`);
      else rmSync(dir, { recursive: true, force: true });
    }
  }
  const pick = (k: string): (number | null)[] => runs.map((r) => (r as unknown as Record<string, number | null>)[k] ?? null);
  const restarts = runs.flatMap((r) =>
    'restarts' in r ? (r.restarts as { restartToRunningSeconds: number; restartToListeningSeconds: number }[]) : [],
  );
  faults[name] = {
    what: f.what,
    runs: opts.repeat,
    runsOk: runs.filter((r) => r.problems.length === 0).length,
    injected: sum(runs.map((r) => r.injected)),
    roundsRun: sum(runs.map((r) => r.rounds)),
    roundsLost: sum(runs.map((r) => r.roundsLost)),
    corruptedBytesAccepted: sum(runs.map((r) => r.corruptedBytesAccepted)),
    roundSecondsMedian: stats(runs.map((r) => r.roundSecondsMedian)),
    ...(name === 'kill-site' && {
      deathToRemovalSeconds: stats(pick('killToDropSeconds')),
      deathToRoundDoneSeconds: stats(pick('killToRoundDoneSeconds')),
      restartToRejoinRoundSeconds: stats(pick('restartToRejoinRoundSeconds')),
    }),
    ...(name === 'server-restart' && {
      restartToListeningSeconds: stats(restarts.map((k) => k.restartToListeningSeconds)),
      restartToRunningSeconds: stats(restarts.map((k) => k.restartToRunningSeconds)),
      roundsRepeated: sum(pick('roundsRepeated')),
    }),
    problems: runs.flatMap((r, i) => r.problems.map((p) => `run ${i + 1}: ${p}`)),
    errors,
    each: runs,
  };
}
console.log(
  JSON.stringify(
    {
      suite: 'faults',
      command: `scripts/faults.ts --repeat ${opts.repeat}${opts.only ? ` --only ${opts.only.join(',')}` : ''}`,
      ...commit,
      started: started.toISOString(),
      seconds: Number(((Date.now() - started.getTime()) / 1000).toFixed(1)),
      machine: { ...machine, loadAverageAtEnd: loadavg().map((x) => Number(x.toFixed(2))) },
      faults,
    },
    null,
    2,
  ),
);
process.exitCode = failed > 0 ? 1 : 0;
