/**
 * Sequence numbers of a resumable channel's application control messages: each side counts what
 * it sent and received, keeps what it sent until the peer confirms it (a `cack`), and after a
 * resume sends again what the peer says it missed, in order.
 */
import { MAX_UNCONFIRMED } from './protocol.ts';

export class ControlLog {
  /** application control messages sent / received (the channel's own are not counted) */
  private sent = 0;
  received = 0;
  /** control messages the peer has not confirmed, for resending after a resume */
  private readonly unconfirmed: { seq: number; json: string }[] = [];
  private unconfirmedChars = 0;
  /** control messages up to this number were dropped unconfirmed (over the cap): a resume that needs them fails */
  private forgottenUpTo = 0;

  /** `maxChars`: at most this much unconfirmed text is kept (a peer that never confirms must not make it grow without bound) */
  constructor(private readonly maxChars: number) {}

  /** Numbers a message on its way out and keeps it until confirmed; returns its sequence number. */
  record(json: string): number {
    const seq = ++this.sent;
    this.unconfirmed.push({ seq, json });
    this.unconfirmedChars += json.length;
    while (this.unconfirmed.length > 1 && (this.unconfirmed.length > MAX_UNCONFIRMED || this.unconfirmedChars > this.maxChars)) {
      const dropped = this.unconfirmed.shift()!;
      this.unconfirmedChars -= dropped.json.length;
      this.forgottenUpTo = dropped.seq;
    }
    return seq;
  }

  /** The peer has every message up to `n`. */
  confirm(n: number): void {
    while (this.unconfirmed.length > 0 && this.unconfirmed[0]!.seq <= n) this.unconfirmedChars -= this.unconfirmed.shift()!.json.length;
  }

  /** What a peer that has messages up to `n` lacks, oldest first; null if some of it is no longer kept. */
  missedBy(n: number): string[] | null {
    if (n < this.forgottenUpTo) return null;
    this.confirm(n);
    return this.unconfirmed.map((c) => c.json);
  }
}
