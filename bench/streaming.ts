/**
 * bench/streaming: a synthetic model server → client → server over a real
 * mutual-TLS Link (`--transport grpc`: a Federation.Connect call; `--transport tls`:
 * the data plane, src/transport/tls), each side a separate process wrapping its
 * Link in a Channel, in three modes (see bench/streaming/peer.ts):
 *
 *   regular    whole model in one buffer on the sender, collected whole on the receiver
 *   container  tensor stream encoded/decoded piece by piece, hashed by the client, then an
 *              update of the same size streamed back the same way (sequential)
 *   relay      container streaming relayed back by the client as it arrives (both ways at once)
 *   file       safetensors file on disk → file on the client → file on the server
 *
 * Baselines in the same run: a plain Node `tls` socket between two processes,
 * same certificates, same bytes (bench/streaming/tls-peer.ts), and the bare gRPC
 * Link without the Channel (bench/streaming/link-peer.ts); sequential for
 * regular/container/file, relayed for relay. File mode has one more: the plain
 * socket doing the same job, file → socket → file with the same reads, writes and
 * fsyncs (`tls-file`, reported as fractionOfTlsFileToFile). Each process reports its own peak
 * RSS (VmHWM) and CPU time. Prints one JSON object; progress goes to stderr.
 *
 *   nice node --conditions=flotilla-source --import tsx bench/streaming.ts --sizes 1,4 [--modes regular,container,file]
 *     [--chunk-mib 1] [--window-mib 64] [--h2-window 4194304 (both ends; 0 = wire.ts defaults)] [--baseline tls,link|none] [--dir /tmp/...] [--out result.json]
 *     [--back no]        container mode one way (server → client, hashed on arrival), for the 128 GB run
 *     [--progress FILE]  each process appends a progress line every 15 s (bytes, GB/s, peak RSS)
 *     [--transport tls|grpc]  the Link the Channel runs over: the data plane a deployment's jobs use (default), or a gRPC call
 *     [--repeat N]       run each size N times (baselines too); `summary` has the median fraction of the TLS socket
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { open } from 'node:fs/promises';
import { existsSync, mkdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { cpus, getPriority, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildHeader } from '../src/core/safetensors-header.ts';
import { writeStreamToFile } from '../src/core/safetensors.ts';
import { createCA, issueCert } from '../src/provision/ca.ts';
import { flags, num } from './streaming/common.ts';
import { GB, META, ModelBytes, layoutBytes, modelLayout, syntheticStream } from './streaming/model.ts';
import { commitFacts } from './commit.ts';
import { exitOnHelp } from './usage.ts';

exitOnHelp(import.meta.url);

const here = fileURLToPath(new URL('.', import.meta.url));
const f = flags(process.argv.slice(2), {
  sizes: '1',
  modes: 'regular,container,file',
  'chunk-mib': '1',
  'window-mib': '64',
  'h2-window': String(4 << 20),
  seed: '1',
  baseline: 'tls,link',
  back: 'yes',
  progress: '',
  transport: 'tls',
  repeat: '1',
  dir: join(tmpdir(), 'flotilla-bench-streaming'),
  out: '',
});
const sizes = f.sizes.split(',').map((s) => num(s, '--sizes'));
const repeat = num(f.repeat, '--repeat');
if (f.transport !== 'grpc' && f.transport !== 'tls') throw new Error(`--transport must be grpc or tls, got "${f.transport}"`);
// regular mode last: its processes allocate several times the model, and the kernel reclaiming that
// memory afterwards slowed the next run by ~20 % (4 GB container: 0.61–0.73 of TLS right after a regular
// run, 0.80–0.88 without one)
const modes = f.modes.split(',').sort((a, b) => Number(a === 'regular') - Number(b === 'regular'));
for (const m of modes) if (!['regular', 'container', 'relay', 'file'].includes(m)) throw new Error(`--modes: unknown mode "${m}"`);
const seed = Number(f.seed);
const baselines = f.baseline === 'none' ? [] : f.baseline.split(',');
for (const b of baselines) if (b !== 'tls' && b !== 'link') throw new Error(`--baseline: unknown baseline "${b}" (tls, link or none)`);
const dir = f.dir;
mkdirSync(dir, { recursive: true });

function log(msg: string): void {
  process.stderr.write(`[bench/streaming ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

async function makeCerts(): Promise<string> {
  const certs = join(dir, 'certs');
  mkdirSync(certs, { recursive: true });
  const ca = await createCA('bench-streaming', 2);
  const notAfter = new Date(Date.now() + 86_400_000);
  const srv = await issueCert(ca, { subject: { cn: 'server', org: 'bench', ou: 'server' }, hosts: ['localhost', '127.0.0.1'], notAfter });
  const cli = await issueCert(ca, { subject: { cn: 'site-1', org: 'bench', ou: 'client' }, notAfter });
  writeFileSync(join(certs, 'ca.pem'), ca.certPem);
  writeFileSync(join(certs, 'server.crt'), srv.certPem);
  writeFileSync(join(certs, 'server.key'), srv.keyPem, { mode: 0o600 });
  writeFileSync(join(certs, 'client.crt'), cli.certPem);
  writeFileSync(join(certs, 'client.key'), cli.keyPem, { mode: 0o600 });
  return certs;
}

interface Child {
  port: Promise<number>;
  result: Promise<Record<string, unknown>>;
  proc: ChildProcess;
}

// extra node flags for the children (e.g. BENCH_NODE_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/prof")
const nodeFlags = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean);
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) c.kill();
});

function child(script: string, args: string[]): Child {
  const proc = spawn(process.execPath, [...nodeFlags, '--import', 'tsx', join(here, 'streaming', script), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(proc);
  let out = '';
  let err = '';
  let gotPort!: (p: number) => void;
  const port = new Promise<number>((r) => (gotPort = r));
  proc.stdout.on('data', (b: Buffer) => {
    out += b.toString();
    const m = /^PORT (\d+)$/m.exec(out);
    if (m) gotPort(Number(m[1]));
  });
  proc.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const result = new Promise<Record<string, unknown>>((resolve, reject) => {
    proc.on('exit', (code) => {
      live.delete(proc);
      const m = /^RESULT (.*)$/m.exec(out);
      if (code === 0 && m) resolve(JSON.parse(m[1]!) as Record<string, unknown>);
      else reject(new Error(`${script} ${args.slice(0, 4).join(' ')} exited with ${code}: ${err.slice(-2000) || out.slice(-2000)}`));
    });
  });
  // a child that dies before printing its port must not leave the caller waiting
  void result.catch(() => gotPort(-1));
  return { port, result, proc };
}

async function pair(
  script: string,
  args: string[],
): Promise<{ server: Record<string, number | string>; client: Record<string, number | string> }> {
  const s = child(script, ['--role', 'server', ...args]);
  const port = await s.port;
  if (port < 0) await s.result;
  const c = child(script, ['--role', 'client', '--port', String(port), ...args]);
  void c.result.catch(() => s.proc.kill());
  const [server, client] = await Promise.allSettled([s.result, c.result]);
  if (server.status === 'rejected' || client.status === 'rejected') {
    const why = [server, client].flatMap((r) => (r.status === 'rejected' ? [(r.reason as Error).message] : []));
    throw new Error(why.join('\n'));
  }
  return { server: server.value as Record<string, number | string>, client: client.value as Record<string, number | string> };
}

const round = (x: number, d = 3): number => Math.round(x * 10 ** d) / 10 ** d;

/** Figures of one run from the two processes' reports (same clock: same machine). */
function figures(
  r: { server: Record<string, number | string>; client: Record<string, number | string> },
  bytes: number,
): Record<string, unknown> {
  const s = r.server as Record<string, number>;
  const c = r.client as Record<string, number>;
  const s2c = (c.tRecv! - s.t0!) / 1000;
  const c2s = (s.tBack! - c.tSendStart!) / 1000;
  const total = (s.tBack! - s.t0!) / 1000;
  if (s.bytesBack === 0) {
    // one way (--back no): server → client only
    return {
      bytes,
      direction: 'server → client only',
      serverPeakMB: s.peakRssMB,
      clientPeakMB: c.peakRssMB,
      serverCpuSeconds: round(s.cpuSeconds!, 1),
      clientCpuSeconds: round(c.cpuSeconds!, 1),
      serverToClient: { seconds: round(s2c, 2), GBps: round(bytes / GB / s2c) },
      endToEnd: {
        ok: r.server.hashSent === r.client.hashReceived && c.bytesReceived === bytes,
        xxhash64Sent: r.server.hashSent,
        xxhash64Received: r.client.hashReceived,
      },
    };
  }
  return {
    bytes,
    serverPeakMB: s.peakRssMB,
    clientPeakMB: c.peakRssMB,
    serverCpuSeconds: round(s.cpuSeconds!, 1),
    clientCpuSeconds: round(c.cpuSeconds!, 1),
    serverSystemCpuSeconds: round(s.systemCpuSeconds!, 1),
    clientSystemCpuSeconds: round(c.systemCpuSeconds!, 1),
    serverToClient: { seconds: round(s2c, 2), GBps: round(bytes / GB / s2c) },
    clientToServer: { seconds: round(c2s, 2), GBps: round(bytes / GB / c2s) },
    roundTripSeconds: round(total, 2),
    endToEnd: {
      ok: r.server.hashSent === r.client.hashReceived && r.server.hashSent === r.server.hashBack && s.bytesBack === bytes,
      xxhash64Sent: r.server.hashSent,
      xxhash64Received: r.client.hashReceived,
      xxhash64Back: r.server.hashBack,
    },
    ...(r.server.materializeSeconds !== undefined && { materializeSeconds: round(s.materializeSeconds!, 2) }),
  };
}

