/**
 * bench/aggregate: FedAvg of N client updates of a large model.
 *
 *   streaming  WeightedAverage stages each update as its pieces arrive and folds it
 *              into one running sum when it has ended (updates one after another)
 *   concurrent the same with all N updates arriving at once (what a round does): one
 *              model's worth is staged in memory, the rest in files until each ends
 *   offload    the same with the global model and the sum in files (--offload):
 *              each update is spooled to disk, then folded chunk by chunk
 *   naive      collect all N updates in memory, then average (what a simple
 *              server does)
 *
 * Each variant runs in its own child process so peak RSS (VmHWM) is its own.
 * Client updates are generated piece by piece from a seed (as if they came off
 * the network), so generating them costs the same in both variants.
 * Prints one JSON object. Usage: node --conditions=flotilla-source --import tsx bench/aggregate.ts [--clients 8] [--mb 256]
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OffloadedAverage } from '../src/aggregators/offloaded-average.ts';
import { WeightedAverage } from '../src/aggregators/weighted-average.ts';
import { viewAs } from '../src/core/dtypes.ts';
import { SafetensorsFile, writeSafetensors } from '../src/core/safetensors.ts';
import type { TensorInfo } from '../src/core/safetensors-header.ts';
import { type TensorPiece, type TensorStream, streamToDict } from '../src/core/tensor-stream.ts';
import type { TensorDict } from '../src/core/tensor.ts';
import { commitFacts } from './commit.ts';
import { exitOnHelp } from './usage.ts';

exitOnHelp(import.meta.url);

const args = process.argv.slice(2);
const arg = (name: string, def: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const CLIENTS = arg('clients', 8);
const MB = arg('mb', 256);
const TENSOR_MB = 4;
const CHUNK = 1 << 20;

function layout(): TensorInfo[] {
  const n = Math.max(1, Math.round(MB / TENSOR_MB));
  return Array.from({ length: n }, (_, i) => ({
    name: `layer.${i}.weight`,
    dtype: 'F32' as const,
    shape: [(TENSOR_MB << 20) / 4 / 1024, 1024],
  }));
}

/**
 * A client's update, produced chunk by chunk as if read off the network: each
 * chunk is a fresh 1 MiB buffer (copied from a per-client template, so making it
 * costs a memcpy, not a per-element loop). Value = client + 1e-3·(i mod 1000).
 */
function clientUpdate(client: number, tensors: TensorInfo[]): TensorStream {
  const template = new Float32Array(CHUNK / 4);
  for (let i = 0; i < template.length; i++) template[i] = client + 1e-3 * (i % 1000);
  return {
    header: { tensors, metadata: {} },
    async *pieces(): AsyncGenerator<TensorPiece> {
      for (let t = 0; t < tensors.length; t++) {
        const info = tensors[t]!;
        const total = info.shape[0]! * info.shape[1]! * 4;
        for (let off = 0; off < total; off += CHUNK) {
          const chunk = template.slice();
          yield {
            index: t,
            name: info.name,
            dtype: 'F32',
            shape: info.shape,
            offset: off,
            bytes: new Uint8Array(chunk.buffer),
            tensorBytes: total,
          };
        }
      }
    },
  };
}

function globalModel(tensors: TensorInfo[]): TensorDict {
  return new Map(
    tensors.map((t) => [t.name, { dtype: 'F32', shape: t.shape, data: new Float32Array(t.shape[0]! * t.shape[1]!).fill(0.5) }]),
  ); // filled, so its pages are really resident
}

function vmHwmMB(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : process.resourceUsage().maxRSS / 1024;
}

