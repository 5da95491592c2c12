/**
 * Control messages and payload streams over one link (design §3).
 *
 * A payload is a byte stream cut into chunks of at most `chunkBytes`. The
 * sender never has more than `windowBytes` unacknowledged bytes in flight; the
 * receiver acknowledges bytes as its consumer takes them, so a slow consumer
 * slows the sender instead of growing a queue. Timeouts are progress-based: a
 * transfer that keeps moving never times out, a stalled one fails after
 * `stallTimeoutMs`.
 *
 * Integrity: every piece carries its offset and CRC-32, the last one an
 * xxhash64 of the whole stream. A corrupted piece is dropped and asked for
 * again (the sender keeps unacknowledged pieces, at most a window of them);
 * a stream whose digest does not match fails, never delivering bad data
 * silently. send() resolves once the receiver has consumed every byte.
 */
import { crc32 } from 'node:zlib';
import { createXXHash64, type IHasher } from 'hash-wasm';
import type { Frame, Link } from '../transport/link.ts';
import { AsyncQueue } from '../util/async-queue.ts';

export interface ChannelOptions {
  chunkBytes?: number;
  windowBytes?: number;
  stallTimeoutMs?: number;
  /** largest control message accepted, in bytes of JSON */
  maxControlBytes?: number;
  /** progress of each payload transfer, at most every 250 ms and once when it ends (for bars and logs) */
  onTransfer?: (t: TransferProgress) => void;
}

export interface TransferProgress {
  peer: string;
  stream: number;
  direction: 'send' | 'receive';
  /** payload bytes moved so far */
  bytes: number;
  seconds: number;
  done: boolean;
}

/** Reports a transfer's progress without flooding: every 250 ms, and at the end. */
class ProgressMeter {
  private readonly started = performance.now();
  private last = 0;
  bytes = 0;
  constructor(private readonly report: ((t: TransferProgress) => void) | undefined, private readonly peer: string, private readonly stream: number, private readonly direction: 'send' | 'receive') {}
  add(n: number): void {
    this.bytes += n;
    if (!this.report) return;
    const now = performance.now();
    if (now - this.last >= 250) {
      this.last = now;
      this.emit(false);
    }
  }
  end(): void {
    this.emit(true);
  }
  private emit(done: boolean): void {
    this.report?.({ peer: this.peer, stream: this.stream, direction: this.direction, bytes: this.bytes, seconds: (performance.now() - this.started) / 1000, done });
  }
}

export const CHANNEL_DEFAULTS = {
  chunkBytes: 1 << 20,
  windowBytes: 64 << 20,
  stallTimeoutMs: 300_000,
  maxControlBytes: 16 << 20,
} as const;

/** A received payload: iterate it once, or cancel it. */
export interface Payload extends AsyncIterable<Uint8Array> {
  cancel(reason: string): void;
}

export interface Envelope {
  /** the control message, parsed JSON (validate it with a schema before use) */
  readonly msg: Record<string, unknown>;
  readonly payload: Payload | null;
}

/** Field of a control message that announces the payload stream following it. */
const STREAM_FIELD = '__stream';

interface RetainedPiece {
  offset: number;
  bytes: Uint8Array;
  crc: number;
}

class OutgoingStream {
  unacked = 0;
  cancelled: string | null = null;
  /** pieces sent but not yet acknowledged, oldest first (for resends) */
  readonly retained: RetainedPiece[] = [];
  resends = 0;
  /** the closing frame, once sent (resent too if pieces before it were lost) */
  final: { offset: number; digest: string } | null = null;
  acked(bytes: number): void {
    this.unacked -= bytes;
    let left = bytes;
    while (left > 0 && this.retained.length > 0) {
      const head = this.retained[0]!;
      if (head.bytes.byteLength > left) {
        // partial acknowledgement (a transport that re-cut the piece): keep the rest
        this.retained[0] = { offset: head.offset + left, bytes: head.bytes.subarray(left), crc: crc32(head.bytes.subarray(left)) };
        left = 0;
      } else {
        left -= head.bytes.byteLength;
        this.retained.shift();
      }
    }
  }
  private waiter: (() => void) | null = null;
  wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }
  wait(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.waiter = null;
        resolve(false);
      }, ms);
      this.waiter = () => {
        clearTimeout(t);
        resolve(true);
      };
    });
  }
}

class IncomingStream implements Payload {
  readonly queue = new AsyncQueue<Uint8Array>();
  /** next byte offset expected */
  expected = 0;
  /** set while waiting for a resend after a corrupted piece */
  awaitingResend = false;
  digest: string | undefined;
  corrupted = 0;
  private readonly meter: ProgressMeter;
  constructor(private readonly channel: Channel, private readonly id: number, private readonly stallMs: number, report?: (t: TransferProgress) => void) {
    this.meter = new ProgressMeter(report, channel.peer, id, 'receive');
  }

