/**
 * A Link over one mutual-TLS socket (the data plane), the same class on both
 * ends. send() writes a frame's small header, then its chunk as it is, and
 * honours the socket's backpressure (waits for 'drain'); a frame that does not
 * parse closes this connection only.
 */
import type { TLSSocket } from 'node:tls';
import type { Frame, Link } from '../link.ts';
import { StreamLink } from '../stream-link.ts';
import { FrameDecoder, type WireItem, writeFrame } from '../codec.ts';

export class TlsLink extends StreamLink implements Link {
  private readonly onData = (b: Buffer): void => this.receive(b);

  /**
   * `decoder` continues the handshake's (it may hold bytes that came behind it); `early` are
   * frames it already parsed past the handshake.
   */
  constructor(
    readonly peer: string,
    private readonly socket: TLSSocket,
    private readonly decoder: FrameDecoder = new FrameDecoder(),
    early: WireItem[] = [],
  ) {
    super();
    socket.setNoDelay(true);
    for (const f of early) this.deliver(f);
    socket.on('data', this.onData);
    socket.on('drain', () => this.wakeDrain());
    socket.on('end', () => this.shut('peer closed the connection'));
    socket.on('error', (e: Error) => this.shut(e.message));
    socket.on('close', () => this.shut('connection closed'));
  }

  async send(frame: Frame): Promise<void> {
    if (this.isClosed) throw new Error(`link to ${this.peer} is closed`);
    if (!writeFrame(this.socket, frame) && !this.isClosed) await this.drained();
  }

  close(reason = 'closed'): void {
    if (this.isClosed) return;
    this.shut(reason);
    this.socket.end();
    // a peer that does not close its side soon is dropped
    setTimeout(() => this.socket.destroy(), 2000).unref();
  }

  private receive(b: Buffer): void {
    if (this.isClosed) return;
    const got = this.decoder.push(b);
    if (typeof got === 'string') {
      this.shut(`protocol error from ${this.peer}: ${got}`);
      this.socket.destroy();
      return;
    }
    for (const f of got) this.deliver(f);
  }

  /** Server side: tells the peer why the connection is not wanted, then closes it. */
  refuse(reason: string): void {
    if (this.isClosed) return;
    writeFrame(this.socket, { type: 'refuse', reason });
    this.close(reason);
  }

  private deliver(f: WireItem): void {
    if (f.type === 'refuse') {
      // the server changed its mind right after its welcome (no such job, say)
      this.shut(`refused by ${this.peer}: ${f.reason}`);
      this.socket.end();
      return;
    }
    if (f.type === 'hello' || f.type === 'welcome') {
      this.shut(`protocol error from ${this.peer}: unexpected ${f.type} frame`);
      this.socket.destroy();
      return;
    }
    this.inbox.push(f);
  }

  protected override shut(reason: string): void {
    this.socket.off('data', this.onData);
    super.shut(reason);
  }
}
