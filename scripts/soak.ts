/**
 * Soak: a long FedAvg job on a POC deployment (a server and N site processes on this machine,
 * `poc prepare` / `poc start` in a temporary folder), with the server's and every site's RSS
 * (/proc/<pid>/status VmRSS), open descriptors (/proc/<pid>/fd) and, from each process's own
 * report (FLOTILLA_RESOURCE_REPORT, src/util/resource-report.ts), heap and active handles and
 * timers sampled every --interval seconds. The trainer is test/fixtures/jobs/tiny (in-process,
 * deterministic, no sleep): short rounds, so many of them.
 *
 *   nice -n 10 node --conditions=flotilla-source --import tsx scripts/soak.ts [--rounds 200] [--sites 3]
 *     [--interval 2] [--warmup <rounds>] [--floats 65536] [--trainer in-process|script] [--no-gc] [--workspace <dir>] [--keep] [--out <file>]
 *
 * Progress goes to stderr; at the end one JSON object goes to stdout (and to --out): rounds, sites,
 * seconds, per process the samples after warm-up summarized (first, last, min, max, slope per 100
 * rounds, growth) and the verdict (flat or not, with the thresholds), machine facts and the commit.
 * Every POC process is stopped on exit, on an error and on Ctrl-C.
 */
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, getPriority, loadavg, tmpdir, totalmem } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { AdminClient } from '../src/admin/admin-client.ts';
import { pocPrepare, pocStop } from '../src/deploy/poc.ts';
import { isSameProcess } from '../src/util/process-identity.ts';
import {
  RESOURCE_REPORT_ENV,
  RESOURCE_REPORT_GC_ENV,
  RESOURCE_REPORT_MS_ENV,
  type ResourceLine,
  ResourceLineSchema,
} from '../src/util/resource-report.ts';
import { freePortPair, repo, tinyJob } from '../test/helpers/federation.ts';
import { f32 } from '../src/core/tensor.ts';
import { dictToStream } from '../src/core/tensor-stream.ts';
import { writeStreamToFile } from '../src/core/safetensors.ts';
import { flotillaAsync } from '../test/helpers/poc.ts';
import { commitFacts } from '../bench/commit.ts';
import { type Sample, type Verdict, summarizeProcess, verdict } from './soak-stats.ts';

const int = (name: string, min: number) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}, got "${v}"`);
  return n;
};
const opts = new Command()
  .name('soak')
  .description('a long FedAvg job on a POC deployment, with every process sampled for memory, descriptors and handles')
  .option('--rounds <n>', 'FedAvg rounds', int('--rounds', 1), 200)
  .option('--sites <n>', 'site processes (every round needs all of them)', int('--sites', 1), 3)
  .option(
    '--interval <s>',
    'seconds between samples',
    (v) => {
      const n = Number(v);
      if (!(n >= 0.1)) throw new InvalidArgumentError(`--interval must be ≥ 0.1 s, got "${v}"`);
      return n;
    },
    2,
  )
  .option('--warmup <rounds>', 'rounds left out of the summaries (default: a quarter of --rounds)', int('--warmup', 0))
  .option('--floats <n>', 'model size in float32 values (each round sends it to every site and back)', int('--floats', 1), 65536)
  .option(
    '--trainer <kind>',
    'in-process (the tiny job) or script (tiny-script: a trainer process per site, also sampled)',
    (v) => {
      if (v !== 'in-process' && v !== 'script') throw new InvalidArgumentError(`--trainer must be in-process or script, got "${v}"`);
      return v;
    },
    'in-process',
  )
  .option('--workspace <dir>', 'where the POC goes (default: a temporary folder, deleted at the end)')
  .option('--no-gc', 'measure without the full collection each process runs before its report (default: collect, then measure)')
  .option('--keep', 'keep the workspace (logs, job results, resource reports) at the end')
  .option('--out <file>', 'also write the JSON result to this file')
  .parse()
  .opts<{
    rounds: number;
    sites: number;
    interval: number;
    warmup?: number;
    floats: number;
    workspace?: string;
    keep?: boolean;
    out?: string;
    gc: boolean;
    trainer: 'in-process' | 'script';
  }>();

const warmupRounds = opts.warmup ?? Math.floor(opts.rounds / 4);
const started = Date.now();
let lastSaid = 0;
const say = (s: string): void => {
  lastSaid = Date.now();
  process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${s}\n`);
};

const ws = resolve(opts.workspace ?? mkdtempSync(join(tmpdir(), 'flotilla-soak-')));
const pocDir = join(ws, 'poc');
const reportDir = join(ws, 'resources');

// ---- the POC's processes, and stopping them whatever happens ------------------------------------

type Pids = Record<string, { pid: number; startTime: string; cmdline: string }>;
let pids: Pids = {};
const readPids = (): Pids =>
  existsSync(join(pocDir, 'pids.json')) ? (JSON.parse(readFileSync(join(pocDir, 'pids.json'), 'utf8')) as Pids) : {};
const alive = (): string[] => Object.keys(pids).filter((n) => isSameProcess(pids[n]!).same);

