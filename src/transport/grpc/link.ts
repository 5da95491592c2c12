/**
 * A Link over one gRPC bidirectional call, the same class on both ends.
 * send() honours the stream's backpressure (waits for 'drain'); a frame that
 * does not decode to a valid Frame closes this call only.
 */
import type * as grpc from '@grpc/grpc-js';
import { AsyncQueue } from '../../util/async-queue.ts';
import type { Frame, Link } from '../link.ts';
import { type WireFrame, fromWire, toWire } from './wire.ts';

type Duplex = grpc.ClientDuplexStream<WireFrame, WireFrame> | grpc.ServerDuplexStream<WireFrame, WireFrame>;

export interface GrpcLinkHooks {
  /** ends the call; `error` is set for a protocol violation by the peer */
  end(stream: Duplex, reason: string, error?: string): void;
}

export class GrpcLink implements Link {
  private readonly inbox = new AsyncQueue<Frame>();
  private resolveClosed!: (r: string) => void;
  readonly closed = new Promise<string>((r) => (this.resolveClosed = r));
  private isClosed = false;
  private drainWaiters: (() => void)[] = [];
  /** the channel id the dialling side sent (x-flotilla-channel), on the server side */
  resumeId: string | null = null;

  constructor(readonly peer: string, private readonly stream: Duplex, private readonly hooks: GrpcLinkHooks) {
    stream.on('data', (w: WireFrame) => {
      if (this.isClosed) return;
      const f = fromWire(w);
      if (typeof f === 'string') {
        this.close(`protocol error from ${peer}: ${f}`, f);
        return;
      }
      this.inbox.push(f);
    });
    stream.on('drain', () => this.wakeDrain());
    stream.on('end', () => this.shut('peer closed the stream'));
    stream.on('error', (e: Error & { details?: string }) => this.shut(e.details || e.message));
    stream.on('close', () => this.shut('stream closed'));
    // server side: the client cancelled the call
    (stream as NodeJS.EventEmitter).on('cancelled', () => this.shut('peer cancelled the call'));
  }

  get isOpen(): boolean {
    return !this.isClosed;
  }

  async send(frame: Frame): Promise<void> {
    if (this.isClosed) throw new Error(`link to ${this.peer} is closed`);
    let ok: boolean;
    try {
      ok = this.stream.write(toWire(frame));
    } catch (e) {
      this.shut(`write failed: ${(e as Error).message}`);
      throw new Error(`link to ${this.peer} is closed`);
    }
    if (!ok) await new Promise<void>((r) => this.drainWaiters.push(r));
  }

  frames(): AsyncIterable<Frame> {
    return this.inbox.drain();
  }

  close(reason = 'closed', protocolError?: string): void {
    if (this.isClosed) return;
    this.shut(reason);
    this.hooks.end(this.stream, reason, protocolError);
  }

  private wakeDrain(): void {
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const r of w) r();
  }

  private shut(reason: string): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.inbox.end();
    this.wakeDrain();
    this.resolveClosed(reason);
  }
}