  /** Accepts a data frame if it is intact and in order; asks for a resend otherwise. Returns whether the stream ended. */
  accept(f: Extract<Frame, { type: 'data' }>): boolean {
    if (f.offset !== undefined) {
      if (f.offset !== this.expected) return false; // a piece after a dropped one: the resend brings it again
      if (f.crc !== undefined && f.bytes.byteLength > 0 && crc32(f.bytes) !== f.crc) {
        this.corrupted++;
        if (!this.awaitingResend) {
          this.awaitingResend = true;
          void this.channel.sendFrame({ type: 'resend', stream: this.id, offset: this.expected }).catch(() => undefined);
        }
        return false;
      }
      this.awaitingResend = false;
    }
    this.expected += f.bytes.byteLength;
    if (f.bytes.byteLength > 0) this.queue.push(f.bytes);
    if (f.last) {
      this.digest = f.digest;
      this.queue.end();
      return true;
    }
    return false;
  }

  cancel(reason: string): void {
    if (this.queue.isEnded) return;
    this.queue.end(new Error(`payload cancelled: ${reason}`));
    this.channel.forget(this.id);
    void this.channel.sendFrame({ type: 'cancel', stream: this.id, reason }).catch(() => undefined);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    const hasher = await createXXHash64();
    hasher.init();
    try {
      for (;;) {
        const next = await withStallTimeout(this.queue.next(), this.stallMs, `payload stream ${this.id} stalled: no data for ${this.stallMs} ms`);
        if (next === undefined) break;
        hasher.update(next);
        this.meter.add(next.byteLength);
        // acknowledge as the consumer takes each chunk: this is what paces the sender
        void this.channel.sendFrame({ type: 'ack', stream: this.id, bytes: next.byteLength }).catch(() => undefined);
        yield next;
      }
      this.meter.end();
      if (this.digest !== undefined && hasher.digest('hex') !== this.digest) {
        throw new Error(`payload stream ${this.id} is corrupt: xxhash64 of the ${this.expected} bytes received does not match the sender's`);
      }
    } finally {
      if (!this.queue.isEnded) this.cancel('consumer stopped reading');
    }
  }
}

function withStallTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new Error(message)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

export class Channel {
  private readonly opts: Required<Omit<ChannelOptions, 'onTransfer'>> & Pick<ChannelOptions, 'onTransfer'>;
  private nextStream = 1;
  private readonly outgoing = new Map<number, OutgoingStream>();
  private readonly incoming = new Map<number, IncomingStream>();
  private readonly inbox = new AsyncQueue<Envelope>();
  private closedReason: string | null = null;

  constructor(readonly link: Link, opts: ChannelOptions = {}) {
    this.opts = { ...CHANNEL_DEFAULTS, ...opts };
    void this.pump();
  }

  get peer(): string {
    return this.link.peer;
  }

  get isClosed(): boolean {
    return this.closedReason !== null;
  }

  /** Sends a control message, then its payload (if any) under flow control. Resolves when all payload bytes are sent. */
  async send(msg: Record<string, unknown>, payload?: AsyncIterable<Uint8Array>): Promise<void> {
    if (this.closedReason) throw new Error(`channel to ${this.peer} closed: ${this.closedReason}`);
    if (!payload) {
      await this.sendFrame({ type: 'control', json: JSON.stringify(msg) });
      return;
    }
    const id = this.nextStream++;
    const out = new OutgoingStream();
    this.outgoing.set(id, out);
    const hasher: IHasher = await createXXHash64();
    hasher.init();
    const check = (): void => {
      if (out.cancelled) throw new Error(`${this.peer} cancelled the payload: ${out.cancelled}`);
      if (this.closedReason) throw new Error(`channel to ${this.peer} closed: ${this.closedReason}`);
    };
    const waitUntil = async (done: () => boolean, what: string): Promise<void> => {
      while (!done() && !out.cancelled && !this.closedReason) {
        const moved = await out.wait(this.opts.stallTimeoutMs);
        if (!moved) throw new Error(`sending to ${this.peer} stalled: ${what} for ${this.opts.stallTimeoutMs} ms`);
      }
      check();
    };
    let offset = 0;
    const meter = new ProgressMeter(this.opts.onTransfer, this.peer, id, 'send');
    try {
      await this.sendFrame({ type: 'control', json: JSON.stringify({ ...msg, [STREAM_FIELD]: id }) });
      for await (const chunk of payload) {
        for (let o = 0; o < chunk.byteLength; o += this.opts.chunkBytes) {
          const piece = chunk.subarray(o, Math.min(o + this.opts.chunkBytes, chunk.byteLength));
          await waitUntil(() => out.unacked === 0 || out.unacked + piece.byteLength <= this.opts.windowBytes, 'no acknowledgement');
          const crc = crc32(piece);
          hasher.update(piece);
          out.unacked += piece.byteLength;
          out.retained.push({ offset, bytes: piece, crc });
          await this.sendFrame({ type: 'data', stream: id, offset, bytes: piece, crc, last: false });
          offset += piece.byteLength;
          meter.add(piece.byteLength);
        }
      }
      out.final = { offset, digest: hasher.digest('hex') };
      await this.sendFrame({ type: 'data', stream: id, offset, bytes: new Uint8Array(0), last: true, digest: out.final.digest });
      // keep the pieces until the receiver has them all: a corrupted one may be asked for again
      await waitUntil(() => out.unacked <= 0, 'waiting for the receiver to consume the payload');
      meter.end();
    } catch (e) {
      if (!out.cancelled && !this.closedReason) {
        await this.sendFrame({ type: 'cancel', stream: id, reason: (e as Error).message }).catch(() => undefined);
      }
      throw e;
    } finally {
      this.outgoing.delete(id);
    }
  }

