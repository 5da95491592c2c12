/**
 * FedAvg of a large model through the real deployment, with and without
 * offload: a provisioned project, the server alone in its own process (so its
 * VmHWM is its own), N client processes (one per site), gRPC with mutual TLS
 * on loopback for sessions and admin, the jobs' payloads over the TLS data plane
 * (`--transport tls`, the default) or over gRPC calls (`--transport grpc`), a job
 * submitted with the admin API. The initial model is a
 * float32 safetensors file of many tensors (some of 256 MB) that the job's
 * model module names by path (it is far too large for the job bundle); the
 * trainer (`params: file`) adds a site-dependent constant to the received file
 * in place, a tensor slice at a time, and sends the file back, so clients never
 * hold the model either.
 *
 * Values are multiples of 1/4 in [-32, 32) and weights are chosen so that every
 * partial sum is exact in float32: the final global model must equal
 * initial + rounds × shift element for element, whatever order the results
 * arrive in; the benchmark checks every element.
 *
 * Measured per (model size × offload): server peak RSS (VmHWM of the server
 * process), largest client peak RSS, seconds per round (the server's own round
 * timing), job wall time. Prints one JSON object (and writes it to --out).
 *
 *   nice -n 10 node --conditions=flotilla-source --import tsx bench/deployment-large.ts [--sizes 0.5,2] [--modes memory,offload]
 *       [--clients 8] [--rounds 2] [--transport tls|grpc] [--dir /tmp] [--out bench/results/deployment-large.json]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AdminClient } from '../src/admin/admin-client.ts';
import { commitFacts } from './commit.ts';
import { SafetensorsFile, SafetensorsWriter } from '../src/core/safetensors.ts';
import type { TensorInfo } from '../src/core/safetensors-header.ts';
import { parseProject } from '../src/provision/project.ts';
import { provision } from '../src/provision/provision.ts';
import type { RoundSummary } from '../src/workflows/workflow.ts';
import { exitOnHelp } from './usage.ts';

exitOnHelp(import.meta.url);

const argv = process.argv.slice(2);
const opt = (name: string, d: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : d;
};
const sizesGB = opt('sizes', '0.5,2').split(',').map(Number);
const modes = opt('modes', 'memory,offload').split(',') as ('memory' | 'offload')[];
const nClients = Number(opt('clients', '8'));
const rounds = Number(opt('rounds', '2'));
const transport = opt('transport', 'tls');
if (transport !== 'tls' && transport !== 'grpc') throw new Error(`--transport must be tls or grpc, got "${transport}"`);
const baseDir = opt('dir', tmpdir());
const repo = fileURLToPath(new URL('..', import.meta.url));
const outFile = opt('out', join(repo, 'bench/results/deployment-large.json'));
for (const s of sizesGB) if (!(s > 0)) throw new Error(`--sizes: ${s} is not a positive number of GB`);
for (const m of modes) if (m !== 'memory' && m !== 'offload') throw new Error(`--modes: ${String(m)} is neither memory nor offload`);
if (!Number.isInteger(nClients) || nClients < 2) throw new Error('--clients must be an integer ≥ 2');
if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds must be an integer ≥ 1');

const MB = 2 ** 20;
const cli = join(repo, 'src/cli/main.ts');
const tmp = mkdtempSync(join(baseDir, 'flotilla-large-'));

// ---- the model ----------------------------------------------------------------

/** Element j of tensor t of the initial model: a multiple of 1/4 in [-32, 32). */
const initialValue = (t: number, j: number): number => (Math.imul(j + t * 7919, 2654435761) >>> 24) * 0.25 - 32;

/** Site i (0-based) adds i + 1; weights are 1 except the last site's, N + 1, so the weighted mean shift is exact for N = 8 (100/16). */
const siteWeight = (i: number): number => (i === nClients - 1 ? nClients + 1 : 1);
const totalWeight = Array.from({ length: nClients }, (_, i) => siteWeight(i)).reduce((a, b) => a + b, 0);
const shift = Array.from({ length: nClients }, (_, i) => siteWeight(i) * (i + 1)).reduce((a, b) => a + b, 0) / totalWeight;