/** SIGTERM (poc stop), then SIGKILL for any process still there after `graceMs`. */
async function stopAll(graceMs: number): Promise<void> {
  if (existsSync(join(pocDir, 'pids.json'))) pocStop(pocDir);
  for (const deadline = Date.now() + graceMs; alive().length > 0 && Date.now() < deadline;) await new Promise((r) => setTimeout(r, 100));
  killAll();
  for (const deadline = Date.now() + 2000; alive().length > 0 && Date.now() < deadline;) await new Promise((r) => setTimeout(r, 50));
}
/** Synchronous, for the exit handler: SIGKILL whatever is left (each PID checked to name the process started). */
function killAll(): void {
  for (const n of alive())
    try {
      process.kill(pids[n]!.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
}
process.on('exit', killAll);
let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.on(sig, () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    say(`${sig}: stopping the POC`);
    void stopAll(10_000).finally(() => {
      cleanWorkspace();
      process.exit(130);
    });
  });
function cleanWorkspace(): void {
  if (!opts.keep && opts.workspace === undefined) rmSync(ws, { recursive: true, force: true });
}

// ---- sampling ------------------------------------------------------------------------------------

function procFacts(pid: number): { rssMB: number; fds: number } | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN);
    return { rssMB: Math.round((kb / 1024) * 10) / 10, fds: readdirSync(`/proc/${pid}/fd`).length };
  } catch {
    return null; // the process is gone
  }
}

/** The last line each process reported about itself. */
function lastReport(pid: number): ResourceLine | null {
  const file = join(reportDir, `${pid}.jsonl`);
  if (!existsSync(file)) return null;
  const lines = readFileSync(file, 'utf8').trimEnd().split('\n');
  for (let i = lines.length - 1; i >= 0; i--) {
    const r = ResourceLineSchema.safeParse(JSON.parse(lines[i]!));
    if (r.success) return r.data;
  }
  return null;
}

/** A process's children, from /proc/PID/task/TID/children. */
function children(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((tid) =>
      readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8')
        .trim()
        .split(/\s+/)
        .filter((c) => c !== '')
        .map(Number),
    );
  } catch {
    return []; // gone
  }
}
const program = (pid: number): string => {
  try {
    return basename(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] ?? '') || 'process';
  } catch {
    return 'process';
  }
};
/**
 * A process's descendants, named by program: a site's trainer processes (node, python: `site-1/trainer`) and
 * what they start; `<name>/esbuild` is tsx's compiler, which every process run with `--import tsx` starts.
 */
function descendants(pid: number, label: string): (readonly [string, number])[] {
  const seen = new Map<string, number>();
  return children(pid).flatMap((c) => {
    const prog = program(c).replace(/^(node|python[\d.]*)$/, 'trainer');
    const n = (seen.get(prog) ?? 0) + 1;
    seen.set(prog, n);
    const name = `${label}/${prog}${n === 1 ? '' : `-${n}`}`;
    return [[name, c] as const, ...descendants(c, name)];
  });
}

const samples: Record<string, Sample[]> = {};
/** The PID each sampled name had last (a trainer process restarted gets a new one). */
const sampledPid: Record<string, number> = {};
function sampleAll(round: number): void {
  const all = Object.entries(pids).flatMap(([name, { pid }]) => [[name, pid] as const, ...descendants(pid, name)]);
  for (const [name, pid] of all) {
    sampledPid[name] = pid;
    const p = procFacts(pid);
    if (!p) continue;
    const r = lastReport(pid);
    (samples[name] ??= []).push({
      t: Date.now(),
      round,
      ...p,
      heapMB: r ? Math.round((r.heapUsed / 2 ** 20) * 10) / 10 : null,
      externalMB: r ? Math.round((r.external / 2 ** 20) * 10) / 10 : null,
      activeHandles: r?.active ?? null,
      handleTypes: r?.resources ?? null,
    });
  }
}

/**
 * test/fixtures/jobs/tiny-script (the same training step as the tiny job, in a trainer process per site
 * over the ex-process protocol) with --rounds, every site required and a model of --floats values.
 */
async function scriptJob(dest: string): Promise<string> {
  cpSync(join(repo, 'test/fixtures/jobs/tiny-script'), dest, { recursive: true });
  const yaml = join(dest, 'job.yaml');
  writeFileSync(
    yaml,
    readFileSync(yaml, 'utf8').replace('minClients: 2', `minClients: ${opts.sites}`).replace('rounds: 3', `rounds: ${opts.rounds}`),
  );
  await writeStreamToFile(
    join(dest, 'initial.safetensors'),
    dictToStream(new Map([['w', f32([opts.floats], new Float32Array(opts.floats))]])),
  );
  return dest;
}

const describe = (v: Verdict): string =>
  v.flat === true
    ? 'flat'
    : v.flat === false
      ? `NOT flat: ${v.exceeded.join('; ')}`
      : `not judged (too few samples after warm-up): ${v.unjudged.join(', ')}`;

// ---- the run -------------------------------------------------------------------------------------

