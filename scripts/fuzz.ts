/**
 * The long fuzz run: every parser of untrusted input (test/helpers/fuzz-targets.ts) for `--cases N`
 * cases each (default 100,000), one child process per parser, so that a hang (no progress for
 * --stall seconds) or a crash of the process itself is caught and named. Invariants per case: the
 * parser accepts or throws its own typed error; the case ends within --case-timeout ms; the memory
 * it allocates (ArrayBuffers, counted as allocated, touched or not) stays under --max-alloc-mb.
 *
 *   node --conditions=flotilla-source --import tsx scripts/fuzz.ts [--cases 100000] [--only a,b] [--seed N]
 *
 * Prints one JSON object (per parser: cases, seconds, slowest case, peak allocation, peak RSS).
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import fc from 'fast-check';

interface Progress {
  target: string;
  done: number;
  maxCaseMs: number;
  peakAllocMb: number;
  ok?: boolean;
  error?: string;
  seconds?: number;
  maxRssMb?: number;
}

const opts = new Command()
  .option('--cases <n>', 'cases per parser', '100000')
  .option('--only <names>', 'comma-separated parsers (default: all)')
  .option('--seed <n>', 'fast-check seed (default: random, printed)')
  .option('--case-timeout <ms>', 'longest a single case may take', '10000')
  .option('--stall <s>', 'seconds without progress before a child counts as hung', '60')
  .option('--max-alloc-mb <mb>', 'most ArrayBuffer memory a case may leave allocated', '256')
  .option('--child <name>', 'internal: run one parser in this process')
  .parse()
  .opts<{ cases: string; only?: string; seed?: string; caseTimeout: string; stall: string; maxAllocMb: string; child?: string }>();

const cases = Number(opts.cases);
const seed = opts.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(opts.seed);

async function child(name: string): Promise<void> {
  const { TARGETS, cleanupFuzz, runCase } = await import('../test/helpers/fuzz-targets.ts');
  const t = TARGETS.find((x) => x.name === name);
  if (!t) throw new Error(`no fuzz target ${name}`);
  const caseTimeout = Number(opts.caseTimeout);
  const maxAlloc = Number(opts.maxAllocMb) * 2 ** 20;
  const base = process.memoryUsage().arrayBuffers;
  const p: Progress = { target: name, done: 0, maxCaseMs: 0, peakAllocMb: 0 };
  const report = (): void => void process.stdout.write(`${JSON.stringify(p)}\n`);
  // Progress is reported from inside the property, not from a timer: a target whose work is
  // synchronous (unpackJob, readJobConfig, readProject) resolves each case through microtasks only,
  // so a timer never fires during fc.assert and the parent's watchdog saw a working child as hung
  // (the "stall" of job-bundle-unpack at >= 20,000 cases: the run outlasted the start-up allowance).
  let lastReport = performance.now();
  const start = performance.now();
  try {
    await fc.assert(
      fc.asyncProperty(t.arbitrary, async (input) => {
        const t0 = performance.now();
        let timeout: NodeJS.Timeout | undefined;
        await Promise.race([
          runCase(t, input),
          new Promise<never>((_, reject) => {
            timeout = setTimeout(() => reject(new Error(`case still running after ${caseTimeout} ms (hang)`)), caseTimeout);
          }),
        ]).finally(() => clearTimeout(timeout));
        const ms = performance.now() - t0;
        const alloc = process.memoryUsage().arrayBuffers - base;
        p.done++;
        p.maxCaseMs = Math.max(p.maxCaseMs, ms);
        p.peakAllocMb = Math.max(p.peakAllocMb, alloc / 2 ** 20);
        if (performance.now() - lastReport > 2000) {
          lastReport = performance.now();
          report();
        }
        if (alloc > maxAlloc) throw new Error(`a case left ${(alloc / 2 ** 20).toFixed(0)} MB allocated (limit ${opts.maxAllocMb} MB)`);
      }),
      { numRuns: cases, seed, endOnFailure: true },
    );
    p.ok = true;
  } catch (e) {
    p.ok = false;
    p.error = String((e as Error).message).slice(0, 2000);
  } finally {
    cleanupFuzz();
  }
  p.seconds = (performance.now() - start) / 1000;
  p.maxRssMb = process.resourceUsage().maxRSS / 1024;
  report();
}

/** Runs one parser in a child process; resolves with its last report (a hang or a crash is reported as such). */
function runChild(name: string): Promise<Progress> {
  return new Promise((resolve) => {
    const args = [...process.execArgv, fileURLToPath(import.meta.url), '--child', name, '--cases', String(cases), '--seed', String(seed)];
    args.push('--case-timeout', opts.caseTimeout, '--max-alloc-mb', opts.maxAllocMb);
    const c = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let last: Progress = { target: name, done: 0, maxCaseMs: 0, peakAllocMb: 0 };
    let stderr = '';
    let buf = '';
    let stalled = false;
    let watchdog = setTimeout(() => undefined, 0);
    const arm = (factor = 1): void => {
      clearTimeout(watchdog);
      watchdog = setTimeout(
        () => {
          stalled = true;
          c.kill('SIGKILL');
        },
        Number(opts.stall) * 1000 * factor,
      );
    };
    // starting up (tsx compiling the sources) on a busy machine takes longer than any case
    arm(5);
    c.stdout.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const p = JSON.parse(line) as Progress;
          if (p.done !== last.done || p.ok !== undefined) arm();
          last = p;
          process.stderr.write(`\r${name}: ${p.done}/${cases}   `);
        } catch {
          process.stderr.write(`${line}\n`);
        }
      }
    });
    c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
    c.on('close', (code, signal) => {
      clearTimeout(watchdog);
      process.stderr.write('\n');
      if (last.ok === undefined)
        last = {
          ...last,
          ok: false,
          error: stalled ? `no progress for ${opts.stall} s after ${last.done} cases (hang)` : `child exited ${code ?? signal}: ${stderr}`,
        };
      resolve(last);
    });
  });
}

if (opts.child) await child(opts.child);
else {
  const { TARGETS } = await import('../test/helpers/fuzz-targets.ts');
  const names = opts.only ? opts.only.split(',') : TARGETS.map((t) => t.name);
  const results: Progress[] = [];
  for (const n of names) results.push(await runChild(n));
  const out = {
    seed,
    casesPerParser: cases,
    node: process.version,
    parsers: results.map((r) => ({
      parser: r.target,
      ok: r.ok,
      cases: r.done,
      seconds: Number((r.seconds ?? 0).toFixed(1)),
      casesPerSecond: r.seconds ? Math.round(r.done / r.seconds) : 0,
      slowestCaseMs: Number(r.maxCaseMs.toFixed(1)),
      peakAllocMb: Number(r.peakAllocMb.toFixed(1)),
      maxRssMb: Math.round(r.maxRssMb ?? 0),
      ...(r.error !== undefined && { error: r.error }),
    })),
  };
  console.log(JSON.stringify(out, null, 2));
  process.exitCode = results.every((r) => r.ok) ? 0 : 1;
}
