/**
 * The life of a channel's link, as one state machine (docs/channel-protocol.md, "Session"):
 *
 *   attached ──link drops (resumable)──▶ detached ──new link (attach / redial)──▶ resuming
 *      ▲                                    ▲  │                                    │
 *      └──────────── peer's resume ─────────┼──┼────────────────────────────────────┘
 *                                           └──┴─ link drops while resuming
 *   attached/resuming ──close() or the peer's goodbye──▶ ending ──link ends──▶ closed
 *   any ──resume timeout, protocol violation, link drop (not resumable)──▶ closed
 *
 * It also numbers application control messages (a resumable channel keeps each until the peer
 * confirms it, and sends the unconfirmed ones again after a resume) and runs the handshake.
 */
import type { Frame, Link } from '../transport/link.ts';
import { ChannelClosedError, MalformedMessageError } from './errors.ts';
import { ControlLog } from './control-log.ts';
import { type ChannelMessage, MAX_REASON, type ResumeMessage, decodeEnvelope, encodeChannel } from './protocol.ts';
import { type Outage, type ResumeConfig, type SessionEvents, type SessionStateKind, type State, quietly, safely } from './session-state.ts';

export type { ResumeConfig, SessionEvents, SessionStateKind } from './session-state.ts';

export class Session {
  private state: State;
  /** when the last resume completed (performance.now()), to restart stall timers */
  private lastResumeAt = -Infinity;
  private readonly control: ControlLog;
  private cackScheduled = false;
  readonly stats = { resumes: 0, resentBytes: 0 };

  constructor(
    link: Link,
    private readonly resume: ResumeConfig | null,
    private readonly maxControlBytes: number,
    private readonly stallTimeoutMs: number,
    private readonly events: SessionEvents,
  ) {
    this.control = new ControlLog(maxControlBytes * 4);
    this.state = { kind: 'attached', link };
    void this.pump();
  }

  get kind(): SessionStateKind {
    return this.state.kind;
  }
  get link(): Link {
    return this.state.link;
  }
  get peer(): string {
    return this.state.link.peer;
  }
  get closedReason(): string | null {
    return this.state.kind === 'closed' ? this.state.reason : null;
  }
  get resumable(): boolean {
    return this.resume !== null;
  }
  /** whether stall timers should keep waiting: between links, or within a stall timeout of a resume */
  interrupted(): boolean {
    return this.state.kind === 'detached' || this.state.kind === 'resuming' || performance.now() - this.lastResumeAt < this.stallTimeoutMs;
  }

  /** Sends a frame over the current link (rejects when there is none, or it fails). */
  send(f: Frame): Promise<void> {
    return this.state.link.send(f);
  }
  post(f: Frame): void {
    quietly(this.send(f));
  }

  /**
   * Sends an application control message; returns its sequence number (resumable channels) and
   * when the link took it. A resumable channel keeps it until the peer confirms it, and only
   * queues it while between links: the resume sends it, in order.
   */
  sendControl(json: string): [number, Promise<void>] {
    if (this.state.kind === 'closed') throw new ChannelClosedError(this.peer, this.state.reason);
    const frame: Frame = { type: 'control', json };
    if (!this.resume) return [0, this.send(frame)];
    const seq = this.control.record(json);
    if (this.state.kind !== 'attached') return [seq, Promise.resolve()];
    return [seq, this.send(frame).catch(() => undefined)];
  }

  private sendChannel(m: ChannelMessage): void {
    this.post({ type: 'control', json: encodeChannel(m) });
  }

  /** Hands a resumable channel a new link to the same peer; the one in use, if any, makes way. */
  attach(link: Link): void {
    const s = this.state;
    if (!this.resume) throw new Error(`channel to ${this.peer} is not resumable`);
    if (s.kind === 'closed') {
      link.close(`channel closed: ${s.reason}`);
      throw new ChannelClosedError(this.peer, s.reason);
    }
    if (link.peer !== this.peer) throw new Error(`cannot attach a link to ${link.peer} to the channel to ${this.peer}`);
    switch (s.kind) {
      case 'ending':
        link.close('channel closing');
        return;
      case 'detached': {
        const older = s.pending;
        s.pending = link;
        older?.close('replaced by a newer link');
        s.wake?.();
        return;
      }
      case 'attached':
      case 'resuming':
        this.state = {
          kind: 'detached',
          link: s.link,
          outage: s.kind === 'resuming' ? s.outage : this.outage('replaced by a new link'),
          pending: link,
          wake: null,
        };
        s.link.close('replaced by a new link');
    }
  }

