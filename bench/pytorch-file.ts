/**
 * bench/pytorch-file: a PyTorch site with a large model, `params: file` against `params: memory`
 * (issue 20). One site process (Node: the Client API executor and ExProcessTrainerHost, as a
 * deployed site runs them) gets one train task whose model streams from a safetensors file, as it
 * would arrive off the network; its Python trainer (bench/pytorch_file_trainer.py) updates every
 * tensor in place (full) or sends rank-8 adapters only (adapter). The result is streamed and counted.
 *
 * Figures: the Node site process's peak RSS (VmHWM) and the Python process's (ru_maxrss), per run,
 * each run in its own processes. Targets: Node ≤ 300 MB in file mode; Python ≤ model + 0.5 GB
 * (full), ≤ base model + 0.5 GB (adapter). Prints one JSON object.
 *
 *   nice node --import tsx bench/pytorch-file.ts [--gb 4] [--runs file-full,file-adapter,memory-full]
 */
import { execSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ExProcessTrainerHost } from '../src/client/host/process-host.ts';
import { fileSource } from '../src/core/model-source.ts';
import { SafetensorsWriter } from '../src/core/safetensors.ts';
import { trainerExecutor } from '../src/runtime/executor.ts';

const args = process.argv.slice(2);
const arg = (name: string, def: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : def;
};
const repo = fileURLToPath(new URL('..', import.meta.url));
const PYTHON = process.env.FLOTILLA_PYTHON || '/usr/bin/python3';
const TENSOR_MB = 64;

function vmHwmMB(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : process.resourceUsage().maxRSS / 1024;
}

async function writeModel(path: string, gb: number): Promise<number> {
  const n = Math.round((gb * 1024) / TENSOR_MB);
  const side = Math.sqrt((TENSOR_MB << 20) / 4);
  const tensors = Array.from({ length: n }, (_, i) => ({ name: `layers.${i}.weight`, dtype: 'F32' as const, shape: [side, side] }));
  const w = await SafetensorsWriter.open(path, tensors, { bench: 'pytorch-file' });
  const chunk = new Float32Array(1 << 20).fill(0.5);
  const bytes = new Uint8Array(chunk.buffer);
  for (const t of tensors) for (let off = 0; off < TENSOR_MB << 20; off += bytes.byteLength) await w.write(t.name, bytes);
  await w.close();
  return n * TENSOR_MB;
}

/** One run in this process (a child of main): the site's side of one task. */
async function site(modelPath: string, mode: 'file' | 'memory', update: 'full' | 'adapter'): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'flotilla-bench-site-'));
  const host = new ExProcessTrainerHost({
    command: PYTHON,
    args: [join(repo, 'bench/pytorch_file_trainer.py'), '--update', update],
    env: { PYTHONPATH: join(repo, 'python'), OMP_NUM_THREADS: '1' },
  });
  await host.start({ siteName: 'bench', jobId: 'bench', workspace: dir, onMetric: () => undefined });
  const exec = trainerExecutor(host, { params: mode, workspace: dir });
  const t0 = performance.now();
  const out = await exec['*']!(
    {
      taskId: 't1',
      taskName: 'train',
      info: { paramsType: 'FULL', metrics: {}, meta: {}, currentRound: 0, totalRounds: 1 },
      params: (await fileSource(modelPath)).open(),
    },
    new AbortController().signal,
  );
  let resultBytes = 0;
  if (out.params) for await (const p of out.params.pieces()) resultBytes += p.bytes.byteLength;
  const seconds = (performance.now() - t0) / 1000;
  await out.cleanup?.();
  await host.stop();
  rmSync(dir, { recursive: true, force: true });
  process.stdout.write(
    `${JSON.stringify({ mode, update, seconds, nodePeakRssMB: vmHwmMB(), pythonPeakRssMB: out.info.metrics.peak_rss_mb, resultMB: resultBytes / 2 ** 20 })}\n`,
  );
}

async function main(): Promise<void> {
  const role = arg('role', '');
  if (role === 'site') return site(arg('model', ''), arg('mode', 'file') as 'file' | 'memory', arg('update', 'full') as 'full' | 'adapter');
  const gb = Number(arg('gb', '4'));
  const runs = arg('runs', 'file-full,file-adapter,memory-full').split(',');
  const dir = mkdtempSync(join(tmpdir(), 'flotilla-bench-pyfile-'));
  try {
    const modelPath = join(dir, 'model.safetensors');
    const modelMB = await writeModel(modelPath, gb);
    const results: Record<string, unknown> = {};
    for (const r of runs) {
      const [mode, update] = r.split('-') as ['file' | 'memory', 'full' | 'adapter'];
      const c = spawnSync(
        process.execPath,
        [
          '--import',
          'tsx',
          '--max-old-space-size=16384',
          fileURLToPath(import.meta.url),
          '--role',
          'site',
          '--model',
          modelPath,
          '--mode',
          mode,
          '--update',
          update,
        ],
        { encoding: 'utf8', maxBuffer: 1 << 22 },
      );
      if (c.status !== 0) throw new Error(`${r} failed: ${c.stderr}`);
      results[r] = JSON.parse(c.stdout.trim().split('\n').pop()!);
    }
    const f = results['file-full'] as { nodePeakRssMB: number; pythonPeakRssMB: number } | undefined;
    const a = results['file-adapter'] as { nodePeakRssMB: number; pythonPeakRssMB: number } | undefined;
    let commit = '';
    try {
      commit = execSync('git rev-parse --short HEAD', { cwd: repo, encoding: 'utf8' }).trim();
    } catch {
      /* not a checkout */
    }
    process.stdout.write(
      `${JSON.stringify({
        bench: 'pytorch-file',
        modelMB,
        runs: results,
        targets: {
          nodeFileModeLe300MB: f && a ? Math.max(f.nodePeakRssMB, a.nodePeakRssMB) <= 300 : null,
          pythonFullLeModelPlus512MB: f ? f.pythonPeakRssMB <= modelMB + 512 : null,
          pythonAdapterLeBasePlus512MB: a ? a.pythonPeakRssMB <= modelMB + 512 : null,
        },
        machine: {
          node: process.version,
          cpus: cpus().length,
          cpu: cpus()[0]?.model,
          memGB: Math.round(totalmem() / 2 ** 30),
          python: PYTHON,
        },
        commit,
      })}\n`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