/** Layout: one 256 MB "embed" tensor per whole GB (at least one), then 16 MB weights, each with a 4 KB bias. */
function layout(gb: number): TensorInfo[] {
  const bytes = Math.round(gb * 1024) * MB;
  const big = Math.max(1, Math.floor(bytes / (1024 * MB)));
  const tensors: TensorInfo[] = [];
  for (let k = 0; k < big; k++) tensors.push({ name: `embed.${k}`, dtype: 'F32', shape: [65_536, 1024] });
  const rest = Math.max(0, bytes - big * 256 * MB);
  for (let i = 0; i < Math.floor(rest / (16 * MB)); i++) {
    tensors.push({ name: `layers.${i}.weight`, dtype: 'F32', shape: [1024, 4096] });
    tensors.push({ name: `layers.${i}.bias`, dtype: 'F32', shape: [1024] });
  }
  return tensors;
}

async function writeModel(path: string, tensors: TensorInfo[]): Promise<void> {
  const w = await SafetensorsWriter.open(path, tensors, { bench: 'deployment-large' });
  const chunk = new Float32Array(1 << 20);
  for (let t = 0; t < tensors.length; t++) {
    const n = tensors[t]!.shape.reduce((a, b) => a * b, 1);
    for (let off = 0; off < n; off += chunk.length) {
      const m = Math.min(chunk.length, n - off);
      for (let j = 0; j < m; j++) chunk[j] = initialValue(t, off + j);
      await w.write(tensors[t]!.name, new Uint8Array(chunk.buffer, 0, m * 4));
    }
  }
  await w.close();
}

/** Every element of the final model against initial + rounds × shift. */
async function verify(
  path: string,
  tensors: TensorInfo[],
  rounds: number,
): Promise<{ elements: number; mismatches: number; maxAbsError: number; firstMismatch: string | null }> {
  const f = await SafetensorsFile.open(path);
  let elements = 0;
  let mismatches = 0;
  let maxAbsError = 0;
  let firstMismatch: string | null = null;
  try {
    for (let t = 0; t < tensors.length; t++) {
      const { name, shape } = tensors[t]!;
      const n = shape.reduce((a, b) => a * b, 1);
      for (let off = 0; off < n; off += 1 << 20) {
        const m = Math.min(1 << 20, n - off);
        const bytes = await f.readRange(name, off * 4, m * 4);
        const got = new Float32Array(bytes.buffer, bytes.byteOffset, m);
        for (let j = 0; j < m; j++) {
          const want = Math.fround(initialValue(t, off + j) + rounds * shift);
          const err = Math.abs(got[j]! - want);
          if (err > maxAbsError) maxAbsError = err;
          if (err !== 0) {
            mismatches++;
            firstMismatch ??= `${name}[${off + j}]: ${got[j]} ≠ ${want}`;
          }
        }
        elements += m;
      }
    }
  } finally {
    await f.close();
  }
  return { elements, mismatches, maxAbsError, firstMismatch };
}

// ---- the job folder -----------------------------------------------------------

