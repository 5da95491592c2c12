/**
 * Message quantization (src/filters): bytes on the wire, codec speed, and memory while a large
 * model streams quantized through a real deployment. Prints one JSON object (and writes --out).
 *
 * 1. wire: a float32 model of --model-gb (default 1 GiB: 64 MiB tensors with 4 KiB biases) streamed
 *    through each format's quantizer; bytes of the encoded stream (safetensors header, scales and
 *    codes: what the data plane carries) against the float32 stream's.
 * 2. speed: each format's quantizer and dequantizer on one core (this thread), GB of float32 in
 *    (quantize) and out (dequantize) per CPU second (the machine may be shared: wall time would
 *    measure the neighbours), over --speed-mb of 1 MiB pieces.
 * 3. stream: a provisioned project, the server and two sites each in its own process (mutual TLS,
 *    payloads over the data plane), FedAvg with `offload: true` and `params: file` on a float32
 *    model of --stream-gb (default 4) with `filters: [{type: quantize, bits: B}]` (tasks and
 *    results): peak RSS (VmHWM) of every process per format, and the final model against the
 *    exact one (the error the quantization leaves).
 *
 *   nice -n 10 node --conditions=flotilla-source --import tsx bench/filters.ts [--model-gb 1] [--speed-mb 256]
 *       [--stream-gb 4] [--stream-formats 8,4] [--dir /tmp] [--out bench/results/filters.json]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AdminClient } from '../src/admin/admin-client.ts';
import { SafetensorsFile, SafetensorsWriter } from '../src/core/safetensors.ts';
import type { TensorInfo } from '../src/core/safetensors-header.ts';
import { type TensorPiece, type TensorStream, encodeStream, encodedBytes } from '../src/core/tensor-stream.ts';
import { type QuantFormat, dequantizeStream, encodedSize, quantizeStream } from '../src/filters/index.ts';
import { parseProject } from '../src/provision/project.ts';
import { provision } from '../src/provision/provision.ts';
import { commitFacts } from './commit.ts';
import { exitOnHelp } from './usage.ts';

exitOnHelp(import.meta.url);

const argv = process.argv.slice(2);
const opt = (name: string, d: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : d;
};
const modelGB = Number(opt('model-gb', '1'));
const speedMB = Number(opt('speed-mb', '256'));
const streamGB = Number(opt('stream-gb', '4'));
const streamBits = opt('stream-formats', '8,4').split(',').filter(Boolean).map(Number) as (8 | 4 | 16)[];
const baseDir = opt('dir', tmpdir());
const repo = fileURLToPath(new URL('..', import.meta.url));
const outFile = opt('out', join(repo, 'bench/results/filters.json'));
const MB = 2 ** 20;
const FORMATS: { format: QuantFormat; blockSize: number; label: string }[] = [
  { format: 'float16', blockSize: 0, label: 'float16' },
  { format: 'bfloat16', blockSize: 0, label: 'bfloat16' },
  { format: 'int8', blockSize: 256, label: 'blockwise8 (block 256)' },
  { format: 'nf4', blockSize: 64, label: 'nf4 (block 64)' },
  { format: 'fp4', blockSize: 64, label: 'fp4 (block 64)' },
];

/** Layout of a float32 model: 64 MiB weights, each with a 4 KiB bias. */
function layout(gb: number): TensorInfo[] {
  const n = Math.max(1, Math.round((gb * 1024) / 64));
  return Array.from({ length: n }, (_, i) => [
    { name: `layers.${i}.weight`, dtype: 'F32' as const, shape: [4096, 4096] },
    { name: `layers.${i}.bias`, dtype: 'F32' as const, shape: [1024] },
  ]).flat();
}

/** A synthetic stream of the layout whose every 1 MiB piece is `chunk` (values like trained weights). */
function synthetic(tensors: TensorInfo[], chunk: Uint8Array): TensorStream {
  return {
    header: { tensors, metadata: {} },
    async *pieces(): AsyncGenerator<TensorPiece> {
      for (let i = 0; i < tensors.length; i++) {
        const t = tensors[i]!;
        const total = t.shape.reduce((a, b) => a * b, 1) * 4;
        for (let o = 0; o < total; o += chunk.byteLength) {
          const bytes = chunk.subarray(0, Math.min(chunk.byteLength, total - o));
          yield { index: i, name: t.name, dtype: 'F32', shape: t.shape, offset: o, bytes, tensorBytes: total };
        }
      }
    },
  };
}

