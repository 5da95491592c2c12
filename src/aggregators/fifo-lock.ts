/**
 * A first-come-first-served mutex. OffloadedAverage folds concurrent results
 * one tensor at a time under it, so results take turns tensor by tensor instead
 * of result by result: no sender waits for a whole model to be folded before
 * its next piece is read (a long wait would trip its stall timeout).
 */
export class FifoLock {
  private tail: Promise<void> = Promise.resolve();

  /** Resolves with a release function once every earlier holder has released. */
  acquire(): Promise<() => void> {
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const before = this.tail;
    this.tail = before.then(() => mine);
    let released = false;
    return before.then(() => () => {
      if (!released) {
        released = true;
        release();
      }
    });
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire();
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