function writeJob(dir: string, modelPath: string, offload: boolean): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), '{ "type": "module" }\n'); // job code is ES modules
  writeFileSync(
    join(dir, 'job.yaml'),
    `name: large-${offload ? 'offload' : 'memory'}
minClients: ${nClients}
model:
  module: model.ts
  export: initialModel
workflows:
  - type: fedavg
    rounds: ${rounds}
    offload: ${offload}
executor:
  params: file
  trainer:
    module: trainer.ts
    factory: createTrainer
`,
  );
  // the model is far larger than a job bundle: the module names the file on the server
  writeFileSync(join(dir, 'model.ts'), `export function initialModel() { return ${JSON.stringify(modelPath)}; }\n`);
  writeFileSync(
    join(dir, 'trainer.ts'),
    `import { open } from 'node:fs/promises';
import { SafetensorsFile } from 'flotilla/core';

// Adds (siteIndex + 1) to every float32 of the received file, in place, 4 MiB at a time, and sends the file back.
export function createTrainer(ctx) {
  const add = ctx.siteIndex + 1;
  const weight = ctx.siteIndex === ctx.numSites - 1 ? ctx.numSites + 1 : 1;
  return async (flare) => {
    await flare.init();
    const buf = new Float32Array(1 << 20);
    const bytes = new Uint8Array(buf.buffer);
    while (flare.isRunning()) {
      const m = await flare.receive();
      if (!m) break;
      if (!m.paramsPath) throw new Error('expected params: file');
      const sf = await SafetensorsFile.open(m.paramsPath);
      const { tensors, dataStart } = sf.header;
      await sf.close();
      const fh = await open(m.paramsPath, 'r+');
      try {
        for (const t of tensors) {
          if (t.dtype !== 'F32') throw new Error('expected F32 tensors');
          for (let pos = t.begin; pos < t.end; pos += bytes.length) {
            const n = Math.min(bytes.length, t.end - pos);
            let got = 0;
            while (got < n) got += (await fh.read(bytes, got, n - got, dataStart + pos + got)).bytesRead;
            for (let j = 0; j < n / 4; j++) buf[j] += add;
            let put = 0;
            while (put < n) put += (await fh.write(bytes, put, n - put, dataStart + pos + put)).bytesWritten;
          }
        }
      } finally {
        await fh.close();
      }
      await flare.send({ params: new Map(), paramsPath: m.paramsPath, paramsType: 'FULL', metrics: {}, meta: { numSamples: weight }, currentRound: m.currentRound, totalRounds: m.totalRounds });
    }
  };
}
`,
  );
}

// ---- processes ----------------------------------------------------------------

