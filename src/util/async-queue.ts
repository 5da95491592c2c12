/** A single-consumer async queue with an end marker and an optional error. */
export class AsyncQueue<T> {
  private readonly items: T[] = [];
  private waiter: (() => void) | null = null;
  private ended = false;
  private error: Error | null = null;
  private iterated = false;

  push(x: T): void {
    if (this.ended) return;
    this.items.push(x);
    this.wake();
  }

  /** Ends the queue; with an error, the consumer throws it after the queued items. */
  end(error?: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.error = error ?? null;
    this.wake();
  }

  get isEnded(): boolean {
    return this.ended;
  }

  get size(): number {
    return this.items.length;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** Next item, or undefined at the end. */
  async next(): Promise<T | undefined> {
    for (;;) {
      if (this.items.length > 0) return this.items.shift();
      if (this.ended) {
        if (this.error) throw this.error;
        return undefined;
      }
      await new Promise<void>((r) => (this.waiter = r));
    }
  }

  async *drain(): AsyncGenerator<T> {
    if (this.iterated) throw new Error('this queue can be iterated only once');
    this.iterated = true;
    for (;;) {
      const x = await this.next();
      if (x === undefined) return;
      yield x;
    }
  }
}
