/**
 * A Link over one gRPC bidirectional call, the same class on both ends; each message is one
 * frame in the codec's encoding (grpc/wire.ts).
 * send() honours the stream's backpressure (waits for 'drain'); a frame that
 * does not decode to a valid Frame closes this call only.
 */
import type * as grpc from '@grpc/grpc-js';
import type { Frame, Link } from '../link.ts';
import { StreamLink } from '../stream-link.ts';
import { decodeGrpcFrame } from './wire.ts';

/** Frames go out as Frames (FEDERATION_SERVICE encodes them) and come in as the Frame message's bytes. */
type Duplex = grpc.ClientDuplexStream<Frame, Buffer> | grpc.ServerDuplexStream<Buffer, Frame>;

export interface GrpcLinkHooks {
  /** ends the call; `error` is set for a protocol violation by the peer */
  end(stream: Duplex, reason: string, error?: string): void;
}

export class GrpcLink extends StreamLink implements Link {
  constructor(
    readonly peer: string,
    private readonly stream: Duplex,
    private readonly hooks: GrpcLinkHooks,
  ) {
    super();
    stream.on('data', (b: Buffer) => {
      if (this.isClosed) return;
      const f = decodeGrpcFrame(b);
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

  async send(frame: Frame): Promise<void> {
    if (this.isClosed) throw new Error(`link to ${this.peer} is closed`);
    let ok: boolean;
    try {
      ok = this.stream.write(frame);
    } catch (e) {
      this.shut(`write failed: ${(e as Error).message}`);
      throw new Error(`link to ${this.peer} is closed`);
    }
    if (!ok) await this.drained();
  }

  close(reason = 'closed', protocolError?: string): void {
    if (this.isClosed) return;
    this.shut(reason);
    this.hooks.end(this.stream, reason, protocolError);
  }
}
