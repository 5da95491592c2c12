/**
 * bench/validate: how long `flotilla validate <job>` takes, start to exit, as a user runs it
 * (issue 20: the error for a missing trainer module in under 2 s). Each case runs `node
 * bin/flotilla.js ...` in a fresh process, --repeat times; figures are the median and the
 * fastest wall time in ms, with the 1-minute load average (the machine may be shared).
 * Cases: `--version` (the CLI's start alone), a job whose trainer module is missing (the error
 * path), examples/hello-fedavg (a TypeScript trainer that imports tfjs), examples/pytorch-fedavg
 * (a script executor: one Python start). On Linux also the CPU time (user + system) of each run,
 * its child processes included (/proc/self/stat's cutime + cstime): on a shared machine the wall
 * time scales with the load, the CPU time much less. --built runs the compiled CLI (dist/, `npm run build`
 * first) from a folder without src/, as the npm package does; --cli <bin> another checkout's.
 * Prints one JSON object.
 *
 *   node bench/validate.ts [--repeat 5] [--built] [--cli path/to/bin/flotilla.js]
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exitOnHelp } from './usage.ts';

exitOnHelp(import.meta.url);
const args = process.argv.slice(2);
const arg = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const repeat = Number(arg('repeat') ?? 5);
const repo = fileURLToPath(new URL('..', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'flotilla-bench-validate-'));

/** The package's layout (bin/ and dist/, no src/), its files linked from this checkout. */
function builtCli(): string {
  if (!existsSync(join(repo, 'dist', 'cli', 'main.js'))) throw new Error('--built: run npm run build first');
  const root = join(tmp, 'pkg');
  mkdirSync(join(root, 'bin'), { recursive: true });
  copyFileSync(join(repo, 'bin', 'flotilla.js'), join(root, 'bin', 'flotilla.js'));
  for (const p of ['dist', 'package.json', 'node_modules', 'python', 'proto']) symlinkSync(join(repo, p), join(root, p));
  return join(root, 'bin', 'flotilla.js');
}

const cli = arg('cli') ?? (args.includes('--built') ? builtCli() : join(repo, 'bin', 'flotilla.js'));
const missing = join(tmp, 'missing-trainer');
mkdirSync(missing);
copyFileSync(join(repo, 'examples', 'pytorch-fedavg', 'initial_model.safetensors'), join(missing, 'initial_model.safetensors'));
writeFileSync(
  join(missing, 'job.yaml'),
  'name: missing-trainer\nminClients: 2\nmodel:\n  path: initial_model.safetensors\nworkflows:\n  - type: fedavg\n    rounds: 1\nexecutor:\n  trainer:\n    module: trainer.ts\n    export: trainer\n',
);

const cases: Record<string, { argv: string[]; exit: number }> = {
  version: { argv: ['--version'], exit: 0 },
  'missing-trainer': { argv: ['validate', missing], exit: 1 },
  'hello-fedavg': { argv: ['validate', join(repo, 'examples', 'hello-fedavg')], exit: 0 },
  'pytorch-fedavg': { argv: ['validate', join(repo, 'examples', 'pytorch-fedavg')], exit: 0 },
};

/** CPU ms of this process's waited-for children so far (Linux), else null. */
function childCpuMs(): number | null {
  try {
    const f = readFileSync('/proc/self/stat', 'utf8');
    const fields = f.slice(f.lastIndexOf(')') + 2).split(' '); // fields from the 3rd (state) on
    return (Number(fields[13]) + Number(fields[14])) * 10; // cutime + cstime, in clock ticks of 10 ms
  } catch {
    return null;
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const result: Record<string, { medianMs: number; minMs: number; runs: number[]; cpuMedianMs: number | null }> = {};
try {
  for (const [name, c] of Object.entries(cases)) {
    const runs: number[] = [];
    const cpu: number[] = [];
    for (let i = 0; i < repeat; i++) {
      const t = performance.now();
      const c0 = childCpuMs();
      const r = spawnSync(process.execPath, [cli, ...c.argv], { encoding: 'utf8' });
      runs.push(Math.round(performance.now() - t));
      const c1 = childCpuMs();
      if (c0 !== null && c1 !== null) cpu.push(c1 - c0);
      if (r.status !== c.exit) throw new Error(`${name}: exit ${r.status}, expected ${c.exit}: ${r.stderr}${r.stdout}`);
    }
    result[name] = { medianMs: median(runs), minMs: Math.min(...runs), runs, cpuMedianMs: cpu.length ? median(cpu) : null };
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
process.stdout.write(
  `${JSON.stringify({ bench: 'validate', cli: cli.startsWith(tmp) ? 'built (dist/)' : cli, repeat, loadavg1: Number(loadavg()[0]!.toFixed(2)), ...result })}\n`,
);