interface Proc {
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

function start(args: string[]): Proc {
  const child = spawn(process.execPath, ['--import', 'tsx', cli, ...args], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  const keep = (b: Buffer): void => {
    text = (text + b.toString()).slice(-20_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, out: () => text, exited };
}

async function waitFor(p: Proc, re: RegExp, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!re.test(p.out())) {
    if (Date.now() > deadline || p.child.exitCode !== null) throw new Error(`waiting for ${re}: got\n${p.out()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** VmHWM / VmRSS of a live process, in MB. */
function memMB(pid: number): { hwm: number; rss: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
  return { hwm: Math.round(kb('VmHWM') / 1024), rss: Math.round(kb('VmRSS') / 1024) };
}

async function stopAll(procs: Proc[]): Promise<void> {
  for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGTERM');
  await Promise.race([Promise.all(procs.map((p) => p.exited)), new Promise((r) => setTimeout(r, 10_000))]);
  for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

// ---- one run ------------------------------------------------------------------

interface RunResult {
  modelGB: number;
  modelMB: number;
  tensors: number;
  largestTensorMB: number;
  offload: boolean;
  serverIdleRssMB: number;
  serverPeakRssMB: number;
  serverPeakOverModel: number;
  clientPeakRssMB: number;
  clientPeakRssMBEach: number[];
  roundSeconds: number[];
  secondsPerRound: number;
  jobSeconds: number;
  wallSeconds: number;
  verified: Awaited<ReturnType<typeof verify>>;
}

async function runOne(
  kits: Record<string, string>,
  port: number,
  gb: number,
  modelPath: string,
  tensors: TensorInfo[],
  offload: boolean,
): Promise<RunResult> {
  const tag = `${gb}GB-${offload ? 'offload' : 'memory'}`;
  const dir = join(tmp, tag);
  const jobDir = join(dir, 'job');
  writeJob(jobDir, modelPath, offload);
  const procs: Proc[] = [];
  let admin: AdminClient | null = null;
  try {
    const server = start([
      'server',
      'start',
      kits.server!,
      '-w',
      join(dir, 'server'),
      '-p',
      String(port),
      '--data-port',
      transport === 'tls' ? String(await freePort()) : 'none',
    ]);
    procs.push(server);
    await waitFor(server, /listening on port/);
    const clients = Array.from({ length: nClients }, (_, i) =>
      start(['client', 'start', kits[`site-${i + 1}`]!, '-w', join(dir, `site-${i + 1}`)]),
    );
    procs.push(...clients);
    await Promise.all(clients.map((c) => waitFor(c, /connected/)));
    admin = new AdminClient(kits['bench@hub.org']!, { host: '127.0.0.1', port });
    const serverPid = server.child.pid!;
    const serverIdle = memMB(serverPid).rss;
    const t0 = Date.now();
    const id = await admin.submit(jobDir);
    let result: { rounds: RoundSummary[]; seconds: number };
    for (;;) {
      const s = await admin.call('status', { job: id });
      if (s.state === 'FINISHED') {
        result = s.result!;
        break;
      }
      if (s.state !== 'SUBMITTED' && s.state !== 'RUNNING')
        throw new Error(`job ${id} ${s.state}: ${s.detail}\nserver: ${server.out().slice(-3000)}`);
      if (procs.some((p) => p.child.exitCode !== null))
        throw new Error(`a process exited during the job:\n${procs.map((p) => p.out().slice(-1500)).join('\n---\n')}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    const wallSeconds = (Date.now() - t0) / 1000;
    const serverPeak = memMB(serverPid).hwm;
    const clientPeaks = clients.map((c) => memMB(c.child.pid!).hwm);
    const finalModel = join(dir, 'server', 'jobs', id, 'workspace', 'server', 'global_model.safetensors');
    const verified = await verify(finalModel, tensors, rounds);
    const modelMB = Math.round(statSync(modelPath).size / MB);
    const roundSeconds = result.rounds.map((r) => +r.seconds.toFixed(2));
    return {
      modelGB: gb,
      modelMB,
      tensors: tensors.length,
      largestTensorMB: Math.max(...tensors.map((t) => (t.shape.reduce((a, b) => a * b, 1) * 4) / MB)),
      offload,
      serverIdleRssMB: serverIdle,
      serverPeakRssMB: serverPeak,
      serverPeakOverModel: +(serverPeak / modelMB).toFixed(3),
      clientPeakRssMB: Math.max(...clientPeaks),
      clientPeakRssMBEach: clientPeaks,
      roundSeconds,
      secondsPerRound: +(roundSeconds.reduce((a, b) => a + b, 0) / roundSeconds.length).toFixed(2),
      jobSeconds: +result.seconds.toFixed(2),
      wallSeconds: +wallSeconds.toFixed(2),
      verified,
    };
  } finally {
    admin?.close();
    await stopAll(procs);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const port = await freePort();
  const participants = [
    { type: 'server', name: 'server', org: 'hub', host: 'localhost', port },
    ...Array.from({ length: nClients }, (_, i) => ({ type: 'client', name: `site-${i + 1}`, org: `org-${i + 1}` })),
    { type: 'admin', name: 'bench@hub.org', org: 'hub', role: 'project_admin' },
  ];
  const { kits } = await provision(parseProject({ name: 'large', participants }), { outDir: join(tmp, 'kits') });
  const runs: RunResult[] = [];
  try {
    for (const gb of sizesGB) {
      const tensors = layout(gb);
      const modelPath = join(tmp, `model-${gb}GB.safetensors`);
      const tw = Date.now();
      await writeModel(modelPath, tensors);
      process.stderr.write(`model ${gb} GB written in ${((Date.now() - tw) / 1000).toFixed(1)} s\n`);
      try {
        for (const mode of modes) {
          const r = await runOne(kits, port, gb, modelPath, tensors, mode === 'offload');
          process.stderr.write(`${JSON.stringify(r)}\n`);
          runs.push(r);
        }
      } finally {
        rmSync(modelPath, { force: true });
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  const result = {
    bench: 'deployment-large',
    ...commitFacts(),
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model, memGB: Math.round(totalmem() / 2 ** 30), node: process.version },
    clients: nClients,
    rounds,
    clientProcesses: nClients,
    transport: `${transport === 'tls' ? 'sessions over gRPC, job payloads over the TLS data plane' : 'gRPC'}, mutual TLS on loopback, server and each client in its own process`,
    trainer: 'params: file; adds siteIndex+1 to the received file in place, 4 MiB at a time',
    expectedShiftPerRound: shift,
    runs,
  };
  const text = JSON.stringify(result);
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, `${text}\n`);
  process.stdout.write(`${text}\n`);
}

await main();
