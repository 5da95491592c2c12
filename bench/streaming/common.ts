/** Small helpers shared by the bench/streaming processes. */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type * as Http2 from 'node:http2';
import { CHANNEL_OPTIONS } from '../../src/transport/grpc/wire.ts';
import { createXXHash64, type IHasher } from 'hash-wasm';

/** Peak resident set of this process so far, in MB (VmHWM from /proc). */
export function peakRssMB(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  if (!m) throw new Error('/proc/self/status has no VmHWM line');
  return Math.round(Number(m[1]) / 1024);
}

/** Wall clock shared by the processes on this machine (ms since the epoch, sub-ms precision). */
export function now(): number {
  return performance.timeOrigin + performance.now();
}

export function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** What each peer reports of itself at the end: peak RSS, CPU time, and the kernel's part of it (file I/O shows there). */
export function processFacts(): { peakRssMB: number; cpuSeconds: number; systemCpuSeconds: number } {
  return { peakRssMB: peakRssMB(), cpuSeconds: cpuSeconds(), systemCpuSeconds: process.cpuUsage().system / 1e6 };
}

/** End-to-end hash of a byte stream: passes the chunks through and hashes them on the way. */
export class Tap {
  bytes = 0;
  private constructor(private readonly h: IHasher) {}
  static async create(): Promise<Tap> {
    const h = await createXXHash64();
    h.init();
    return new Tap(h);
  }
  update(b: Uint8Array): void {
    this.h.update(b);
    this.bytes += b.byteLength;
  }
  async *through(src: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const b of src) {
      this.update(b);
      yield b;
    }
  }
  digest(): string {
    return this.h.digest('hex');
  }
}

/** Parses `--name value` flags; every flag must be known. */
export function flags<T extends Record<string, string>>(argv: string[], defaults: T): T {
  const out: Record<string, string> = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) throw new Error(`unexpected argument "${a}"`);
    const k = a.slice(2);
    if (!(k in defaults))
      throw new Error(
        `unknown flag --${k} (known: ${Object.keys(defaults)
          .map((x) => `--${x}`)
          .join(' ')})`,
      );
    const v = argv[i + 1];
    if (v === undefined) throw new Error(`flag --${k} needs a value`);
    out[k] = v;
    i++;
  }
  return out as T;
}

export function num(v: string, what: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${what} must be a positive number, got "${v}"`);
  return n;
}

/**
 * Experiment (bench only): an HTTP/2 flow-control window of `bytes` (stream and
 * connection) instead of grpc-js's 64 KiB default. grpc-js honours
 * grpc-node.flow_control_window on the client only; the server gets it by
 * wrapping http2.createSecureServer. BENCH_H2_SIDE=client|server limits it to one end.
 */
export function applyH2Window(bytes: number): void {
  applyH2FrameSize(Number(process.env.BENCH_H2_FRAME ?? 0));
  if (!(bytes > 0)) return;
  const side = process.env.BENCH_H2_SIDE ?? 'both';
  if (side !== 'server') (CHANNEL_OPTIONS as Record<string, unknown>)['grpc-node.flow_control_window'] = bytes;
  if (side === 'client') return;
  const http2 = createRequire(import.meta.url)('node:http2') as typeof Http2;
  const orig = http2.createSecureServer;
  (http2 as { createSecureServer: unknown }).createSecureServer = (opts: Http2.SecureServerOptions, ...rest: unknown[]) => {
    const s = (orig as (...a: unknown[]) => Http2.Http2SecureServer)(
      { ...opts, settings: { ...opts.settings, initialWindowSize: bytes } },
      ...rest,
    );
    s.on('session', (session) => session.once('remoteSettings', () => session.setLocalWindowSize(bytes)));
    return s;
  };
}

/**
 * Experiment (bench only, BENCH_H2_FRAME=<bytes>): the largest HTTP/2 frame each
 * end accepts (SETTINGS_MAX_FRAME_SIZE, default 16 KiB, at most 16 MiB - 1), so
 * a 1 MiB message crosses in fewer DATA frames.
 */
function applyH2FrameSize(bytes: number): void {
  if (!(bytes > 0)) return;
  const http2 = createRequire(import.meta.url)('node:http2') as typeof Http2;
  const connect = http2.connect;
  (http2 as { connect: unknown }).connect = (authority: string, opts: Http2.SecureClientSessionOptions, ...rest: unknown[]) =>
    (connect as (...a: unknown[]) => Http2.ClientHttp2Session)(
      authority,
      { ...opts, settings: { ...opts?.settings, maxFrameSize: bytes } },
      ...rest,
    );
  const create = http2.createSecureServer;
  (http2 as { createSecureServer: unknown }).createSecureServer = (opts: Http2.SecureServerOptions, ...rest: unknown[]) =>
    (create as (...a: unknown[]) => Http2.Http2SecureServer)({ ...opts, settings: { ...opts.settings, maxFrameSize: bytes } }, ...rest);
}
