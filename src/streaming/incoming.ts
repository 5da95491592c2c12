/**
 * A payload stream this side receives: pieces checked against their prefix hash as they arrive
 * (a corrupted one is asked for again), acknowledged as the consumer takes them (that is what
 * paces the sender), held to the sender's window (a peer ignoring flow control has its stream
 * cancelled, not queued), and a stall timer while the consumer waits for the next piece.
 *
 * While it holds bytes its consumer has not taken (a consumer busy elsewhere: a task queued behind
 * a long one), the receiver sends a zero-byte ack every second (keepalive): the sender's stall timer
 * then measures whether the receiver is there, not how fast its application reads. A receiver that
 * is gone, or whose link is, sends nothing and the sender fails after its stall timeout; a payload
 * nobody reads gets keepalives for at most `holdMs` after the last progress.
 */
import type { Frame } from '../transport/link.ts';
import { AsyncQueue } from '../util/async-queue.ts';
import { ChannelClosedError, CorruptStreamError, StallError, StreamCancelledError } from './errors.ts';
import { PrefixHash } from './prefix-hash.ts';
import { type TransferProgress, ProgressMeter } from './progress.ts';
import { ACK_INTERVAL_MS } from './protocol.ts';

/** A received payload: iterate it once, or cancel it. */
export interface Payload extends AsyncIterable<Uint8Array> {
  cancel(reason: string): void;
}

/** What an incoming stream needs from its channel. */
export interface ReceiverHost {
  readonly peer: string;
  /** sends a frame, best effort (a lost ack or resend request is made good by the resume handshake) */
  post(f: Frame): void;
  /** whether stall timers should keep waiting: between links, or just after a resume */
  interrupted(): boolean;
  /** why the channel closed, or null while it is open (a finished stream may outlive the channel's table of streams) */
  closedReason(): string | null;
  /** the stream is over: consumed to the end (`reason` null) or cancelled */
  ended(id: number, consumed: number, reason: string | null): void;
}

export interface IncomingLimits {
  stallMs: number;
  /** how long after the last progress (a piece arrived or consumed) a held stream is kept alive at the sender */
  holdMs: number;
  /** the sender's window (as announced, capped by this side) */
  window: number;
  /** the most bytes received and not yet consumed that a sender keeping to that window can cause */
  limit: number;
  report?: (t: TransferProgress) => void;
  total?: number;
}

export class IncomingStream implements Payload {
  private readonly queue = new AsyncQueue<Uint8Array>();
  /** next byte offset expected */
  expected = 0;
  /** bytes the consumer has taken (and acknowledged) */
  consumed = 0;
  /** the last piece arrived */
  complete = false;
  /** set while waiting for a resend after a corrupted piece */
  private awaitingResend = false;
  /** xxhash64 of the bytes accepted so far */
  private readonly hash = new PrefixHash();
  /** the consumer finished or cancelled */
  private over = false;
  private readonly meter: ProgressMeter;
  /** bytes consumed but not yet acknowledged: acks go out per `ackEvery` bytes, not per chunk */
  private unacked = 0;
  private lastAckAt = performance.now();
  private readonly ackEvery: number;
  /** the keepalive while bytes are held unconsumed, and the last progress it measures the hold from */
  private keepalive: NodeJS.Timeout | null = null;
  private lastProgressAt = performance.now();
  /** the sender cancelled or the channel closed: nobody to keep alive */
  private gone = false;

  constructor(
    private readonly host: ReceiverHost,
    readonly id: number,
    private readonly lim: IncomingLimits,
  ) {
    // an eighth of the sender's window: the sender always has 7/8 of it free, at an eighth of the ack frames
    this.ackEvery = Math.max(1, Math.floor(lim.window / 8));
    this.meter = new ProgressMeter(lim.report, host.peer, id, 'receive', lim.total);
  }

  /** Accepts a data frame if it is intact and in order; asks for a resend otherwise. Returns whether the stream ended. */
  accept(f: Extract<Frame, { type: 'data' }>): boolean {
    // a piece after a dropped one (or a duplicate): the resend brings it again
    if (f.offset !== undefined && f.offset !== this.expected) return false;
    if (f.bytes.byteLength > 0) {
      const next = this.hash.peek(f.bytes);
      if (f.hash !== undefined && next.digest !== f.hash) {
        if (!this.awaitingResend) {
          this.awaitingResend = true;
          this.host.post({ type: 'resend', stream: this.id, offset: this.expected });
        }
        return false;
      }
      this.hash.commit(next.state);
    }
    this.awaitingResend = false;
    this.expected += f.bytes.byteLength;
    if (this.expected - this.consumed > this.lim.limit) {
      // a sender keeping to its window never gets here: this one would make the queue grow without bound
      this.cancel(`the sender ignored flow control: ${this.expected - this.consumed} bytes unconsumed, at most ${this.lim.limit} allowed`);
      return true;
    }
    if (f.bytes.byteLength > 0) {
      this.queue.push(f.bytes);
      this.progressed();
    }
    if (f.last) {
      this.complete = true;
      // every piece was checked on arrival; the digest checks that none is missing or extra
      if (f.digest !== undefined && this.hash.digest() !== f.digest)
        this.queue.end(new CorruptStreamError(this.host.peer, this.id, this.expected));
      else this.queue.end();
      return true;
    }
    return false;
  }

