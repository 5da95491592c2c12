/**
 * Control messages and payload streams over one link: the facade over the session (the link's
 * life, resume) and the stream table (flow control, integrity). The protocol is specified in
 * docs/channel-protocol.md.
 *
 * A payload is a byte stream cut into chunks of at most `chunkBytes`; the sender never has more
 * than `windowBytes` unacknowledged bytes in flight, and the receiver acknowledges bytes as its
 * consumer takes them, so a slow consumer slows the sender instead of growing a queue. Timeouts
 * are progress-based: a transfer that keeps moving never times out, a stalled one fails after
 * `stallTimeoutMs` (StallError). Every piece is checked against its prefix hash as it arrives;
 * a stream whose digest does not match fails (CorruptStreamError).
 */
import type { Link } from '../transport/link.ts';
import { AsyncQueue } from '../util/async-queue.ts';
import { ChannelClosedError, type MalformedMessageError } from './errors.ts';
import type { Payload } from './incoming.ts';
import type { TransferProgress } from './progress.ts';
import { CHANNEL_DEFAULTS, type Message, RESUME_DEFAULTS, encodeApp } from './protocol.ts';
import { type ResumeConfig, Session } from './session.ts';
import { StreamTable } from './streams.ts';

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
  /**
   * how long this side, holding bytes of a stream its consumer has not taken, tells the sender it is
   * alive (default 1 h): a busy consumer (a task queued behind a long one) does not fail the
   * sender's transfer as a stall; a payload nobody reads fails it this long after its last progress
   */
  holdTimeoutMs?: number;
  /** largest control message accepted, in bytes of JSON */
  maxControlBytes?: number;
  /**
   * largest window a sender may announce for a stream to this side (default 1 GiB): a receiver
   * holds at most that much (plus one chunk) of a stream its consumer has not taken
   */
  maxWindowBytes?: number;
  /** progress of each payload transfer, at most every 250 ms and once when it ends (for bars and logs) */
  onTransfer?: (t: TransferProgress) => void;
  /** a control frame from the peer that is not a message (dropped; the channel carries on) */
  onMalformed?: (e: MalformedMessageError) => void;
  /**
   * survive a dropped link: keep the channel's streams open and continue them over a new link
   * (both ends must enable it). Off by default: a dropped link then fails the channel at once.
   */
  resume?: boolean | ResumeOptions;
}

export interface Envelope {
  /** the control message, parsed JSON (validate it with a schema before use) */
  readonly msg: Message;
  readonly payload: Payload | null;
}

export class Channel {
  private readonly opts: {
    chunkBytes: number;
    windowBytes: number;
    stallTimeoutMs: number;
    holdTimeoutMs: number;
    maxControlBytes: number;
    maxWindowBytes: number;
  };
  private readonly inbox = new AsyncQueue<Envelope>();
  private readonly session: Session;
  private readonly streams: StreamTable;
  private readonly onTransfer: ((t: TransferProgress) => void) | undefined;

  constructor(link: Link, opts: ChannelOptions = {}) {
    const { resume, onTransfer, onMalformed, ...rest } = opts;
    this.opts = { ...CHANNEL_DEFAULTS, ...rest };
    this.onTransfer = onTransfer;
    const r: ResumeOptions | null = resume === true ? {} : resume || null;
    const config: ResumeConfig | null = r && { ...RESUME_DEFAULTS, ...r, timeoutMs: r.timeoutMs ?? this.opts.stallTimeoutMs };
    const host = {
      peer: link.peer,
      resumable: config !== null,
      closedReason: () => this.session.closedReason,
      attached: () => this.session.kind === 'attached',
      interrupted: () => this.session.interrupted(),
      send: (f: Parameters<Session['send']>[0]) => this.session.send(f),
      post: (f: Parameters<Session['send']>[0]) => this.session.post(f),
    };
    this.streams = new StreamTable(host, { ...this.opts, ...(onTransfer && { onTransfer }) });
    this.session = new Session(link, config, this.opts.maxControlBytes, this.opts.stallTimeoutMs, {
      onMessage: (msg, stream) => this.inbox.push({ msg, payload: stream ? this.streams.openIncoming(stream) : null }),
      onMalformed: (e) => onMalformed?.(e),
      onStreamFrame: (f) => this.streams.onFrame(f),
      resumeReport: () => this.streams.resumeReport(),
      onPeerResume: (m) => this.streams.applyPeerResume(m),
      onAttached: () => this.streams.wakeSenders(),
      onClosed: (reason) => {
        this.streams.closeAll(reason);
        this.inbox.end();
      },
    });
  }

  /** The link the channel runs over now (a resumable channel's link changes after a reconnection). */
  get link(): Link {
    return this.session.link;
  }

  get peer(): string {
    return this.session.peer;
  }

  get isClosed(): boolean {
    return this.session.closedReason !== null;
  }

  /** Why the channel closed, once it has. */
  get closeReason(): string | null {
    return this.session.closedReason;
  }

  /** Whether the channel is between links (resumable channels only). */
  get isDetached(): boolean {
    return this.session.kind === 'detached' || this.session.kind === 'resuming';
  }

  /** Resumes completed and payload bytes sent again because of them. */
  get stats(): { readonly resumes: number; readonly resentBytes: number } {
    return this.session.stats;
  }

  /**
   * Sends a control message, then its payload (if any) under flow control. Resolves when the
   * receiver has consumed every payload byte. `totalBytes`, when known, travels with the
   * announcement so both ends can report progress against it (an ETA); it is not enforced.
   */
  async send(msg: Message, payload?: AsyncIterable<Uint8Array>, opts: { totalBytes?: number } = {}): Promise<void> {
    const closed = this.session.closedReason;
    if (closed !== null) throw new ChannelClosedError(this.peer, closed);
    if (!payload) {
      await this.session.sendControl(encodeApp(msg))[1];
      return;
    }
    const out = this.streams.openOutgoing();
    const total = opts.totalBytes;
    try {
      const [seq, announced] = this.session.sendControl(
        encodeApp(msg, { id: out.id, window: this.opts.windowBytes, ...(total !== undefined && { bytes: total }) }),
      );
      out.announceSeq = seq;
      await announced;
      await out.run(payload, {
        chunkBytes: this.opts.chunkBytes,
        windowBytes: this.opts.windowBytes,
        stallTimeoutMs: this.opts.stallTimeoutMs,
        report: this.onTransfer,
        total,
      });
    } finally {
      this.streams.closeOutgoing(out);
    }
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
    this.session.attach(link);
  }

  close(reason = 'closed'): void {
    this.session.close(reason);
  }
}