function memAvailableBytes(): number {
  const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

async function modelFile(size: number, bytes: number): Promise<string> {
  const path = join(dir, `model-${size}GB-seed${seed}.safetensors`);
  if (existsSync(path)) return path;
  log(`writing the ${size} GB model file ${path} (not timed)`);
  await writeStreamToFile(path, syntheticStream(modelLayout(Math.round(size * GB)), seed, 16 << 20));
  void bytes;
  return path;
}

const certs = await makeCerts();
const common = ['--seed', String(seed), '--certs', certs, '--dir', dir];
const flotillaArgs = [
  ...common,
  '--chunk-mib',
  f['chunk-mib'],
  '--window-mib',
  f['window-mib'],
  '--h2-window',
  f['h2-window'],
  '--back',
  f.back,
  '--transport',
  f.transport,
  ...(f.progress ? ['--progress', f.progress] : []),
];
if (f.back === 'no' && (modes.join() !== 'container' || baselines.length > 0))
  throw new Error('--back no runs container mode only, without baselines (--modes container --baseline none)');
const runs: Record<string, unknown>[] = [];
const started = Date.now();

/**
 * The disk's own speed for what file mode asks of it: `bytes` written in 1 MiB writes, then
 * fsynced (measured in the same run, since this VM's disk varies by several times).
 */
async function diskWriteGBps(bytes: number): Promise<number> {
  const path = join(dir, 'disk-baseline.tmp');
  const buf = new Uint8Array(1 << 20);
  const gen = new ModelBytes(seed);
  const t0 = performance.now();
  const fh = await open(path, 'w');
  for (let at = 0; at < bytes; at += buf.byteLength) {
    const b = buf.subarray(0, Math.min(buf.byteLength, bytes - at));
    gen.fill(b, at);
    await fh.write(b);
  }
  await fh.sync();
  await fh.close();
  const s = (performance.now() - t0) / 1000;
  rmSync(path, { force: true });
  return round(bytes / GB / s);
}

let diskGBps = 0;
for (const size of sizes)
  for (let rep = 1; rep <= repeat; rep++) {
    const dataBytes = Math.round(size * GB);
    const tensors = modelLayout(dataBytes);
    const bytes = buildHeader(tensors, META(seed)).bytes.byteLength + layoutBytes(tensors);
    const model = { sizeGB: size, bytes, tensors: tensors.length, largestTensorBytes: Math.max(...tensors.map((t) => layoutBytes([t]))) };
    const baseline: Record<string, Record<string, unknown>> = {};
    // file mode needs its model file (and the disk's speed) before the baselines: one of them streams it
    let file: string | null = null;
    if (modes.includes('file')) {
      const st = statfsSync(dir);
      const free = st.bavail * st.bsize;
      const path = join(dir, `model-${size}GB-seed${seed}.safetensors`);
      const need = (existsSync(path) ? 2 : 3) * bytes + (4 << 30);
      if (free < need)
        runs.push({ model, mode: 'file', skipped: `needs ~${round(need / GB, 1)} GB of disk in ${dir}, ${round(free / GB, 1)} GB free` });
      else {
        file = await modelFile(size, bytes);
        diskGBps = await diskWriteGBps(bytes);
        log(`${size} GB: disk baseline: write + fsync at ${diskGBps} GB/s`);
      }
    }
    const wanted = new Set(modes.flatMap((m) => (m === 'relay' ? ['relay'] : m === 'file' ? (file ? ['seq', 'file'] : []) : ['seq'])));
    for (const kind of baselines) {
      for (const bm of wanted) {
        // the link baseline has no file mode: the plain socket's is the one that matters
        if (kind === 'link' && bm === 'file') continue;
        log(`${size} GB: ${kind} baseline (${bm})`);
        const script = kind === 'tls' ? 'tls-peer.ts' : 'link-peer.ts';
        const args = [
          '--mode',
          bm,
          '--bytes',
          String(bytes),
          ...common,
          ...(kind === 'link' ? ['--chunk-mib', f['chunk-mib'], '--h2-window', f['h2-window']] : []),
          ...(bm === 'file' ? ['--file', file!] : []),
        ];
        baseline[`${kind}-${bm}`] = { mode: `${kind}-${bm}`, repeat: rep, ...figures(await pair(script, args), bytes) };
        runs.push({ model, ...baseline[`${kind}-${bm}`] });
        log(JSON.stringify(runs.at(-1)));
      }
    }
    for (const mode of modes) {
      const extra: string[] = [];
      if (mode === 'regular') {
        // server holds the model and the returned copy, the client one copy
        const need = 3 * bytes + (2 << 30);
        if (bytes > 2 ** 32) {
          runs.push({ model, mode, skipped: `one buffer of ${bytes} bytes exceeds Node's 4 GiB Buffer limit` });
          continue;
        }
        if (memAvailableBytes() < need) {
          runs.push({
            model,
            mode,
            skipped: `needs ~${round(need / GB, 1)} GB of free memory, ${round(memAvailableBytes() / GB, 1)} GB available`,
          });
          continue;
        }
      }
      if (mode === 'file') {
        if (!file) continue;
        extra.push('--file', file);
      }
      log(`${size} GB: flotilla ${mode}`);
      const fig = figures(await pair('peer.ts', ['--mode', mode, '--bytes', String(dataBytes), ...flotillaArgs, ...extra]), bytes);
      const kind = mode === 'relay' ? 'relay' : 'seq';
      // sequential modes compare the mean of the two directions' GB/s; the relay compares the round trip
      const fraction = (base: Record<string, unknown> | undefined): number | undefined => {
        if (!base) return undefined;
        if (mode === 'relay') return round((base.roundTripSeconds as number) / (fig.roundTripSeconds as number), 2);
        const rate = (x: Record<string, unknown>): number =>
          (x.serverToClient as { GBps: number }).GBps + (x.clientToServer as { GBps: number }).GBps;
        return round(rate(fig) / rate(base), 2);
      };
      const vsTls: Record<string, unknown> = {
        fractionOfTls: fraction(baseline[`tls-${kind}`]),
        fractionOfLink: fraction(baseline[`link-${kind}`]),
      };
      if (mode === 'file') {
        // the same job for the plain socket: file → socket → file, the same reads, writes and fsyncs
        vsTls.fractionOfTlsFileToFile = fraction(baseline['tls-file']);
        vsTls.diskWriteGBps = diskGBps;
      }
      runs.push({ model, mode, transport: f.transport, repeat: rep, ...fig, ...vsTls });
      log(JSON.stringify(runs.at(-1)));
    }
  }
rmSync(join(dir, 'certs'), { recursive: true, force: true });

/** Per size and mode, the median fraction of the TLS socket over the repeats (each against its own baseline). */
const median = (xs: number[]): number => {
  const v = [...xs].sort((a, b) => a - b);
  return v.length % 2 ? v[(v.length - 1) / 2]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
};
const summary: Record<string, unknown>[] = [];
for (const size of sizes) {
  for (const mode of modes) {
    const mine = runs.filter(
      (r) => r.mode === mode && (r.model as { sizeGB: number }).sizeGB === size && typeof r.fractionOfTls === 'number',
    );
    const ofFile = mine.filter((r) => typeof r.fractionOfTlsFileToFile === 'number').map((r) => r.fractionOfTlsFileToFile as number);
    if (mine.length)
      summary.push({
        sizeGB: size,
        mode,
        transport: f.transport,
        runs: mine.length,
        fractionsOfTls: mine.map((r) => r.fractionOfTls),
        medianFractionOfTls: round(median(mine.map((r) => r.fractionOfTls as number)), 2),
        ...(ofFile.length && { fractionsOfTlsFileToFile: ofFile, medianFractionOfTlsFileToFile: round(median(ofFile), 2) }),
        maxPeakMB: Math.max(...mine.flatMap((r) => [r.serverPeakMB as number, r.clientPeakMB as number])),
      });
  }
}

const result = {
  bench: 'streaming',
  summary,
  settings: {
    transport: f.transport === 'tls' ? 'data plane (src/transport/tls)' : 'gRPC (Federation.Connect)',
    repeat,
    chunkMiB: Number(f['chunk-mib']),
    windowMiB: Number(f['window-mib']),
    h2WindowBytes: Number(f['h2-window']) || 'wire.ts default (client 4 MiB, server 65535)',
    seed,
  },
  ...commitFacts(),
  machine: {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGB: round(totalmem() / GB, 1),
    node: process.version,
    nice: getPriority(),
    loadAverageAtStart: loadavg().map((x) => round(x, 2)),
  },
  seconds: round((Date.now() - started) / 1000, 1),
  runs,
};
const text = JSON.stringify(result, null, 2);
if (f.out) writeFileSync(f.out, `${text}\n`);
console.log(text);
