/**
 * What every Link over a byte stream keeps: the frames received, whether it is
 * closed and why, and the senders waiting for the stream to drain. The gRPC
 * link and the data plane's TLS link differ only in how frames are written and read.
 */
import { AsyncQueue } from '../util/async-queue.ts';
import type { Frame } from './link.ts';

export abstract class StreamLink {
  protected readonly inbox = new AsyncQueue<Frame>();
  private resolveClosed!: (r: string) => void;
  readonly closed = new Promise<string>((r) => (this.resolveClosed = r));
  protected isClosed = false;
  private drainWaiters: (() => void)[] = [];
  /** on the server side, the dialling side's name for the channel this link carries (resume) */
  resumeId: string | null = null;

  get isOpen(): boolean {
    return !this.isClosed;
  }

  /** Incoming frames in order; ends when the link closes. Iterate once. */
  frames(): AsyncIterable<Frame> {
    return this.inbox.drain();
  }

  /** Resolves at the stream's next 'drain' (or when the link closes). */
  protected drained(): Promise<void> {
    return new Promise<void>((r) => this.drainWaiters.push(r));
  }

  protected wakeDrain(): void {
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const r of w) r();
  }

  /** Marks the link closed with `reason` (once): ends the inbox, releases waiting senders. */
  protected shut(reason: string): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.inbox.end();
    this.wakeDrain();
    this.resolveClosed(reason);
  }
}