async function main(): Promise<void> {
  say(`workspace ${ws}; preparing a POC with ${opts.sites} sites`);
  const port = await freePortPair();
  const layout = await pocPrepare({ clients: opts.sites, workspace: pocDir, port });
  process.env[RESOURCE_REPORT_ENV] = reportDir;
  process.env[RESOURCE_REPORT_MS_ENV] = String(Math.max(100, Math.round((opts.interval * 1000) / 2)));
  if (opts.gc) {
    // heap and external memory after a full collection: what is still referenced, not garbage not yet collected
    process.env[RESOURCE_REPORT_GC_ENV] = '1';
    process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --expose-gc`.trim();
  }
  say('poc start (server, then sites)');
  const ticker = setInterval(() => say('poc start: waiting for the server to listen'), 1000);
  try {
    await flotillaAsync('poc', 'start', '-w', pocDir);
  } finally {
    clearInterval(ticker);
  }
  pids = readPids();
  const admin = new AdminClient(layout.admin);
  try {
    for (let sites: string[] = []; sites.length < opts.sites; await new Promise((r) => setTimeout(r, 250))) {
      const before = sites.length;
      sites = await admin.call('sites').then(
        (r) => r.map((s) => s.site),
        () => [],
      );
      if (sites.length !== before || Date.now() - lastSaid >= 1000) say(`sites connected: ${sites.length} of ${opts.sites}`);
      if (alive().length < Object.keys(pids).length) throw new Error(`a POC process died while starting: see ${join(pocDir, 'logs')}`);
    }
    const job =
      opts.trainer === 'script'
        ? await scriptJob(join(ws, 'job'))
        : tinyJob(join(ws, 'job'), { minClients: opts.sites, rounds: opts.rounds, floats: opts.floats });
    const id = await admin.submit(job);
    const submitted = Date.now();
    say(`submitted ${id}: ${opts.rounds} rounds of FedAvg, ${opts.sites} sites, ${opts.floats} float32 values`);
    let state = 'SUBMITTED';
    let done = 0;
    let detail: string | null = null;
    while (!['FINISHED', 'FAILED', 'ABORTED'].includes(state)) {
      const st = await admin.call('status', { job: id });
      state = st.state;
      detail = st.detail;
      done = st.progress?.roundsDone ?? (state === 'FINISHED' ? opts.rounds : done);
      sampleAll(done);
      const mem = Object.entries(samples)
        .map(([n, s]) => {
          const l = s.at(-1)!;
          return `${n} ${l.rssMB} MB ${l.fds} fd${l.activeHandles === null ? '' : ` ${l.activeHandles} h`}`;
        })
        .join(' | ');
      say(`${state} round ${done}/${opts.rounds} | ${mem}`);
      if (alive().length < Object.keys(pids).length) throw new Error(`a POC process died mid-job: see ${join(pocDir, 'logs')}`);
      if (!['FINISHED', 'FAILED', 'ABORTED'].includes(state)) await new Promise((r) => setTimeout(r, opts.interval * 1000));
    }
    const jobSeconds = (Date.now() - submitted) / 1000;
    // one sample more once the job is over: what the processes keep when idle again
    await new Promise((r) => setTimeout(r, opts.interval * 1000));
    sampleAll(done);
    if (state !== 'FINISHED') throw new Error(`the job ended ${state}: ${detail ?? '(no detail)'}`);
    const processes = Object.fromEntries(Object.keys(samples).map((n) => [n, summarizeProcess(sampledPid[n]!, samples[n]!, warmupRounds)]));
    const result = {
      bench: 'soak',
      rounds: done,
      sites: opts.sites,
      floats: opts.floats,
      trainer: opts.trainer,
      seconds: {
        total: Math.round((Date.now() - started) / 100) / 10,
        job: Math.round(jobSeconds * 10) / 10,
        perRound: Math.round((jobSeconds / done) * 1000) / 1000,
      },
      sampleIntervalSeconds: opts.interval,
      // heap, external memory and RSS measured right after a full collection in each process (--no-gc: not)
      collectedBeforeSample: opts.gc,
      warmupRounds,
      processes,
      verdict: verdict(processes),
      ...commitFacts(),
      machine: {
        node: process.version,
        cpus: cpus().length,
        cpu: cpus()[0]?.model,
        memGB: Math.round(totalmem() / 2 ** 30),
        nice: getPriority(),
        loadavg1mEnd: Math.round(loadavg()[0]! * 100) / 100,
      },
      // every sample, for plots: per process [round, rssMB, fds, heapMB, externalMB, activeHandles]
      series: Object.fromEntries(
        Object.entries(samples).map(([n, s]) => [n, s.map((x) => [x.round, x.rssMB, x.fds, x.heapMB, x.externalMB, x.activeHandles])]),
      ),
    };
    const text = JSON.stringify(result);
    if (opts.out) writeFileSync(opts.out, `${text}\n`);
    process.stdout.write(`${text}\n`);
    say(`done: ${done} rounds in ${result.seconds.job} s; ${describe(result.verdict)}`);
  } finally {
    admin.close();
  }
}

void main()
  .catch((e: unknown) => {
    say(`soak failed: ${(e as Error).message}`);
    process.exitCode = 1;
  })
  .then(() => stopAll(10_000))
  .finally(cleanWorkspace);