function weightsChunk(): Uint8Array {
  const v = new Float32Array(MB / 4);
  let s = 12345;
  for (let i = 0; i < v.length; i++) {
    // a rough normal (sum of uniforms), scale 0.02 like initialized weights
    let x = 0;
    for (let k = 0; k < 4; k++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      x += s / 2 ** 32 - 0.5;
    }
    v[i] = x * 0.02 * 1.7;
  }
  return new Uint8Array(v.buffer);
}

async function countBytes(stream: TensorStream): Promise<number> {
  let n = 0;
  for await (const b of encodeStream(stream)) n += b.byteLength;
  return n;
}

async function wire(): Promise<Record<string, unknown>> {
  const tensors = layout(modelGB);
  const chunk = weightsChunk();
  const float32 = encodedBytes({ tensors, metadata: {} });
  const out: Record<string, unknown> = { modelBytes: float32, modelGiB: +(float32 / 2 ** 30).toFixed(3), tensors: tensors.length };
  for (const f of FORMATS) {
    const t0 = performance.now();
    const bytes = await countBytes(quantizeStream(synthetic(tensors, chunk), { format: f.format, blockSize: f.blockSize }));
    const scales = f.blockSize ? tensors.reduce((a, t) => a + 4 * Math.ceil(t.shape.reduce((x, y) => x * y, 1) / f.blockSize), 0) : 0;
    out[f.format] = {
      label: f.label,
      bytes,
      percentOfFloat32: +((100 * bytes) / float32).toFixed(2),
      scaleBytes: scales,
      seconds: +((performance.now() - t0) / 1000).toFixed(2),
    };
    process.stderr.write(`wire ${f.format}: ${bytes} bytes (${((100 * bytes) / float32).toFixed(2)} %)\n`);
  }
  return out;
}

/** CPU seconds (user + system) of this process since `from`: the machine is shared, so per-core speed is bytes per CPU second. */
function cpuSeconds(from: NodeJS.CpuUsage): number {
  const u = process.cpuUsage(from);
  return (u.user + u.system) / 1e6;
}

async function speed(): Promise<Record<string, unknown>> {
  const chunk = weightsChunk();
  const n = Math.max(1, Math.round(speedMB));
  const tensors: TensorInfo[] = [{ name: 'w', dtype: 'F32', shape: [n * (MB / 4)] }];
  const out: Record<string, unknown> = {
    megabytes: n,
    pieceBytes: MB,
    measure: 'GB of float32 per CPU second of this thread (user + system)',
  };
  for (const f of FORMATS) {
    // quantize: float32 in
    let t0 = process.cpuUsage();
    for await (const _ of quantizeStream(synthetic(tensors, chunk), { format: f.format, blockSize: f.blockSize }).pieces()) void _;
    const q = (n * MB) / cpuSeconds(t0) / 1e9;
    // dequantize: one quantized 1 MiB piece repeated (whole blocks, so the repetition is a valid stream)
    const one = quantizeStream(synthetic([{ name: 'w', dtype: 'F32', shape: [MB / 4] }], chunk), {
      format: f.format,
      blockSize: f.blockSize,
    });
    let piece: TensorPiece | null = null;
    for await (const p of one.pieces()) piece = p;
    const qt = one.header.tensors[0]!;
    const perPiece = piece!.bytes.byteLength;
    const elements = n * (MB / 4);
    const shape = f.blockSize ? [encodedSize(f.format as 'int8', elements, f.blockSize)] : tensors[0]!.shape;
    const wireStream: TensorStream = {
      header: { tensors: [{ name: 'w', dtype: qt.dtype, shape }], metadata: { ...one.header.metadata } },
      async *pieces() {
        for (let i = 0; i < n; i++)
          yield { index: 0, name: 'w', dtype: qt.dtype, shape, offset: i * perPiece, bytes: piece!.bytes, tensorBytes: perPiece * n };
      },
    };
    const meta = JSON.parse(wireStream.header.metadata['flotilla.quantized']!) as Record<string, { s: number[] }>;
    meta.w!.s = [elements];
    (wireStream.header.metadata as Record<string, string>)['flotilla.quantized'] = JSON.stringify(meta);
    t0 = process.cpuUsage();
    for await (const _ of dequantizeStream(wireStream).pieces()) void _;
    const d = (n * MB) / cpuSeconds(t0) / 1e9;
    out[f.format] = { quantizeGBps: +q.toFixed(3), dequantizeGBps: +d.toFixed(3) };
    process.stderr.write(`speed ${f.format}: quantize ${q.toFixed(3)} GB/s, dequantize ${d.toFixed(3)} GB/s (float32 side, one core)\n`);
  }
  return out;
}