  cancel(reason: string): void {
    if (this.over) return;
    this.over = true;
    this.holding();
    const wasEnded = this.queue.isEnded && !this.complete;
    this.queue.end(new StreamCancelledError(this.host.peer, this.id, reason, 'local'));
    this.host.ended(this.id, this.consumed, reason);
    // a queue that ended with an error: the sender cancelled or the channel closed, nobody to tell
    if (!wasEnded) this.host.post({ type: 'cancel', stream: this.id, reason });
  }

  /** The sender gave up on the stream. */
  cancelledByPeer(reason: string): void {
    this.gone = true;
    this.holding();
    this.queue.end(new StreamCancelledError(this.host.peer, this.id, reason, 'peer'));
  }

  /** The channel closed under the stream. */
  channelClosed(reason: string): void {
    this.gone = true;
    this.holding();
    this.queue.end(new ChannelClosedError(this.host.peer, reason));
  }

  /** A piece arrived or was consumed: the hold counts from now, and the keepalive runs while bytes are held. */
  private progressed(): void {
    this.lastProgressAt = performance.now();
    this.holding();
  }

  /** Starts or stops the keepalive: on while this side holds bytes of a live stream its consumer has not taken. */
  private holding(): void {
    const held = !this.over && !this.gone && this.expected > this.consumed;
    if (held && this.keepalive === null) {
      const every = Math.max(10, Math.min(ACK_INTERVAL_MS, this.lim.stallMs / 4));
      this.keepalive = setInterval(() => {
        if (performance.now() - this.lastProgressAt > this.lim.holdMs || this.host.closedReason() !== null) return this.stopKeepalive();
        this.host.post({ type: 'ack', stream: this.id, bytes: 0 });
      }, every);
      this.keepalive.unref();
    } else if (!held) this.stopKeepalive();
  }

  private stopKeepalive(): void {
    if (this.keepalive !== null) clearInterval(this.keepalive);
    this.keepalive = null;
  }

  /**
   * What this side has of the stream, for the resume handshake. The report acknowledges everything
   * consumed: bytes consumed but not yet acknowledged are not acknowledged again afterwards (the
   * sender would count them twice and, at the next resume, find more acknowledged than consumed).
   */
  resumeState(): { received: number; consumed: number; complete: boolean } {
    this.unacked = 0;
    this.lastAckAt = performance.now();
    return { received: this.expected, consumed: this.consumed, complete: this.complete };
  }

  private flushAck(): void {
    if (this.unacked === 0) return;
    const bytes = this.unacked;
    this.unacked = 0;
    this.lastAckAt = performance.now();
    this.host.post({ type: 'ack', stream: this.id, bytes });
  }

  private finish(): void {
    if (this.over) return;
    this.over = true;
    this.holding();
    this.flushAck();
    this.host.ended(this.id, this.consumed, null);
  }

  /** The next chunk; waits at most the stall timeout for it, longer only while the channel is between links. */
  private async next(): Promise<Uint8Array | undefined> {
    if (this.queue.size > 0 || this.queue.isEnded) return this.queue.next();
    const p = this.queue.next();
    const ms = this.lim.stallMs;
    for (;;) {
      let t: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([p.then(() => false), new Promise<boolean>((r) => (t = setTimeout(() => r(true), ms)))]).finally(
        () => clearTimeout(t),
      );
      if (!timedOut) return p;
      if (!this.host.interrupted())
        throw new StallError(this.host.peer, `payload stream ${this.id} from ${this.host.peer} stalled: no data for ${ms} ms`, ms);
    }
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    try {
      for (;;) {
        const next = await this.next();
        if (next === undefined) break;
        this.consumed += next.byteLength;
        this.progressed();
        this.meter.add(next.byteLength);
        // acknowledge as the consumer takes chunks: an eighth of the sender's window at a time,
        // or at once for a slow consumer, so the sender's stall timer sees progress
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
