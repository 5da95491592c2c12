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
 * Integrity: every piece carries its offset and the xxhash64 of the stream
 * from its first byte to the piece's end (a prefix hash: one pass over the
 * bytes on each side checks every piece and the whole stream, where a CRC per
 * piece plus a whole-stream hash took two), the last one the digest of the
 * whole stream. A piece is checked as it arrives; a corrupted one is dropped
 * and asked for again (the sender keeps unacknowledged pieces, at most a
 * window of them); a stream whose digest does not match fails, never
 * delivering bad data silently. send() resolves once the receiver has
 * consumed every byte.
 *
 * Resume (option `resume`): when the link drops, the channel waits for a new
 * link to the same peer (dialled by `resume.redial`, or handed to attach());
 * both ends then exchange a `resume` message saying, per open stream, how many
 * bytes they received and consumed, and how many control messages they got.
 * Each sender re-sends the control messages the peer missed and every payload
 * stream from the peer's next expected offset, out of the pieces it kept
 * anyway for CRC resends: at most one window per stream is sent twice. Only a
 * channel that gets no new link within `resume.timeoutMs` (default: the stall
 * timeout) fails. See docs/architecture.md, "Resume after a dropped link".
 */
import { createXXHash64 } from 'hash-wasm';
import { z } from 'zod';
import type { Frame, Link } from '../transport/link.ts';
import { AsyncQueue } from '../util/async-queue.ts';
import { describeZodError } from '../util/zod-error.ts';

export interface ResumeOptions {
  /** how long a channel without a link waits for a new one before failing (default: stallTimeoutMs) */
  timeoutMs?: number;
  /**
   * dials a new link to the same peer (the side that connects); tried at once when a link drops,
   * then with backoff from minDelayMs to maxDelayMs. Without it the channel waits for attach().
   */
  redial?: () => Link | Promise<Link>;
  minDelayMs?: number;
  maxDelayMs?: number;
  /** the link dropped; the channel is waiting for a new one */
  onLinkLost?: (reason: string) => void;
  /** a new link took over; `resentBytes` payload bytes are being sent again */
  onResumed?: (info: { resentBytes: number; seconds: number }) => void;
}

export interface ChannelOptions {
  chunkBytes?: number;
  windowBytes?: number;
  stallTimeoutMs?: number;
  /** largest control message accepted, in bytes of JSON */
  maxControlBytes?: number;
  /**
   * largest window a sender may announce for a stream to this side (default 1 GiB): a receiver
   * holds at most that much (plus one chunk) of a stream its consumer has not taken
   */
  maxWindowBytes?: number;
  /** progress of each payload transfer, at most every 250 ms and once when it ends (for bars and logs) */
  onTransfer?: (t: TransferProgress) => void;
  /**
   * survive a dropped link: keep the channel's streams open and continue them over a new link
   * (both ends must enable it). Off by default: a dropped link then fails the channel at once.
   */
  resume?: boolean | ResumeOptions;
}

export interface TransferProgress {
  peer: string;
  stream: number;
  direction: 'send' | 'receive';
  /** payload bytes moved so far */
  bytes: number;
  /** the payload's size, when the sender announced it (send(..., { totalBytes })) */
  total?: number;
  seconds: number;
  done: boolean;
}

/** Seconds left at the transfer's average rate so far, or undefined without a known total. */
export function etaSeconds(t: Pick<TransferProgress, 'bytes' | 'total' | 'seconds'>): number | undefined {
  if (t.total === undefined || t.bytes <= 0) return undefined;
  return Math.max(0, ((t.total - t.bytes) * t.seconds) / t.bytes);
}

/** Reports a transfer's progress without flooding: every 250 ms, and at the end. */
class ProgressMeter {
  private readonly started = performance.now();
  private last = 0;
  bytes = 0;
  constructor(
    private readonly report: ((t: TransferProgress) => void) | undefined,
    private readonly peer: string,
    private readonly stream: number,
    private readonly direction: 'send' | 'receive',
    private readonly total?: number,
  ) {}
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
    this.report?.({ peer: this.peer, stream: this.stream, direction: this.direction, bytes: this.bytes, ...(this.total !== undefined && { total: this.total }), seconds: (performance.now() - this.started) / 1000, done });
  }
}

export const CHANNEL_DEFAULTS = {
  chunkBytes: 1 << 20,
  windowBytes: 64 << 20,
  stallTimeoutMs: 300_000,
  maxControlBytes: 16 << 20,
  maxWindowBytes: 1 << 30,
} as const;

