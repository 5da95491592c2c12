/**
 * The payload streams of one channel, both ways: opening them, routing their frames (data, ack,
 * resend, cancel), and their half of the resume handshake (what this side has of each stream it
 * receives; what to send again of each stream it sends).
 */
import type { Frame } from '../transport/link.ts';
import { IncomingStream, type ReceiverHost } from './incoming.ts';
import { OutgoingStream, type SenderHost } from './outgoing.ts';
import type { TransferProgress } from './progress.ts';
import { ENDED_MEMORY, MAX_PIECE_BYTES, MAX_REASON, type ResumeMessage, type StreamHeader, type StreamState } from './protocol.ts';

export type StreamHost = SenderHost & ReceiverHost;

export interface StreamOptions {
  chunkBytes: number;
  windowBytes: number;
  maxWindowBytes: number;
  stallTimeoutMs: number;
  holdTimeoutMs: number;
  onTransfer?: (t: TransferProgress) => void;
}

export class StreamTable {
  private nextId = 1;
  private readonly outgoing = new Map<number, OutgoingStream>();
  private readonly incoming = new Map<number, IncomingStream>();
  /** streams this side received and finished (resumable channels), by id */
  private readonly endedIncoming = new Map<number, { consumed: number; reason: string | null }>();
  private readonly host: StreamHost;

  constructor(
    host: Omit<StreamHost, 'ended'>,
    private readonly opts: StreamOptions,
  ) {
    this.host = { ...bind(host), ended: (id, consumed, reason) => this.ended(id, consumed, reason) };
  }

  /** A new stream to send, registered until `run` settles. */
  openOutgoing(): OutgoingStream {
    const out = new OutgoingStream(this.host, this.nextId++);
    this.outgoing.set(out.id, out);
    return out;
  }

  closeOutgoing(out: OutgoingStream): void {
    this.outgoing.delete(out.id);
  }

  /** The peer announced a stream: the receiver holds the sender to the window it said, capped by this side's. */
  openIncoming(h: StreamHeader): IncomingStream {
    // an id announced again while its stream is open: the peer broke the protocol, and the frames that
    // follow cannot be told apart, so the first stream fails now rather than waiting out its stall timeout
    this.incoming.get(h.id)?.cancelledByPeer(`the peer announced stream ${h.id} again while it was open`);
    const window = Math.min(h.window, this.opts.maxWindowBytes);
    const limit = window + Math.max(MAX_PIECE_BYTES, this.opts.chunkBytes);
    const s: IncomingStream = new IncomingStream(
      {
        ...this.host,
        // a stream replaced under its id (above) ending later must not take its successor's entry
        ended: (id, consumed, reason) => {
          const holder = this.incoming.get(id);
          if (holder === undefined || holder === s) this.ended(id, consumed, reason);
        },
      },
      h.id,
      {
        stallMs: this.opts.stallTimeoutMs,
        holdMs: this.opts.holdTimeoutMs,
        window,
        limit,
        report: this.opts.onTransfer,
        ...(h.bytes !== undefined && { total: h.bytes }),
      },
    );
    this.incoming.set(h.id, s);
    return s;
  }

  onFrame(f: Exclude<Frame, { type: 'control' }>): void {
    switch (f.type) {
      case 'data': {
        const s = this.incoming.get(f.stream);
        if (!s || s.complete) return; // cancelled, finished or unknown: drop
        // a resumable channel remembers a complete stream until its consumer is done with it
        if (s.accept(f) && !this.host.resumable) this.incoming.delete(f.stream);
        return;
      }
      case 'ack':
        this.outgoing.get(f.stream)?.acked(f.bytes);
        return;
      case 'resend':
        this.outgoing.get(f.stream)?.resendFrom(f.offset);
        return;
      case 'cancel': {
        this.outgoing.get(f.stream)?.cancel(f.reason);
        const inc = this.incoming.get(f.stream);
        if (inc) {
          inc.cancelledByPeer(f.reason);
          this.incoming.delete(f.stream);
        }
        return;
      }
    }
  }

  /** A received stream is over (consumed to the end, or cancelled with `reason`). */
  private ended(id: number, consumed: number, reason: string | null): void {
    this.incoming.delete(id);
    if (!this.host.resumable) return;
    this.endedIncoming.set(id, { consumed, reason });
    if (this.endedIncoming.size > ENDED_MEMORY) this.endedIncoming.delete(this.endedIncoming.keys().next().value!);
  }

  /** This side's half of the handshake: what it has of each stream it receives. */
  resumeReport(): StreamState[] {
    const streams: StreamState[] = [];
    for (const [id, s] of this.incoming) {
      const st = s.resumeState();
      streams.push({ id, received: st.received, consumed: st.consumed, state: st.complete ? 'complete' : 'open' });
    }
    for (const [id, e] of this.endedIncoming) {
      streams.push(
        e.reason === null
          ? { id, received: e.consumed, consumed: e.consumed, state: 'done' }
          : { id, received: e.consumed, consumed: e.consumed, state: 'cancelled', reason: e.reason.slice(0, MAX_REASON) },
      );
    }
    return streams;
  }

  /** The peer's half: each stream sent again from the offset it expects next. Returns the payload bytes re-sent. */
  applyPeerResume(m: ResumeMessage): number {
    const told = new Map<number, StreamState>();
    for (const s of m.streams) told.set(s.id, s);
    let resent = 0;
    for (const [id, out] of this.outgoing) {
      const st = told.get(id);
      told.delete(id);
      if (!st) {
        if (out.announceSeq <= m.control) out.cancel('the receiver lost track of the stream across a reconnection');
        else resent += out.resendFrom(0); // its announcement is being sent again with the missed control messages
        continue;
      }
      if (st.state === 'cancelled') {
        out.cancel(st.reason ?? 'cancelled by the receiver');
        continue;
      }
      if (st.consumed > st.received || st.received > out.sent || st.consumed < out.ackedTotal) {
        const reason = `resume state of stream ${id} is inconsistent (received ${st.received}, consumed ${st.consumed}, sent ${out.sent}, acknowledged ${out.ackedTotal})`;
        out.cancel(reason);
        this.host.post({ type: 'cancel', stream: id, reason });
        continue;
      }
      if (st.consumed > out.ackedTotal) out.acked(st.consumed - out.ackedTotal); // acknowledgements lost with the old link
      if (st.state === 'open') resent += out.resendFrom(st.received);
    }
    // streams the receiver still waits on that this side no longer sends (their cancel was lost)
    for (const st of told.values()) {
      if (st.state === 'open') this.host.post({ type: 'cancel', stream: st.id, reason: 'the sender no longer has this stream' });
    }
    return resent;
  }

  /** A link is ready for data again: senders waiting for one go on. */
  wakeSenders(): void {
    for (const out of this.outgoing.values()) out.wake();
  }

  /** The channel closed: receivers fail, senders see it at once. */
  closeAll(reason: string): void {
    for (const s of this.incoming.values()) s.channelClosed(reason);
    this.incoming.clear();
    this.wakeSenders();
  }
}

/** The host's members, as a plain object whose methods keep their `this`. */
function bind(h: Omit<StreamHost, 'ended'>): Omit<StreamHost, 'ended'> {
  return {
    peer: h.peer,
    resumable: h.resumable,
    closedReason: () => h.closedReason(),
    attached: () => h.attached(),
    interrupted: () => h.interrupted(),
    send: (f) => h.send(f),
    post: (f) => h.post(f),
  };
}