  close(reason: string): void {
    const s = this.state;
    if (s.kind === 'closed' || s.kind === 'ending') {
      s.link.close(reason);
      return;
    }
    if (this.resume && s.kind !== 'attached') {
      this.shutdown(reason);
      s.link.close(reason);
      return;
    }
    // tell the peer this is the end, not a dropped connection to wait out
    if (this.resume) this.sendChannel({ type: 'close', reason: reason.slice(0, MAX_REASON) });
    this.state = { kind: 'ending', link: s.link, peerReason: null };
    s.link.close(reason);
  }

  /** A protocol violation by the peer ends the channel (never the process). */
  private fail(reason: string): void {
    const link = this.state.link;
    this.shutdown(reason);
    link.close(reason);
  }

  private shutdown(reason: string): void {
    const s = this.state;
    if (s.kind === 'closed') return;
    if (s.kind === 'detached' || s.kind === 'resuming') clearTimeout(s.outage.timer);
    this.state = { kind: 'closed', link: s.link, reason };
    if (s.kind === 'detached') {
      s.pending?.close(reason);
      s.wake?.();
    }
    this.events.onClosed(reason);
  }

  /** Whether frames from `link` count: only the current link's, while it is up. */
  private live(link: Link): boolean {
    const s = this.state;
    return s.link === link && (s.kind === 'attached' || s.kind === 'resuming' || s.kind === 'ending');
  }

  private async pump(): Promise<void> {
    let link: Link | null = this.state.link;
    while (link) {
      let reason: string;
      try {
        for await (const f of link.frames()) if (this.live(link)) this.onFrame(f);
        reason = await Promise.race([link.closed, Promise.resolve('link ended')]);
      } catch (e) {
        reason = (e as Error).message;
      }
      link = await this.afterLinkEnded(link, reason);
    }
  }

  /** The state's answer to a link ending: close, or wait for the next link and start resuming over it. */
  private async afterLinkEnded(link: Link, reason: string): Promise<Link | null> {
    const s = this.state;
    switch (s.kind) {
      case 'closed':
        return null;
      case 'ending':
        this.shutdown(s.peerReason ?? reason);
        return null;
      case 'attached':
      case 'resuming':
        if (!this.resume) {
          this.shutdown(reason);
          return null;
        }
        this.state = { kind: 'detached', link, outage: s.kind === 'resuming' ? s.outage : this.outage(reason), pending: null, wake: null };
        break;
      case 'detached':
        break;
    }
    const next = await this.nextLink();
    if (!next) return null;
    this.beginResume(next);
    return next;
  }

  /** A new outage: the resume deadline starts, the listener hears of it. */
  private outage(reason: string): Outage {
    const r = this.resume!;
    const timer = setTimeout(() => {
      const s = this.state;
      if (s.kind !== 'detached' && s.kind !== 'resuming') return;
      this.shutdown(`link to ${this.peer} lost (${reason}) and no new link within ${r.timeoutMs} ms`);
      s.link.close('resume timed out');
    }, r.timeoutMs);
    safely(() => r.onLinkLost?.(reason));
    return { since: performance.now(), reason, timer, dialDelay: r.minDelayMs, nextDialAt: 0 };
  }