/** A consumer slower than this between chunks has each chunk acknowledged at once. */
const ACK_INTERVAL_MS = 1000;

/** Largest piece a sender may put in flight beyond its window (it may always send one piece, whatever its size). */
const MAX_PIECE_BYTES = 16 << 20;

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
/** Field of the same message with the payload's size, when the sender knows it (progress and ETA on both ends). */
const SIZE_FIELD = '__bytes';
/** Field of the same message with the sender's window: the receiver holds the sender to it. */
const WINDOW_FIELD = '__window';
/** Field of the channel's own control messages (resume handshake, control acks, goodbye); never delivered to the application. */
const CHANNEL_FIELD = '__channel';
/** Streams whose end a resumable receiver remembers, so a sender that missed the news learns it on resume. */
const ENDED_MEMORY = 1024;
/** Unconfirmed control messages a resumable channel keeps at most (and at most 4 × maxControlBytes of them). */
const MAX_UNCONFIRMED = 100_000;

const StreamState = z.strictObject({
  id: z.number().int().min(1).max(0xffffffff),
  /** next byte offset expected (bytes received in order) */
  received: z.number().int().nonnegative(),
  /** bytes the consumer has taken */
  consumed: z.number().int().nonnegative(),
  /** open: more bytes expected; complete: last piece received; done: consumed to the end; cancelled: the receiver gave up */
  state: z.enum(['open', 'complete', 'done', 'cancelled']),
  reason: z.string().max(4096).optional(),
});
type StreamState = z.infer<typeof StreamState>;

/** The channel's own messages, validated like any input from a peer. */
const ChannelMessage = z.discriminatedUnion(CHANNEL_FIELD, [
  z.strictObject({ [CHANNEL_FIELD]: z.literal('resume'), control: z.number().int().nonnegative(), streams: z.array(StreamState).max(100_000) }),
  z.strictObject({ [CHANNEL_FIELD]: z.literal('cack'), control: z.number().int().nonnegative() }),
  z.strictObject({ [CHANNEL_FIELD]: z.literal('close'), reason: z.string().max(4096) }),
]);
type ResumeMessage = Extract<z.infer<typeof ChannelMessage>, { __channel: 'resume' }>;

/**
 * One xxhash64 instance for every stream of the process: each stream keeps its own state
 * (save/load, ~100 bytes) and uses the instance only between two awaits.
 */
const xxh = await createXXHash64();
xxh.init();
const EMPTY_STATE = xxh.save();

/** Running xxhash64 of a stream: update with each piece, read the digest of the prefix so far. */
class PrefixHash {
  private state = EMPTY_STATE;
  /** the digest the stream would have after `bytes` more, without taking them */
  peek(bytes: Uint8Array): { state: Uint8Array; digest: string } {
    xxh.load(this.state);
    xxh.update(bytes);
    const state = xxh.save();
    return { state, digest: xxh.digest('hex') };
  }
  commit(state: Uint8Array): void {
    this.state = state;
  }
  /** hashes `bytes` into the stream and returns the digest of the prefix so far */
  update(bytes: Uint8Array): string {
    const { state, digest } = this.peek(bytes);
    this.state = state;
    return digest;
  }
  digest(): string {
    xxh.load(this.state);
    return xxh.digest('hex');
  }
}

interface RetainedPiece {
  offset: number;
  bytes: Uint8Array;
  /** xxhash64 of the stream up to this piece's end (unchanged when the piece's front is cut off) */
  hash: string;
}