  /** Resends pieces of an outgoing stream from `offset` (the receiver found one corrupted). */
  private resend(id: number, offset: number): void {
    const out = this.outgoing.get(id);
    if (!out) return;
    out.resends++;
    for (const p of out.retained) {
      if (p.offset + p.bytes.byteLength <= offset) continue;
      void this.sendFrame({ type: 'data', stream: id, offset: p.offset, bytes: p.bytes, crc: p.crc, last: false }).catch(() => undefined);
    }
    if (out.final) void this.sendFrame({ type: 'data', stream: id, offset: out.final.offset, bytes: new Uint8Array(0), last: true, digest: out.final.digest }).catch(() => undefined);
  }

  /** Incoming control messages, each with its payload. Iterate once. */
  messages(): AsyncIterable<Envelope> {
    return this.inbox.drain();
  }

  close(reason = 'closed'): void {
    this.link.close(reason);
  }

  /** @internal */
  sendFrame(f: Frame): Promise<void> {
    return this.link.send(f);
  }

  /** @internal */
  forget(id: number): void {
    this.incoming.delete(id);
  }

  private async pump(): Promise<void> {
    try {
      for await (const f of this.link.frames()) this.onFrame(f);
      this.shutdown(await Promise.race([this.link.closed, Promise.resolve('link ended')]));
    } catch (e) {
      this.shutdown((e as Error).message);
    }
  }

  private onFrame(f: Frame): void {
    switch (f.type) {
      case 'control': {
        if (f.json.length > this.opts.maxControlBytes) {
          this.shutdown(`control message of ${f.json.length} bytes exceeds ${this.opts.maxControlBytes}`);
          this.link.close('control message too large');
          return;
        }
        let msg: unknown;
        try {
          msg = JSON.parse(f.json);
        } catch {
          msg = null;
        }
        if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) {
          // a malformed message is dropped, never fatal for the receiver
          this.inbox.push({ msg: { type: '__malformed', raw: f.json.slice(0, 200) }, payload: null });
          return;
        }
        const m = msg as Record<string, unknown>;
        const sid = m[STREAM_FIELD];
        let payload: IncomingStream | null = null;
        if (typeof sid === 'number') {
          delete m[STREAM_FIELD];
          payload = new IncomingStream(this, sid, this.opts.stallTimeoutMs, this.opts.onTransfer);
          this.incoming.set(sid, payload);
        }
        this.inbox.push({ msg: m, payload });
        return;
      }
      case 'data': {
        const s = this.incoming.get(f.stream);
        if (!s) return; // cancelled or unknown: drop
        if (s.accept(f)) this.incoming.delete(f.stream);
        return;
      }
      case 'ack': {
        const s = this.outgoing.get(f.stream);
        if (!s) return;
        s.acked(f.bytes);
        s.wake();
        return;
      }
      case 'resend':
        this.resend(f.stream, f.offset);
        return;
      case 'cancel': {
        const out = this.outgoing.get(f.stream);
        if (out) {
          out.cancelled = f.reason;
          out.wake();
        }
        const inc = this.incoming.get(f.stream);
        if (inc) {
          inc.queue.end(new Error(`sender cancelled the payload: ${f.reason}`));
          this.incoming.delete(f.stream);
        }
        return;
      }
    }
  }

  private shutdown(reason: string): void {
    if (this.closedReason) return;
    this.closedReason = reason;
    for (const s of this.incoming.values()) s.queue.end(new Error(`channel to ${this.peer} closed: ${reason}`));
    this.incoming.clear();
    for (const s of this.outgoing.values()) s.wake();
    this.inbox.end();
  }
}