  /** Waits for a new link (attach() or redial); null if the channel closed meanwhile. */
  private async nextLink(): Promise<Link | null> {
    const r = this.resume!;
    for (;;) {
      const s = this.state;
      if (s.kind !== 'detached') return null;
      const waiting = s;
      if (s.pending) {
        const l = s.pending;
        s.pending = null;
        return l;
      }
      const o = s.outage;
      const now = performance.now();
      if (r.redial && now >= o.nextDialAt) {
        o.nextDialAt = now + o.dialDelay;
        o.dialDelay = Math.min(o.dialDelay * 2, r.maxDelayMs);
        try {
          const l = await r.redial();
          const after = this.state;
          if (after.kind !== 'detached') {
            l.close(`channel closed: ${this.closedReason ?? after.kind}`);
            return null;
          }
          if (l.peer !== this.peer) l.close('wrong peer');
          else if (!after.pending) return l;
          else l.close('replaced by a newer link');
        } catch {
          /* could not dial: try again after the backoff */
        }
        continue;
      }
      await new Promise<void>((resolve) => {
        const t = r.redial ? setTimeout(done, Math.max(0, o.nextDialAt - performance.now())) : null;
        function done(): void {
          if (t) clearTimeout(t);
          waiting.wake = null;
          resolve();
        }
        waiting.wake = done;
      });
    }
  }

  /** Starts over a new link: tells the peer what this side has of each stream, then waits for the peer's word. */
  private beginResume(link: Link): void {
    const s = this.state;
    if (s.kind !== 'detached') return;
    this.state = { kind: 'resuming', link, outage: s.outage };
    quietly(
      link.send({
        type: 'control',
        json: encodeChannel({ type: 'resume', control: this.control.received, streams: this.events.resumeReport() }),
      }),
    );
  }

  /** The peer's half of the handshake: resend what it lacks, then carry on. */
  private onPeerResume(m: ResumeMessage, outage: Outage): void {
    // 1. control messages it missed, in order (stream announcements among them come before their data)
    const missed = this.control.missedBy(m.control);
    if (missed === null) {
      this.fail(`cannot resume the channel to ${this.peer}: it missed control messages this side no longer keeps`);
      return;
    }
    for (const json of missed) this.post({ type: 'control', json });
    // 2. each payload stream from the offset it expects next
    const resent = this.events.onPeerResume(m);
    clearTimeout(outage.timer);
    this.stats.resumes++;
    this.stats.resentBytes += resent;
    this.state = { kind: 'attached', link: this.state.link };
    this.lastResumeAt = performance.now();
    this.events.onAttached();
    const seconds = (performance.now() - outage.since) / 1000;
    safely(() => this.resume!.onResumed?.({ resentBytes: resent, seconds }));
  }

  /** Confirms received control messages to the peer, at most once per turn of the event loop. */
  private scheduleCack(): void {
    if (this.cackScheduled) return;
    this.cackScheduled = true;
    setImmediate(() => {
      this.cackScheduled = false;
      if (this.state.kind === 'attached') this.sendChannel({ type: 'cack', control: this.control.received });
    });
  }

  private onChannelMessage(m: ChannelMessage): void {
    const s = this.state;
    switch (m.type) {
      case 'close':
        if (s.kind === 'attached' || s.kind === 'resuming') {
          if (s.kind === 'resuming') clearTimeout(s.outage.timer);
          this.state = { kind: 'ending', link: s.link, peerReason: m.reason };
        }
        return;
      case 'cack':
        this.control.confirm(m.control);
        return;
      case 'resume':
        if (!this.resume || s.kind !== 'resuming') {
          // the peer reconnected to a channel this side does not have (expired, or never resumable)
          const reason = 'cannot resume: no such channel on this side';
          this.sendChannel({ type: 'close', reason });
          this.fail(reason);
          return;
        }
        this.onPeerResume(m, s.outage);
    }
  }

  private onFrame(f: Frame): void {
    if (f.type !== 'control') {
      this.events.onStreamFrame(f);
      return;
    }
    if (f.json.length > this.maxControlBytes) {
      this.fail(`control message of ${f.json.length} bytes exceeds ${this.maxControlBytes}`);
      return;
    }
    const d = decodeEnvelope(f.json);
    if (d.kind === 'channel') return this.onChannelMessage(d.message);
    if (d.kind === 'violation') return this.fail(`malformed channel message from ${this.peer}: ${d.detail}`);
    if (this.resume) {
      this.control.received++;
      this.scheduleCack();
    }
    // a malformed message is dropped and reported, never fatal for the receiver
    if (d.kind === 'malformed') this.events.onMalformed(new MalformedMessageError(this.peer, d.detail, f.json.slice(0, 200)));
    else this.events.onMessage(d.msg, d.stream);
  }
}