class OutgoingStream {
  unacked = 0;
  /** bytes acknowledged so far (a resuming receiver reports its total; the difference was lost with the old link) */
  ackedTotal = 0;
  /** bytes handed to the link so far (the next offset to send) */
  sent = 0;
  /** sequence number of the control message that announced the stream (resumable channels) */
  announceSeq = 0;
  cancelled: string | null = null;
  /** pieces sent but not yet acknowledged, oldest first (for resends) */
  readonly retained: RetainedPiece[] = [];
  resends = 0;
  /** the closing frame, once sent (resent too if pieces before it were lost) */
  final: { offset: number; digest: string } | null = null;
  acked(bytes: number): void {
    this.unacked -= bytes;
    this.ackedTotal += bytes;
    let left = bytes;
    while (left > 0 && this.retained.length > 0) {
      const head = this.retained[0]!;
      if (head.bytes.byteLength > left) {
        // partial acknowledgement (a transport that re-cut the piece): keep the rest
        this.retained[0] = { offset: head.offset + left, bytes: head.bytes.subarray(left), hash: head.hash };
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
  /** bytes the consumer has taken (and acknowledged) */
  consumed = 0;
  /** the last piece arrived */
  complete = false;
  /** set while waiting for a resend after a corrupted piece */
  awaitingResend = false;
  corrupted = 0;
  /** xxhash64 of the bytes accepted so far */
  private readonly hash = new PrefixHash();
  /** the consumer finished or cancelled */
  private over = false;
  private readonly meter: ProgressMeter;
  /** bytes consumed but not yet acknowledged: acks go out per `ackEvery` bytes, not per chunk */
  private unacked = 0;
  private lastAckAt = performance.now();
  private readonly ackEvery: number;
  /**
   * `window`: the sender's window (as announced, capped by this side). `limit`: the most bytes
   * received and not yet consumed that a sender keeping to that window can cause; more means the
   * peer ignores flow control, and the stream is cancelled instead of queued.
   */
  constructor(private readonly channel: Channel, private readonly id: number, private readonly stallMs: number, private readonly limit: number, window: number, report?: (t: TransferProgress) => void, total?: number) {
    // an eighth of the sender's window: the sender always has 7/8 of it free, at an eighth of the ack frames
    this.ackEvery = Math.max(1, Math.floor(window / 8));
    this.meter = new ProgressMeter(report, channel.peer, id, 'receive', total);
  }

  /** Accepts a data frame if it is intact and in order; asks for a resend otherwise. Returns whether the stream ended. */
  accept(f: Extract<Frame, { type: 'data' }>): boolean {
    if (f.offset !== undefined) {
      if (f.offset !== this.expected) return false; // a piece after a dropped one (or a duplicate): the resend brings it again
    }
    if (f.bytes.byteLength > 0) {
      const next = this.hash.peek(f.bytes);
      if (f.hash !== undefined && next.digest !== f.hash) {
        this.corrupted++;
        if (!this.awaitingResend) {
          this.awaitingResend = true;
          void this.channel.sendFrame({ type: 'resend', stream: this.id, offset: this.expected }).catch(() => undefined);
        }
        return false;
      }
      this.hash.commit(next.state);
    }
    this.awaitingResend = false;
    this.expected += f.bytes.byteLength;
    if (this.expected - this.consumed > this.limit) {
      // a sender keeping to its window never gets here: this one would make the queue grow without bound
      this.cancel(`the sender ignored flow control: ${this.expected - this.consumed} bytes unconsumed, at most ${this.limit} allowed`);
      return true;
    }
    if (f.bytes.byteLength > 0) this.queue.push(f.bytes);
    if (f.last) {
      this.complete = true;
      // every piece was checked on arrival; the digest checks that none is missing or extra
      if (f.digest !== undefined && this.hash.digest() !== f.digest) {
        this.queue.end(new Error(`payload stream ${this.id} is corrupt: xxhash64 of the ${this.expected} bytes received does not match the sender's`));
      } else this.queue.end();
      return true;
    }
    return false;
  }

  cancel(reason: string): void {
    if (this.over) return;
    this.over = true;
    const wasEnded = this.queue.isEnded && !this.complete;
    this.queue.end(new Error(`payload cancelled: ${reason}`));
    this.channel.streamEnded(this.id, this.consumed, reason);
    // a queue that ended with an error: the sender cancelled or the channel closed, nobody to tell
    if (!wasEnded) void this.channel.sendFrame({ type: 'cancel', stream: this.id, reason }).catch(() => undefined);
  }

  private flushAck(): void {
    if (this.unacked === 0) return;
    const bytes = this.unacked;
    this.unacked = 0;
    this.lastAckAt = performance.now();
    void this.channel.sendFrame({ type: 'ack', stream: this.id, bytes }).catch(() => undefined);
  }

  private finish(): void {
    if (this.over) return;
    this.over = true;
    this.flushAck();
    this.channel.streamEnded(this.id, this.consumed, null);
  }

  /** The next chunk; waits at most the stall timeout for it, longer only while the channel is between links. */
  private async next(): Promise<Uint8Array | undefined> {
    if (this.queue.size > 0 || this.queue.isEnded) return this.queue.next();
    const p = this.queue.next();
    for (;;) {
      let t: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([p.then(() => false), new Promise<boolean>((r) => (t = setTimeout(() => r(true), this.stallMs)))]).finally(() => clearTimeout(t));
      if (!timedOut) return p;
      if (!this.channel.interrupted()) throw new Error(`payload stream ${this.id} stalled: no data for ${this.stallMs} ms`);
    }
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    try {
      for (;;) {
        const next = await this.next();
        if (next === undefined) break;
        this.consumed += next.byteLength;
        this.meter.add(next.byteLength);
        // acknowledge as the consumer takes chunks (this is what paces the sender): an eighth of its
        // window at a time, or at once for a slow consumer, so the sender's stall timer sees progress
        this.unacked += next.byteLength;
        if (this.unacked >= this.ackEvery || performance.now() - this.lastAckAt > ACK_INTERVAL_MS) this.flushAck();
        yield next;
      }
      this.meter.end();
      this.finish();
    } finally {
      if (!this.over) {
        // stopping right after the last chunk is finishing, not cancelling
        if (this.complete && this.queue.size === 0) this.finish();
        else this.cancel('consumer stopped reading');
      }
    }
  }
}

type Phase = 'attached' | 'detached' | 'resuming';

interface ResumeConfig extends ResumeOptions {
  timeoutMs: number;
  minDelayMs: number;
  maxDelayMs: number;
}

export class Channel {
  private readonly opts: Required<Omit<ChannelOptions, 'onTransfer' | 'resume'>> & Pick<ChannelOptions, 'onTransfer'>;
  private nextStream = 1;
  private readonly outgoing = new Map<number, OutgoingStream>();
  private readonly incoming = new Map<number, IncomingStream>();
  private readonly inbox = new AsyncQueue<Envelope>();
  private closedReason: string | null = null;
  private current: Link;
  // ---- resume (null when the channel is not resumable) ----
  private readonly resume: ResumeConfig | null;
  private phase: Phase = 'attached';
  /** when the last resume completed (performance.now()), to restart stall timers */
  private lastResumeAt = -Infinity;
  private detachedAt = 0;
  private lostReason = '';
  private resumeTimer: NodeJS.Timeout | null = null;
  private pendingLink: Link | null = null;
  private linkWaiter: (() => void) | null = null;
  private dialDelay = 0;
  private nextDialAt = 0;
  private closing = false;
  private peerClosed: string | null = null;
  /** control messages sent / received (application messages only; the channel's own are not counted) */
  private controlOut = 0;
  private controlIn = 0;
  /** control messages the peer has not confirmed, for resending after a resume */
  private readonly unconfirmed: { seq: number; json: string }[] = [];
  private unconfirmedChars = 0;
  /** control messages up to this number were dropped unconfirmed (over the cap): a resume that needs them fails */
  private forgottenUpTo = 0;
  private cackScheduled = false;
  /** streams this side received and finished (resumable channels), by id */
  private readonly endedIncoming = new Map<number, { consumed: number; reason: string | null }>();
  /** resumes completed and payload bytes sent again because of them */
  readonly stats = { resumes: 0, resentBytes: 0 };

  constructor(link: Link, opts: ChannelOptions = {}) {
    const { resume, ...rest } = opts;
    this.opts = { ...CHANNEL_DEFAULTS, ...rest };
    const r: ResumeOptions | null = resume === true ? {} : resume || null;
    this.resume = r && { ...r, timeoutMs: r.timeoutMs ?? this.opts.stallTimeoutMs, minDelayMs: r.minDelayMs ?? 100, maxDelayMs: r.maxDelayMs ?? 5_000 };
    this.dialDelay = this.resume?.minDelayMs ?? 0;
    this.current = link;
    void this.pump();
  }

  /** The link the channel runs over now (a resumable channel's link changes after a reconnection). */
  get link(): Link {
    return this.current;
  }

  get peer(): string {
    return this.current.peer;
  }

  get isClosed(): boolean {
    return this.closedReason !== null;
  }

  /** Why the channel closed, once it has. */
  get closeReason(): string | null {
    return this.closedReason;
  }

  /** Whether the channel is between links (resumable channels only). */
  get isDetached(): boolean {
    return this.phase !== 'attached';
  }

  /**
   * Sends a control message, then its payload (if any) under flow control. Resolves when all
   * payload bytes are sent. `totalBytes`, when known, travels with the announcement so both
   * ends can report progress against it (an ETA); it is not enforced.
   */
  async send(msg: Record<string, unknown>, payload?: AsyncIterable<Uint8Array>, opts: { totalBytes?: number } = {}): Promise<void> {
    if (this.closedReason) throw new Error(`channel to ${this.peer} closed: ${this.closedReason}`);
    if (!payload) {
      await this.sendControl(JSON.stringify(msg))[1];
      return;
    }
    const id = this.nextStream++;
    const out = new OutgoingStream();
    this.outgoing.set(id, out);
    const hasher = new PrefixHash();
    const check = (): void => {
      if (out.cancelled) throw new Error(`${this.peer} cancelled the payload: ${out.cancelled}`);
      if (this.closedReason) throw new Error(`channel to ${this.peer} closed: ${this.closedReason}`);
    };
    const waitUntil = async (done: () => boolean, what: string): Promise<void> => {
      while (!done() && !out.cancelled && !this.closedReason) {
        const moved = await out.wait(this.opts.stallTimeoutMs);
        if (!moved && !this.interrupted()) throw new Error(`sending to ${this.peer} stalled: ${what} for ${this.opts.stallTimeoutMs} ms`);
      }
      check();
    };
    const resumable = this.resume !== null;
    let offset = 0;
    const total = opts.totalBytes;
    const meter = new ProgressMeter(this.opts.onTransfer, this.peer, id, 'send', total);
    try {
      const [seq, announced] = this.sendControl(JSON.stringify({ ...msg, [STREAM_FIELD]: id, [WINDOW_FIELD]: this.opts.windowBytes, ...(total !== undefined && { [SIZE_FIELD]: total }) }));
      out.announceSeq = seq;
      await announced;
      for await (const chunk of payload) {
        for (let o = 0; o < chunk.byteLength; o += this.opts.chunkBytes) {
          const piece = chunk.subarray(o, Math.min(o + this.opts.chunkBytes, chunk.byteLength));
          await waitUntil(() => this.phase === 'attached' && (out.unacked === 0 || out.unacked + piece.byteLength <= this.opts.windowBytes), 'no acknowledgement');
          const hash = hasher.update(piece);
          out.unacked += piece.byteLength;
          out.retained.push({ offset, bytes: piece, hash });
          out.sent = offset + piece.byteLength;
          try {
            await this.current.send({ type: 'data', stream: id, offset, bytes: piece, hash, last: false });
          } catch (e) {
            // a resumable channel sends the piece again over the next link
            if (!resumable || this.closedReason) throw e;
          }
          offset += piece.byteLength;
          meter.add(piece.byteLength);
        }
      }
      await waitUntil(() => this.phase === 'attached', 'no link');
      out.final = { offset, digest: hasher.digest() };
      try {
        await this.current.send({ type: 'data', stream: id, offset, bytes: new Uint8Array(0), last: true, digest: out.final.digest });
      } catch (e) {
        if (!resumable || this.closedReason) throw e;
      }
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

  /**
   * Sends an application control message; returns its sequence number (resumable channels) and
   * when the link took it. A resumable channel keeps it until the peer confirms it, and only
   * queues it while between links: the resume sends it, in order.
   */
  private sendControl(json: string): [number, Promise<void>] {
    const frame: Frame = { type: 'control', json };
    if (!this.resume) return [0, this.current.send(frame)];
    const seq = ++this.controlOut;
    this.unconfirmed.push({ seq, json });
    this.unconfirmedChars += json.length;
    // a peer that never confirms (it is not resumable) must not make this list grow without bound
    while (this.unconfirmed.length > 1 && (this.unconfirmed.length > MAX_UNCONFIRMED || this.unconfirmedChars > this.opts.maxControlBytes * 4)) {
      const dropped = this.unconfirmed.shift()!;
      this.unconfirmedChars -= dropped.json.length;
      this.forgottenUpTo = dropped.seq;
    }
    if (this.phase !== 'attached') return [seq, Promise.resolve()];
    return [seq, this.current.send(frame).catch(() => undefined)];
  }

  /** Sends pieces of an outgoing stream again from `offset` (and its closing frame, if sent); returns the payload bytes re-sent. */
  private resendFrom(id: number, out: OutgoingStream, offset: number): number {
    let bytes = 0;
    for (const p of out.retained) {
      const end = p.offset + p.bytes.byteLength;
      if (end <= offset) continue;
      let piece = p;
      if (p.offset < offset) {
        const rest = p.bytes.subarray(offset - p.offset);
        piece = { offset, bytes: rest, hash: p.hash };
      }
      bytes += piece.bytes.byteLength;
      void this.current.send({ type: 'data', stream: id, offset: piece.offset, bytes: piece.bytes, hash: piece.hash, last: false }).catch(() => undefined);
    }
    if (out.final) void this.current.send({ type: 'data', stream: id, offset: out.final.offset, bytes: new Uint8Array(0), last: true, digest: out.final.digest }).catch(() => undefined);
    return bytes;
  }

  /** Resends pieces of an outgoing stream from `offset` (the receiver found one corrupted). */
  private resend(id: number, offset: number): void {
    const out = this.outgoing.get(id);
    if (!out) return;
    out.resends++;
    this.resendFrom(id, out, offset);
  }

  /** Incoming control messages, each with its payload. Iterate once. */
  messages(): AsyncIterable<Envelope> {
    return this.inbox.drain();
  }

  /**
   * Hands a resumable channel a new link to the same peer (the side that accepts connections
   * calls this; the dialling side uses `resume.redial`). The old link, if still open, is closed;
   * the streams continue over the new one.
   */
  attach(link: Link): void {
    if (!this.resume) throw new Error(`channel to ${this.peer} is not resumable`);
    if (this.closedReason) {
      link.close(`channel closed: ${this.closedReason}`);
      throw new Error(`channel to ${this.peer} closed: ${this.closedReason}`);
    }
    if (link.peer !== this.peer) throw new Error(`cannot attach a link to ${link.peer} to the channel to ${this.peer}`);
    const older = this.pendingLink;
    this.pendingLink = link;
    older?.close('replaced by a newer link');
    // a link still up (or one still resuming) makes way: the pump then picks up the new one
    if (this.phase !== 'detached') this.current.close('replaced by a new link');
    this.wakeLinkWaiter();
  }

  close(reason = 'closed'): void {
    if (this.closedReason === null) {
      this.closing = true;
      if (this.resume) {
        if (this.phase === 'attached') {
          // tell the peer this is the end, not a dropped connection to wait out
          void this.current.send({ type: 'control', json: JSON.stringify({ [CHANNEL_FIELD]: 'close', reason: reason.slice(0, 4096) }) }).catch(() => undefined);
        } else {
          this.shutdown(reason);
        }
      }
    }
    this.current.close(reason);
  }

  /** @internal */
  sendFrame(f: Frame): Promise<void> {
    return this.current.send(f);
  }

  /** @internal */
  forget(id: number): void {
    this.incoming.delete(id);
  }

  /** @internal a received stream is over (consumed to the end, or cancelled with `reason`) */
  streamEnded(id: number, consumed: number, reason: string | null): void {
    this.incoming.delete(id);
    if (!this.resume) return;
    this.endedIncoming.set(id, { consumed, reason });
    if (this.endedIncoming.size > ENDED_MEMORY) this.endedIncoming.delete(this.endedIncoming.keys().next().value!);
  }

  /** @internal whether stall timers should keep waiting: between links, or within a stall timeout of a resume */
  interrupted(): boolean {
    return this.phase !== 'attached' || performance.now() - this.lastResumeAt < this.opts.stallTimeoutMs;
  }

  private async pump(): Promise<void> {
    for (;;) {
      const link = this.current;
      let reason: string;
      try {
        for await (const f of link.frames()) this.onFrame(f);
        reason = await Promise.race([link.closed, Promise.resolve('link ended')]);
      } catch (e) {
        reason = (e as Error).message;
      }
      if (this.closedReason) return;
      if (!this.resume || this.closing || this.peerClosed !== null) {
        this.shutdown(this.peerClosed ?? reason);
        return;
      }
      const next = await this.nextLink(reason);
      if (next === null) return;
      this.beginResume(next);
    }
  }

  /** Waits for a new link (attach() or redial); null if the channel closed meanwhile. */
  private async nextLink(reason: string): Promise<Link | null> {
    const r = this.resume!;
    if (this.phase === 'attached') {
      this.detachedAt = performance.now();
      this.lostReason = reason;
      this.resumeTimer = setTimeout(() => {
        if (this.phase === 'attached') return;
        this.shutdown(`link to ${this.peer} lost (${this.lostReason}) and no new link within ${r.timeoutMs} ms`);
        this.current.close('resume timed out');
      }, r.timeoutMs);
      try {
        r.onLinkLost?.(reason);
      } catch {
        /* a listener's failure is not the channel's */
      }
    }
    this.phase = 'detached';
    for (;;) {
      if (this.closedReason) return null;
      if (this.pendingLink) {
        const l = this.pendingLink;
        this.pendingLink = null;
        return l;
      }
      const now = performance.now();
      if (r.redial && now >= this.nextDialAt) {
        this.nextDialAt = now + this.dialDelay;
        this.dialDelay = Math.min(this.dialDelay * 2, r.maxDelayMs);
        try {
          const l = await r.redial();
          if (this.closedReason) {
            l.close(`channel closed: ${this.closedReason}`);
            return null;
          }
          if (l.peer !== this.peer) {
            l.close('wrong peer');
            continue;
          }
          if (!this.pendingLink) return l;
          l.close('replaced by a newer link');
        } catch {
          /* could not dial: try again after the backoff */
        }
        continue;
      }
      await new Promise<void>((resolve) => {
        const t = r.redial ? setTimeout(done, Math.max(0, this.nextDialAt - performance.now())) : null;
        const self = this;
        function done(): void {
          if (t) clearTimeout(t);
          self.linkWaiter = null;
          resolve();
        }
        this.linkWaiter = done;
      });
    }
  }

  private wakeLinkWaiter(): void {
    this.linkWaiter?.();
  }

  /** Starts over a new link: tells the peer what this side has of each stream, then waits for the peer's word. */
  private beginResume(link: Link): void {
    this.current = link;
    this.phase = 'resuming';
    const streams: StreamState[] = [];
    for (const [id, s] of this.incoming) streams.push({ id, received: s.expected, consumed: s.consumed, state: s.complete ? 'complete' : 'open' });
    for (const [id, e] of this.endedIncoming) {
      streams.push(e.reason === null ? { id, received: e.consumed, consumed: e.consumed, state: 'done' } : { id, received: e.consumed, consumed: e.consumed, state: 'cancelled', reason: e.reason.slice(0, 4096) });
    }
    void link.send({ type: 'control', json: JSON.stringify({ [CHANNEL_FIELD]: 'resume', control: this.controlIn, streams }) }).catch(() => undefined);
  }

  /** The peer's half of the handshake: resend what it lacks, then carry on. */
  private onPeerResume(m: ResumeMessage): void {
    // 1. control messages it missed, in order (stream announcements among them come before their data)
    if (m.control < this.forgottenUpTo) {
      this.fail(`cannot resume the channel to ${this.peer}: it missed control messages this side no longer keeps`);
      return;
    }
    this.confirmControl(m.control);
    for (const c of this.unconfirmed) void this.current.send({ type: 'control', json: c.json }).catch(() => undefined);
    // 2. each payload stream from the offset it expects next
    const told = new Map<number, StreamState>();
    for (const s of m.streams) told.set(s.id, s);
    let resent = 0;
    for (const [id, out] of this.outgoing) {
      const st = told.get(id);
      told.delete(id);
      if (!st) {
        if (out.announceSeq <= m.control) {
          out.cancelled = 'the receiver lost track of the stream across a reconnection';
          out.wake();
        } else {
          resent += this.resendFrom(id, out, 0); // its announcement is being sent again just above
        }
        continue;
      }
      if (st.state === 'cancelled') {
        out.cancelled = st.reason ?? 'cancelled by the receiver';
        out.wake();
        continue;
      }
      if (st.consumed > st.received || st.received > out.sent || st.consumed < out.ackedTotal) {
        const reason = `resume state of stream ${id} is inconsistent (received ${st.received}, consumed ${st.consumed}, sent ${out.sent}, acknowledged ${out.ackedTotal})`;
        out.cancelled = reason;
        void this.current.send({ type: 'cancel', stream: id, reason }).catch(() => undefined);
        out.wake();
        continue;
      }
      if (st.consumed > out.ackedTotal) out.acked(st.consumed - out.ackedTotal); // acknowledgements lost with the old link
      if (st.state === 'open') resent += this.resendFrom(id, out, st.received);
    }
    // streams the receiver still waits on that this side no longer sends (their cancel was lost)
    for (const st of told.values()) {
      if (st.state === 'open') void this.current.send({ type: 'cancel', stream: st.id, reason: 'the sender no longer has this stream' }).catch(() => undefined);
    }
    const seconds = (performance.now() - this.detachedAt) / 1000;
    this.stats.resumes++;
    this.stats.resentBytes += resent;
    this.phase = 'attached';
    this.lastResumeAt = performance.now();
    if (this.resumeTimer) clearTimeout(this.resumeTimer);
    this.resumeTimer = null;
    this.dialDelay = this.resume!.minDelayMs;
    this.nextDialAt = 0;
    for (const out of this.outgoing.values()) out.wake();
    try {
      this.resume!.onResumed?.({ resentBytes: resent, seconds });
    } catch {
      /* a listener's failure is not the channel's */
    }
  }

  private confirmControl(n: number): void {
    while (this.unconfirmed.length > 0 && this.unconfirmed[0]!.seq <= n) this.unconfirmedChars -= this.unconfirmed.shift()!.json.length;
  }

  /** Confirms received control messages to the peer, at most once per turn of the event loop. */
  private scheduleCack(): void {
    if (this.cackScheduled) return;
    this.cackScheduled = true;
    setImmediate(() => {
      this.cackScheduled = false;
      if (this.phase !== 'attached' || this.closedReason) return;
      void this.current.send({ type: 'control', json: JSON.stringify({ [CHANNEL_FIELD]: 'cack', control: this.controlIn }) }).catch(() => undefined);
    });
  }

  /** A protocol violation by the peer ends the channel (never the process). */
  private fail(reason: string): void {
    this.shutdown(reason);
    this.current.close(reason);
  }

  private onChannelMessage(raw: Record<string, unknown>): void {
    const parsed = ChannelMessage.safeParse(raw);
    if (!parsed.success) {
      this.fail(`malformed channel message from ${this.peer}: ${describeZodError(parsed.error)}`);
      return;
    }
    const m = parsed.data;
    switch (m.__channel) {
      case 'close':
        this.peerClosed = m.reason;
        return;
      case 'cack':
        this.confirmControl(m.control);
        return;
      case 'resume': {
        if (!this.resume || this.phase !== 'resuming') {
          // the peer reconnected to a channel this side does not have (expired, or never resumable)
          const reason = 'cannot resume: no such channel on this side';
          void this.current.send({ type: 'control', json: JSON.stringify({ [CHANNEL_FIELD]: 'close', reason }) }).catch(() => undefined);
          this.fail(reason);
          return;
        }
        this.onPeerResume(m);
        return;
      }
    }
  }

  private onFrame(f: Frame): void {
    switch (f.type) {
      case 'control': {
        if (f.json.length > this.opts.maxControlBytes) {
          this.shutdown(`control message of ${f.json.length} bytes exceeds ${this.opts.maxControlBytes}`);
          this.current.close('control message too large');
          return;
        }
        let msg: unknown;
        try {
          msg = JSON.parse(f.json);
        } catch {
          msg = null;
        }
        const isObject = typeof msg === 'object' && msg !== null && !Array.isArray(msg);
        if (isObject && typeof (msg as Record<string, unknown>)[CHANNEL_FIELD] === 'string') {
          this.onChannelMessage(msg as Record<string, unknown>);
          return;
        }
        if (this.resume) {
          this.controlIn++;
          this.scheduleCack();
        }
        if (!isObject) {
          // a malformed message is dropped, never fatal for the receiver
          this.inbox.push({ msg: { type: '__malformed', raw: f.json.slice(0, 200) }, payload: null });
          return;
        }
        const m = msg as Record<string, unknown>;
        const sid = m[STREAM_FIELD];
        let payload: IncomingStream | null = null;
        if (typeof sid === 'number') {
          const size = m[SIZE_FIELD];
          const said = m[WINDOW_FIELD];
          delete m[STREAM_FIELD];
          delete m[SIZE_FIELD];
          delete m[WINDOW_FIELD];
          const total = typeof size === 'number' && Number.isSafeInteger(size) && size >= 0 ? size : undefined;
          // a sender that does not say its window is held to this side's
          const announced = typeof said === 'number' && Number.isSafeInteger(said) && said > 0 ? said : this.opts.windowBytes;
          const window = Math.min(announced, this.opts.maxWindowBytes);
          const limit = window + Math.max(MAX_PIECE_BYTES, this.opts.chunkBytes);
          payload = new IncomingStream(this, sid, this.opts.stallTimeoutMs, limit, window, this.opts.onTransfer, total);
          this.incoming.set(sid, payload);
        }
        this.inbox.push({ msg: m, payload });
        return;
      }
      case 'data': {
        const s = this.incoming.get(f.stream);
        if (!s || s.complete) return; // cancelled, finished or unknown: drop
        // a resumable channel remembers a complete stream until its consumer is done with it
        if (s.accept(f) && !this.resume) this.incoming.delete(f.stream);
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
    if (this.resumeTimer) clearTimeout(this.resumeTimer);
    this.resumeTimer = null;
    this.pendingLink?.close(reason);
    this.pendingLink = null;
    this.wakeLinkWaiter();
    for (const s of this.incoming.values()) s.queue.end(new Error(`channel to ${this.peer} closed: ${reason}`));
    this.incoming.clear();
    for (const s of this.outgoing.values()) s.wake();
    this.inbox.end();
  }
}
