/**
 * Integrity of a payload stream: every piece carries the xxhash64 of the stream from its first
 * byte to the piece's end (a prefix hash), the last frame the digest of the whole stream. One
 * pass over the bytes on each side checks every piece and the whole stream.
 */
import { createXXHash64 } from 'hash-wasm';

/**
 * One xxhash64 instance for every stream of the process: each stream keeps its own state
 * (save/load, ~100 bytes) and uses the instance only between two awaits.
 */
const xxh = await createXXHash64();
xxh.init();
const EMPTY_STATE = xxh.save();

/** Running xxhash64 of a stream: update with each piece, read the digest of the prefix so far. */
export class PrefixHash {
  private state = EMPTY_STATE;
  /** the digest the stream would have after `bytes` more, without taking them */
  peek(bytes: Uint8Array): { state: Uint8Array; digest: string } {
    xxh.load(this.state);
    xxh.update(bytes);
    const state = xxh.save();
    return { state, digest: xxh.digest('hex') };
  }
  commit(state: Uint8Array): void {
    this.state = state;
  }
  /** hashes `bytes` into the stream and returns the digest of the prefix so far */
  update(bytes: Uint8Array): string {
    const { state, digest } = this.peek(bytes);
    this.state = state;
    return digest;
  }
  digest(): string {
    xxh.load(this.state);
    return xxh.digest('hex');
  }
}
