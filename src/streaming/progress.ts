/** Progress of payload transfers, for bars and logs. */
import { PROGRESS_INTERVAL_MS } from './protocol.ts';

export interface TransferProgress {
  peer: string;
  stream: number;
  direction: 'send' | 'receive';
  /** payload bytes moved so far */
  bytes: number;
  /** the payload's size, when the sender announced it (send(..., { totalBytes })) */
  total?: number;
  seconds: number;
  done: boolean;
}

/** Seconds left at the transfer's average rate so far, or undefined without a known total. */
export function etaSeconds(t: Pick<TransferProgress, 'bytes' | 'total' | 'seconds'>): number | undefined {
  if (t.total === undefined || t.bytes <= 0) return undefined;
  return Math.max(0, ((t.total - t.bytes) * t.seconds) / t.bytes);
}

/** Reports a transfer's progress without flooding: every PROGRESS_INTERVAL_MS, and at the end. */
export class ProgressMeter {
  private readonly started = performance.now();
  private last = 0;
  bytes = 0;
  constructor(
    private readonly report: ((t: TransferProgress) => void) | undefined,
    private readonly peer: string,
    private readonly stream: number,
    private readonly direction: 'send' | 'receive',
    private readonly total?: number,
  ) {}
  add(n: number): void {
    this.bytes += n;
    if (!this.report) return;
    const now = performance.now();
    if (now - this.last >= PROGRESS_INTERVAL_MS) {
      this.last = now;
      this.emit(false);
    }
  }
  end(): void {
    this.emit(true);
  }
  private emit(done: boolean): void {
    this.report?.({
      peer: this.peer,
      stream: this.stream,
      direction: this.direction,
      bytes: this.bytes,
      ...(this.total !== undefined && { total: this.total }),
      seconds: (performance.now() - this.started) / 1000,
      done,
    });
  }
}
