/**
 * Links inside one process (the simulator's default) and across worker
 * threads (MessagePort). Flow control is not the transport's job: the
 * streaming channel above never has more than a window of unacknowledged
 * payload bytes in flight, so these queues stay bounded.
 */
import type { MessagePort } from 'node:worker_threads';
import { AsyncQueue } from '../util/async-queue.ts';
import type { Frame, Link, ServerTransport } from './link.ts';

class QueueLink implements Link {
  readonly inbox = new AsyncQueue<Frame>();
  other: QueueLink | null = null;
  private resolveClosed!: (r: string) => void;
  readonly closed = new Promise<string>((r) => (this.resolveClosed = r));
  private isClosed = false;
  constructor(readonly peer: string) {}

  async send(frame: Frame): Promise<void> {
    if (this.isClosed) throw new Error(`link to ${this.peer} is closed`);
    this.other!.inbox.push(frame);
  }
  frames(): AsyncIterable<Frame> {
    return this.inbox.drain();
  }
  close(reason = 'closed'): void {
    if (this.isClosed) return;
    this.shut(reason);
    this.other?.shut(reason);
  }
  shut(reason: string): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.inbox.end();
    this.resolveClosed(reason);
  }
}

/** Two connected ends: `a` sees `bName` as its peer and vice versa. */
export function linkPair(aPeer: string, bPeer: string): [Link, Link] {
  const a = new QueueLink(aPeer);
  const b = new QueueLink(bPeer);
  a.other = b;
  b.other = a;
  return [a, b];
}

/** The simulator's server transport: clients connect by calling connect(site). */
export class InMemoryHub implements ServerTransport {
  private readonly pending = new AsyncQueue<Link>();

  /** Client side: returns the client's end of a new link. */
  connect(site: string): Link {
    const [serverEnd, clientEnd] = linkPair(site, 'server');
    this.pending.push(serverEnd);
    return clientEnd;
  }

  /** Registers a server end created elsewhere (e.g. a MessagePort link to a worker). */
  adopt(serverEnd: Link): void {
    this.pending.push(serverEnd);
  }

  accept(): AsyncIterable<Link> {
    return this.pending.drain();
  }

  async close(): Promise<void> {
    this.pending.end();
  }
}

/** A link over a worker_threads MessagePort (payload bytes are copied by structured clone). */
export class MessagePortLink implements Link {
  private readonly inbox = new AsyncQueue<Frame>();
  private resolveClosed!: (r: string) => void;
  readonly closed = new Promise<string>((r) => (this.resolveClosed = r));
  private isClosed = false;

  constructor(
    readonly peer: string,
    private readonly port: MessagePort,
  ) {
    port.on('message', (m: Frame | { type: 'close'; reason: string }) => {
      if (m.type === 'close') this.shut(m.reason);
      else this.inbox.push(m);
    });
    port.on('close', () => this.shut('port closed'));
  }

  async send(frame: Frame): Promise<void> {
    if (this.isClosed) throw new Error(`link to ${this.peer} is closed`);
    if (frame.type === 'data') {
      // Cloning a view would copy its whole backing buffer (maybe the whole model): send just the slice.
      const copy = frame.bytes.slice();
      this.port.postMessage({ ...frame, bytes: copy }, [copy.buffer]);
    } else {
      this.port.postMessage(frame);
    }
  }
  frames(): AsyncIterable<Frame> {
    return this.inbox.drain();
  }
  close(reason = 'closed'): void {
    if (this.isClosed) return;
    try {
      this.port.postMessage({ type: 'close', reason });
    } catch {
      /* the other side is gone already */
    }
    this.shut(reason);
    this.port.close();
  }
  private shut(reason: string): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.inbox.end();
    this.resolveClosed(reason);
  }
}
