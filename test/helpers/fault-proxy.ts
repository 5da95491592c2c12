/**
 * A TCP forwarder on loopback that injects network faults (tests and scripts/faults.ts only):
 * - cut(): every connection through it is destroyed, as a network dropping them;
 * - delay(ms, jitterMs): every chunk waits ms (+ up to jitterMs) before it is passed on, in order;
 * - corrupt({ every | probability, limit }): one bit flipped in a chunk, at a random offset.
 * Faults apply to the directions chosen (`up`: client → server, `down`: server → client; both by
 * default) and to connections already open. Under TLS a flipped bit fails the record's MAC, the
 * receiver drops the connection, and the peers must redial: nothing corrupted reaches the channel.
 */
import { randomInt } from 'node:crypto';
import { type Server, type Socket, createServer, connect as netConnect } from 'node:net';

export type Direction = 'up' | 'down' | 'both';

export interface CorruptOptions {
  /** flip a bit in every n-th chunk (counted per proxy, over all connections and chosen directions) */
  every?: number;
  /** or in each chunk with this probability */
  probability?: number;
  /** stop after this many corrupted chunks (a job must be able to finish), default unlimited */
  limit?: number;
  direction?: Direction;
}

interface DelayOptions {
  ms: number;
  jitterMs: number;
  direction: Direction;
}

/** Bytes queued in one direction above which the source is paused (a delayed link still has a window). */
const HIGH_WATER = 1 << 20;

export class FaultProxy {
  private readonly sockets = new Set<Socket>();
  private server: Server | null = null;
  private delaying: DelayOptions | null = null;
  private corrupting: Required<Omit<CorruptOptions, 'every' | 'probability'>> & Pick<CorruptOptions, 'every' | 'probability'> = {
    limit: 0,
    direction: 'both',
  };
  private chunksSeen = 0;
  port = 0;
  /** what was injected so far */
  cuts = 0;
  connections = 0;
  delayedChunks = 0;
  corruptedChunks = 0;
  bytesForwarded = 0;

  async start(target: number, targetHost = '127.0.0.1'): Promise<number> {
    const server = createServer((c) => {
      this.connections++;
      const u = netConnect(target, targetHost);
      for (const s of [c, u]) {
        s.setNoDelay(true); // as grpc-js does on its own sockets: no Nagle delays on small frames
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => undefined);
      }
      this.forward(c, u, 'up');
      this.forward(u, c, 'down');
    });
    this.server = server;
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    this.port = (server.address() as { port: number }).port;
    return this.port;
  }

  /** Kills every connection through the proxy: both directions lose what is in flight. */
  cut(): void {
    this.cuts++;
    for (const s of this.sockets) s.destroy();
  }

  /** Every chunk from now on waits `ms` plus a random 0..jitterMs before it goes on (order kept); delay(0) stops it. */
  delay(ms: number, jitterMs = 0, direction: Direction = 'both'): void {
    this.delaying = ms > 0 || jitterMs > 0 ? { ms, jitterMs, direction } : null;
  }

  /** Flips one bit in chosen chunks from now on; corrupt({}) stops it. */
  corrupt(o: CorruptOptions): void {
    this.chunksSeen = 0;
    this.corrupting = { ...o, limit: o.limit ?? Infinity, direction: o.direction ?? 'both' };
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    return server ? new Promise((r) => server.close(() => r())) : Promise.resolve();
  }

  private applies(d: Direction, dir: 'up' | 'down'): boolean {
    return d === 'both' || d === dir;
  }

  private mangle(chunk: Buffer, dir: 'up' | 'down'): Buffer {
    const c = this.corrupting;
    if ((c.every === undefined && c.probability === undefined) || !this.applies(c.direction, dir) || chunk.byteLength === 0) return chunk;
    if (this.corruptedChunks >= c.limit) return chunk;
    this.chunksSeen++;
    const hit = c.every !== undefined ? this.chunksSeen % c.every === 0 : Math.random() < c.probability!;
    if (!hit) return chunk;
    const copy = Buffer.from(chunk);
    copy[randomInt(copy.byteLength)]! ^= 1 << randomInt(8);
    this.corruptedChunks++;
    return copy;
  }

  /** from → to, chunk by chunk, through a FIFO of due times when a delay is set (order kept); backpressure either way. */
  private forward(from: Socket, to: Socket, dir: 'up' | 'down'): void {
    const queue: { at: number; chunk: Buffer }[] = [];
    let queued = 0;
    let timer: NodeJS.Timeout | null = null;
    let ended = false;
    let blocked = false; // `to` asked us to wait for 'drain'
    const flowing = (): void => {
      if (!blocked && queued <= HIGH_WATER && from.isPaused()) from.resume();
    };
    const write = (b: Buffer): void => {
      if (to.destroyed) return;
      this.bytesForwarded += b.byteLength;
      if (!to.write(b)) {
        blocked = true;
        from.pause();
      }
    };
    const pump = (): void => {
      timer = null;
      while (queue.length > 0 && queue[0]!.at <= Date.now()) {
        const { chunk } = queue.shift()!;
        queued -= chunk.byteLength;
        write(chunk);
      }
      if (queue.length > 0) timer = setTimeout(pump, queue[0]!.at - Date.now());
      else if (ended && !to.destroyed) to.end();
      flowing();
    };
    to.on('drain', () => {
      blocked = false;
      flowing();
    });
    from.on('data', (raw: Buffer) => {
      const chunk = this.mangle(raw, dir);
      const d = this.delaying && this.applies(this.delaying.direction, dir) ? this.delaying : null;
      if (!d && queue.length === 0) return write(chunk);
      let at = Date.now();
      if (d) {
        this.delayedChunks++;
        at += d.ms + (d.jitterMs > 0 ? randomInt(d.jitterMs + 1) : 0);
      }
      queue.push({ at: Math.max(at, queue.at(-1)?.at ?? 0), chunk }); // never before the chunk ahead of it
      queued += chunk.byteLength;
      if (queued > HIGH_WATER) from.pause();
      if (timer === null) timer = setTimeout(pump, queue[0]!.at - Date.now());
    });
    from.on('end', () => {
      ended = true;
      if (queue.length === 0 && !to.destroyed) to.end();
    });
    from.on('close', () => {
      if (ended) return; // what is still queued goes out, then the end
      if (timer) clearTimeout(timer);
      to.destroy(); // reset or cut: what was in flight is lost
    });
  }
}
