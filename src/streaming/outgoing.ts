/**
 * A payload stream this side sends: cut into pieces of at most `chunkBytes`, never more than
 * `windowBytes` unacknowledged in flight, each piece kept (with its prefix hash) until the
 * receiver acknowledges it, so a corrupted piece or a dropped link costs at most a window
 * sent again. send() resolves once the receiver has consumed every byte.
 */
import type { Frame } from '../transport/link.ts';
import { ChannelClosedError, StallError, StreamCancelledError } from './errors.ts';
import { PrefixHash } from './prefix-hash.ts';
import { type TransferProgress, ProgressMeter } from './progress.ts';

interface RetainedPiece {
  offset: number;
  bytes: Uint8Array;
  /** xxhash64 of the stream up to this piece's end (unchanged when the piece's front is cut off) */
  hash: string;
}

/** What an outgoing stream needs from its channel. */
export interface SenderHost {
  readonly peer: string;
  /** whether a dropped link is waited out (pieces then go again over the next link) */
  readonly resumable: boolean;
  /** why the channel closed, or null while it is open */
  closedReason(): string | null;
  /** whether data may go out now (a link is attached and resumed) */
  attached(): boolean;
  interrupted(): boolean;
  /** sends a frame; rejects when the link does */
  send(f: Frame): Promise<void>;
  /** sends a frame, best effort */
  post(f: Frame): void;
}

export interface SendLimits {
  chunkBytes: number;
  windowBytes: number;
  stallTimeoutMs: number;
  report?: (t: TransferProgress) => void;
  total?: number;
}

export class OutgoingStream {
  unacked = 0;
  /** bytes acknowledged so far (a resuming receiver reports its total; the difference was lost with the old link) */
  ackedTotal = 0;
  /** bytes handed to the link so far (the next offset to send) */
  sent = 0;
  /** sequence number of the control message that announced the stream (resumable channels) */
  announceSeq = 0;
  cancelled: string | null = null;
  /** pieces sent but not yet acknowledged, oldest first (for resends) */
  private readonly retained: RetainedPiece[] = [];
  /** the closing frame, once sent (resent too if pieces before it were lost) */
  private final: { offset: number; digest: string } | null = null;
  private waiter: (() => void) | null = null;

  constructor(
    private readonly host: SenderHost,
    readonly id: number,
  ) {}

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
    this.wake();
  }

  /** Gives up on the stream (the receiver cancelled, or the resume found it inconsistent). */
  cancel(reason: string): void {
    this.cancelled = reason;
    this.wake();
  }

  wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  private wait(ms: number): Promise<boolean> {
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

  /** Sends the retained pieces again from `offset` (and the closing frame, if sent); returns the payload bytes re-sent. */
  resendFrom(offset: number): number {
    let bytes = 0;
    for (const p of this.retained) {
      const end = p.offset + p.bytes.byteLength;
      if (end <= offset) continue;
      const piece = p.offset < offset ? { offset, bytes: p.bytes.subarray(offset - p.offset), hash: p.hash } : p;
      bytes += piece.bytes.byteLength;
      this.host.post({ type: 'data', stream: this.id, offset: piece.offset, bytes: piece.bytes, hash: piece.hash, last: false });
    }
    if (this.final)
      this.host.post({
        type: 'data',
        stream: this.id,
        offset: this.final.offset,
        bytes: new Uint8Array(0),
        last: true,
        digest: this.final.digest,
      });
    return bytes;
  }

  private check(): void {
    if (this.cancelled !== null) throw new StreamCancelledError(this.host.peer, this.id, this.cancelled, 'peer');
    const closed = this.host.closedReason();
    if (closed !== null) throw new ChannelClosedError(this.host.peer, closed);
  }

  private async waitUntil(done: () => boolean, what: string, stallMs: number): Promise<void> {
    while (!done() && this.cancelled === null && this.host.closedReason() === null) {
      const moved = await this.wait(stallMs);
      if (!moved && !this.host.interrupted())
        throw new StallError(this.host.peer, `sending to ${this.host.peer} stalled: ${what} for ${stallMs} ms`, stallMs);
    }
    this.check();
  }

  /** A piece or the closing frame: a resumable channel sends it again over the next link if this one fails. */
  private async put(f: Frame): Promise<void> {
    try {
      await this.host.send(f);
    } catch (e) {
      if (!this.host.resumable || this.host.closedReason() !== null) throw e;
    }
  }

  /** Streams `payload` (the announcement is already out); resolves once the receiver consumed it all. */
  async run(payload: AsyncIterable<Uint8Array>, lim: SendLimits): Promise<void> {
    const hasher = new PrefixHash();
    const meter = new ProgressMeter(lim.report, this.host.peer, this.id, 'send', lim.total);
    let offset = 0;
    try {
      for await (const chunk of payload) {
        for (let o = 0; o < chunk.byteLength; o += lim.chunkBytes) {
          const piece = chunk.subarray(o, Math.min(o + lim.chunkBytes, chunk.byteLength));
          await this.waitUntil(
            () => this.host.attached() && (this.unacked === 0 || this.unacked + piece.byteLength <= lim.windowBytes),
            'no acknowledgement',
            lim.stallTimeoutMs,
          );
          const hash = hasher.update(piece);
          this.unacked += piece.byteLength;
          this.retained.push({ offset, bytes: piece, hash });
          this.sent = offset + piece.byteLength;
          await this.put({ type: 'data', stream: this.id, offset, bytes: piece, hash, last: false });
          offset += piece.byteLength;
          meter.add(piece.byteLength);
        }
      }
      await this.waitUntil(() => this.host.attached(), 'no link', lim.stallTimeoutMs);
      this.final = { offset, digest: hasher.digest() };
      await this.put({ type: 'data', stream: this.id, offset, bytes: new Uint8Array(0), last: true, digest: this.final.digest });
      // keep the pieces until the receiver has them all: a corrupted one may be asked for again
      await this.waitUntil(() => this.unacked <= 0, 'waiting for the receiver to consume the payload', lim.stallTimeoutMs);
      meter.end();
    } catch (e) {
      if (this.cancelled === null && this.host.closedReason() === null)
        this.host.post({ type: 'cancel', stream: this.id, reason: (e as Error).message });
      throw e;
    }
  }
}