// ---- the deployment ----------------------------------------------------------------------------

interface Proc {
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}
const cli = join(repo, 'src/cli/main.ts');

function start(args: string[]): Proc {
  const child = spawn(process.execPath, ['--import', 'tsx', cli, ...args], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  const keep = (b: Buffer): void => {
    text = (text + b.toString()).slice(-20_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  return { child, out: () => text, exited: new Promise((r) => child.on('exit', (code) => r(code))) };
}

async function waitFor(p: Proc, re: RegExp, ms = 300_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!re.test(p.out())) {
    if (Date.now() > deadline || p.child.exitCode !== null) throw new Error(`waiting for ${re}: got\n${p.out()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function hwmMB(pid: number): number {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Math.round(Number(/^VmHWM:\s+(\d+) kB/m.exec(s)?.[1] ?? NaN) / 1024);
}

/** CPU seconds (user + system) a live process has used (clock ticks of 1/100 s in /proc/<pid>/stat). */
function procCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

const initialValue = (j: number): number => Math.sin(j * 0.001) * 0.05;

async function writeModel(path: string, tensors: TensorInfo[]): Promise<void> {
  const w = await SafetensorsWriter.open(path, tensors, { bench: 'filters' });
  const chunk = new Float32Array(MB / 4);
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    for (let off = 0; off < n; off += chunk.length) {
      const m = Math.min(chunk.length, n - off);
      for (let j = 0; j < m; j++) chunk[j] = initialValue(off + j);
      await w.write(t.name, new Uint8Array(chunk.buffer, 0, m * 4));
    }
  }
  await w.close();
}

function writeJob(dir: string, modelPath: string, bits: number): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), '{ "type": "module" }\n');
  writeFileSync(
    join(dir, 'job.yaml'),
    `name: filters-${bits}
minClients: 2
model: { module: model.ts, export: initialModel }
workflows:
  - { type: fedavg, rounds: 1, offload: true }
executor:
  params: file
  trainer: { module: trainer.ts, factory: createTrainer }
filters:
  - { type: quantize, bits: ${bits} }
`,
  );
  writeFileSync(join(dir, 'model.ts'), `export function initialModel() { return ${JSON.stringify(modelPath)}; }\n`);
  // adds 0.01 × (siteIndex + 1) to every float32 of the received file in place, 4 MiB at a time
  writeFileSync(
    join(dir, 'trainer.ts'),
    `import { open } from 'node:fs/promises';
import { SafetensorsFile } from 'flotilla/core';
export function createTrainer(ctx) {
  const add = 0.01 * (ctx.siteIndex + 1);
  return async (flare) => {
    await flare.init();
    const buf = new Float32Array(1 << 20);
    const bytes = new Uint8Array(buf.buffer);
    while (flare.isRunning()) {
      const m = await flare.receive();
      if (!m) break;
      const sf = await SafetensorsFile.open(m.paramsPath);
      const { tensors, dataStart } = sf.header;
      await sf.close();
      const fh = await open(m.paramsPath, 'r+');
      try {
        for (const t of tensors)
          for (let pos = t.begin; pos < t.end; pos += bytes.length) {
            const n = Math.min(bytes.length, t.end - pos);
            let got = 0;
            while (got < n) got += (await fh.read(bytes, got, n - got, dataStart + pos + got)).bytesRead;
            for (let j = 0; j < n / 4; j++) buf[j] += add;
            let put = 0;
            while (put < n) put += (await fh.write(bytes, put, n - put, dataStart + pos + put)).bytesWritten;
          }
      } finally {
        await fh.close();
      }
      await flare.send({ params: new Map(), paramsPath: m.paramsPath, paramsType: 'FULL', metrics: {}, meta: { numSamples: 1 }, currentRound: m.currentRound, totalRounds: m.totalRounds });
    }
  };
}
`,
  );
}

/** Largest |final − (initial + 0.015)| over every element (the exact FedAvg adds the mean shift 0.015). */
async function maxError(path: string): Promise<number> {
  const f = await SafetensorsFile.open(path);
  let max = 0;
  try {
    for (const t of f.header.tensors) {
      const n = (t.end - t.begin) / 4;
      for (let off = 0; off < n; off += MB / 4) {
        const m = Math.min(MB / 4, n - off);
        const b = await f.readRange(t.name, off * 4, m * 4);
        const v = new Float32Array(b.buffer, b.byteOffset, m);
        for (let j = 0; j < m; j++) max = Math.max(max, Math.abs(v[j]! - (initialValue(off + j) + 0.015)));
      }
    }
  } finally {
    await f.close();
  }
  return max;
}

async function stream(): Promise<Record<string, unknown>> {
  const tmp = mkdtempSync(join(baseDir, 'flotilla-filters-bench-'));
  const runs: Record<string, unknown>[] = [];
  try {
    const port = await freePort();
    const participants = [
      { type: 'server', name: 'server', org: 'hub', host: 'localhost', port },
      { type: 'client', name: 'site-1', org: 'a' },
      { type: 'client', name: 'site-2', org: 'b' },
      { type: 'admin', name: 'bench@hub.org', org: 'hub', role: 'project_admin' },
    ];
    const { kits } = await provision(parseProject({ name: 'filters', participants }), { outDir: join(tmp, 'kits') });
    const tensors = layout(streamGB);
    const modelPath = join(tmp, 'model.safetensors');
    await writeModel(modelPath, tensors);
    for (const bits of streamBits) {
      const dir = join(tmp, `run-${bits}`);
      writeJob(join(dir, 'job'), modelPath, bits);
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
          String(await freePort()),
        ]);
        procs.push(server);
        await waitFor(server, /listening on port/);
        const sites = [1, 2].map((i) => start(['client', 'start', kits[`site-${i}`]!, '-w', join(dir, `site-${i}`)]));
        procs.push(...sites);
        await Promise.all(sites.map((c) => waitFor(c, /connected/)));
        admin = new AdminClient(kits['bench@hub.org']!, { host: '127.0.0.1', port });
        const t0 = Date.now();
        const id = await admin.submit(join(dir, 'job'));
        for (;;) {
          const s = await admin.call('status', { job: id });
          if (s.state === 'FINISHED') break;
          if (s.state !== 'SUBMITTED' && s.state !== 'RUNNING')
            throw new Error(`job ${s.state}: ${s.detail}\n${server.out().slice(-3000)}`);
          await new Promise((r) => setTimeout(r, 500));
        }
        const seconds = (Date.now() - t0) / 1000;
        const peaks = { server: hwmMB(server.child.pid!), 'site-1': hwmMB(sites[0]!.child.pid!), 'site-2': hwmMB(sites[1]!.child.pid!) };
        const cpu = {
          server: procCpuSeconds(server.child.pid!),
          'site-1': procCpuSeconds(sites[0]!.child.pid!),
          'site-2': procCpuSeconds(sites[1]!.child.pid!),
        };
        const err = await maxError(join(dir, 'server', 'jobs', id, 'workspace', 'server', 'global_model.safetensors'));
        const r = {
          bits,
          modelGiB: streamGB,
          peakRssMB: peaks,
          maxPeakRssMB: Math.max(...Object.values(peaks)),
          cpuSeconds: cpu,
          seconds: +seconds.toFixed(1),
          maxAbsErrorVsExact: err,
        };
        process.stderr.write(`${JSON.stringify(r)}\n`);
        runs.push(r);
      } finally {
        admin?.close();
        for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGTERM');
        await Promise.race([Promise.all(procs.map((p) => p.exited)), new Promise((r) => setTimeout(r, 10_000))]);
        for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
        rmSync(dir, { recursive: true, force: true });
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return {
    setup: `server and 2 sites in their own processes, mutual TLS on loopback, payloads over the data plane; FedAvg offload: true, params: file, 1 round; quantize on tasks and results`,
    runs,
  };
}

const result = {
  bench: 'filters',
  ...commitFacts(),
  machine: { cpus: cpus().length, cpu: cpus()[0]?.model, memGB: Math.round(totalmem() / 2 ** 30), node: process.version },
  wire: await wire(),
  speedOneCore: await speed(),
  stream: streamBits.length ? await stream() : null,
};
mkdirSync(join(outFile, '..'), { recursive: true });
writeFileSync(outFile, `${JSON.stringify(result, null, 2)}\n`);
process.stdout.write(`${JSON.stringify(result)}\n`);