async function runVariant(variant: string): Promise<void> {
  const tensors = layout();
  const global = globalModel(tensors);
  const weights = Array.from({ length: CLIENTS }, (_, c) => c + 1);
  const t0 = performance.now();
  let result: TensorDict;
  if (variant === 'streaming') {
    const agg = new WeightedAverage(global);
    for (let c = 0; c < CLIENTS; c++) await agg.add(clientUpdate(c, tensors), weights[c]!, 'FULL');
    result = agg.result();
  } else if (variant === 'concurrent') {
    const agg = new WeightedAverage(global);
    await Promise.all(weights.map((w, c) => agg.add(clientUpdate(c, tensors), w, 'FULL')));
    result = agg.result();
  } else if (variant === 'offload') {
    // the global model lives in a file: write it, then drop it from memory before timing starts
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-bench-'));
    const gpath = join(dir, 'global.safetensors');
    await writeSafetensors(gpath, global);
    global.clear();
    const t1 = performance.now();
    const agg = await OffloadedAverage.open(gpath, dir);
    for (let c = 0; c < CLIENTS; c++) await agg.add(clientUpdate(c, tensors), weights[c]!, 'FULL');
    await agg.writeResult(join(dir, 'result.safetensors'));
    const seconds = (performance.now() - t1) / 1000;
    const f = await SafetensorsFile.open(join(dir, 'result.safetensors'));
    const got = viewAs('F32', await f.readRange(tensors[0]!.name, 0, 4))[0]!;
    await f.close();
    rmSync(dir, { recursive: true, force: true });
    const W = weights.reduce((a, b) => a + b, 0);
    const expect = weights.reduce((a, w, c) => a + w * c, 0) / W;
    process.stdout.write(JSON.stringify({ variant, seconds, peakRssMB: vmHwmMB(), check: Math.abs(got - expect) < 1e-4 }) + '\n');
    return;
  } else {
    const all: TensorDict[] = [];
    for (let c = 0; c < CLIENTS; c++) all.push(await streamToDict(clientUpdate(c, tensors)));
    result = new Map();
    const W = weights.reduce((a, b) => a + b, 0);
    for (const t of tensors) {
      const out = new Float32Array(t.shape[0]! * t.shape[1]!);
      for (let c = 0; c < CLIENTS; c++) {
        const d = all[c]!.get(t.name)!.data as Float32Array;
        const w = weights[c]! / W;
        for (let i = 0; i < out.length; i++) out[i]! += w * d[i]!;
      }
      result.set(t.name, { dtype: 'F32', shape: t.shape, data: out });
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  // check: mean of client values weighted by c+1, at element 0 of the first tensor
  const W = weights.reduce((a, b) => a + b, 0);
  const expect = weights.reduce((a, w, c) => a + w * c, 0) / W;
  const got = (result.get(tensors[0]!.name)!.data as Float32Array)[0]!;
  process.stdout.write(JSON.stringify({ variant, seconds, peakRssMB: vmHwmMB(), check: Math.abs(got - expect) < 1e-4 }) + '\n');
}

async function main(): Promise<void> {
  const v = args.indexOf('--variant');
  if (v >= 0) return runVariant(args[v + 1]!);
  const run = (variant: string): { variant: string; seconds: number; peakRssMB: number; check: boolean } => {
    const r = spawnSync(
      process.execPath,
      [
        '--import',
        'tsx',
        '--max-old-space-size=8192',
        new URL(import.meta.url).pathname,
        '--variant',
        variant,
        '--clients',
        String(CLIENTS),
        '--mb',
        String(MB),
      ],
      { encoding: 'utf8', maxBuffer: 1 << 20 },
    );
    if (r.status !== 0) throw new Error(`${variant} failed: ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as { variant: string; seconds: number; peakRssMB: number; check: boolean };
  };
  const streaming = run('streaming');
  const concurrent = run('concurrent');
  const offload = run('offload');
  const naive = run('naive');
  const updateGB = (CLIENTS * MB) / 1024;
  process.stdout.write(
    JSON.stringify({
      bench: 'aggregate',
      clients: CLIENTS,
      modelMB: MB,
      streaming: { ...streaming, gbPerSecond: updateGB / streaming.seconds, peakRssInModels: streaming.peakRssMB / MB },
      concurrent: { ...concurrent, gbPerSecond: updateGB / concurrent.seconds, peakRssInModels: concurrent.peakRssMB / MB },
      offload: { ...offload, gbPerSecond: updateGB / offload.seconds, peakRssInModels: offload.peakRssMB / MB },
      naive: { ...naive, gbPerSecond: updateGB / naive.seconds, peakRssInModels: naive.peakRssMB / MB },
      memoryRatio: naive.peakRssMB / streaming.peakRssMB,
      ...commitFacts(),
      machine: { node: process.version, cpus: cpus().length, cpu: cpus()[0]?.model, memGB: Math.round(totalmem() / 2 ** 30) },
    }) + '\n',
  );
}

await main();
