/**
 * The session's vocabulary: its states (the diagram in session.ts), the resume settings, and
 * what it hands up to the channel.
 */
import type { Frame, Link } from '../transport/link.ts';
import type { MalformedMessageError } from './errors.ts';
import type { Message, ResumeMessage, StreamHeader, StreamState } from './protocol.ts';

export interface ResumeConfig {
  timeoutMs: number;
  redial?: () => Link | Promise<Link>;
  minDelayMs: number;
  maxDelayMs: number;
  onLinkLost?: (reason: string) => void;
  onResumed?: (info: { resentBytes: number; seconds: number }) => void;
}

/** What the session hands up to the channel, and asks of it. */
export interface SessionEvents {
  onMessage(msg: Message, stream: StreamHeader | null): void;
  onMalformed(e: MalformedMessageError): void;
  onStreamFrame(f: Exclude<Frame, { type: 'control' }>): void;
  resumeReport(): StreamState[];
  /** the peer's resume: send again what it lacks; returns the payload bytes re-sent */
  onPeerResume(m: ResumeMessage): number;
  /** a link is ready for data (after a resume) */
  onAttached(): void;
  onClosed(reason: string): void;
}

/** A dropped link being waited out: since when, why, the resume deadline and the redial backoff. */
export interface Outage {
  since: number;
  reason: string;
  timer: NodeJS.Timeout;
  dialDelay: number;
  nextDialAt: number;
}

export type State =
  | { readonly kind: 'attached'; readonly link: Link }
  | { readonly kind: 'detached'; readonly link: Link; readonly outage: Outage; pending: Link | null; wake: (() => void) | null }
  | { readonly kind: 'resuming'; readonly link: Link; readonly outage: Outage }
  /** this side said goodbye (`peerReason` null) or the peer did: the link's end closes the channel */
  | { readonly kind: 'ending'; readonly link: Link; readonly peerReason: string | null }
  | { readonly kind: 'closed'; readonly link: Link; readonly reason: string };

export type SessionStateKind = State['kind'];

export const quietly = (p: Promise<void>): void => void p.catch(() => undefined);

export function safely(f: () => void): void {
  try {
    f();
  } catch {
    /* a listener's failure is not the channel's */
  }
}
