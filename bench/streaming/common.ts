/** Small helpers shared by the bench/streaming processes. */
import { readFileSync } from 'node:fs';
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
    if (!(k in defaults)) throw new Error(`unknown flag --${k} (known: ${Object.keys(defaults).map((x) => `--${x}`).join(' ')})`);
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
