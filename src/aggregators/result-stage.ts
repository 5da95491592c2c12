/**
 * Where a result waits until its stream has ended: a failed result must count for nothing, so the
 * aggregators fold a result only once all of it has arrived (docs/reliability.md). Pieces are kept
 * in memory while the aggregator's shared memory budget lasts, and appended to a scratch file of
 * this result after that, so memory stays bounded (the budget) whatever the model size or the
 * number of results in flight; disk is what did not fit, at most one model per result in flight.
 *
 * The stage keeps runs (one tensor's contiguous bytes, in memory or in the file) in arrival order
 * and replays them in that order, in element-aligned pieces of at most `REPLAY_BYTES`.
 */
import { randomBytes } from 'node:crypto';
import { type FileHandle, mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';

/** bytes read back from the file per piece (a multiple of every element size) */
const REPLAY_BYTES = 4 << 20;

/** The bytes of memory an aggregator's stages may hold together; the rest goes to disk. */
export class StageBudget {
  constructor(public left: number) {}
}

interface Run {
  index: number;
  /** byte offset of the run's first byte in its tensor */
  offset: number;
  length: number;
  /** in memory: the copied pieces; on disk: null (the run is at `filePos` in the file) */
  mem: Uint8Array[] | null;
  filePos: number;
}

export interface StagedPiece {
  index: number;
  /** byte offset in the tensor */
  offset: number;
  bytes: Uint8Array;
}

export class ResultStage {
  private readonly runs: Run[] = [];
  private held = 0;
  private file: { fh: FileHandle; path: string; size: number } | null = null;
  private closed = false;

  /** `dir()`: the folder for this result's scratch file, asked for only when the budget runs out. */
  constructor(
    private readonly budget: StageBudget,
    private readonly dir: () => Promise<string>,
  ) {}

  /** bytes kept in memory / on disk (for tests and figures) */
  get inMemory(): number {
    return this.held;
  }
  get onDisk(): number {
    return this.file?.size ?? 0;
  }

  /** Keeps a copy of `bytes`, tensor `index`'s bytes from byte `offset` (pieces arrive in order). */
  async put(index: number, offset: number, bytes: Uint8Array): Promise<void> {
    if (this.closed) throw new Error('put() on a closed result stage');
    const n = bytes.byteLength;
    if (n === 0) return;
    const last = this.runs.at(-1);
    const follows = last !== undefined && last.index === index && last.offset + last.length === offset;
    if (this.file === null && this.budget.left >= n) {
      this.budget.left -= n;
      this.held += n;
      const copy = bytes.slice();
      if (follows && last.mem) {
        last.mem.push(copy);
        last.length += n;
      } else this.runs.push({ index, offset, length: n, mem: [copy], filePos: 0 });
      return;
    }
    if (this.file === null) {
      const dir = await this.dir();
      await mkdir(dir, { recursive: true });
      const path = join(dir, `result-${randomBytes(6).toString('hex')}.stage`);
      this.file = { fh: await open(path, 'w+'), path, size: 0 };
    }
    const f = this.file;
    let put = 0;
    while (put < n) put += (await f.fh.write(bytes, put, n - put, f.size + put)).bytesWritten;
    if (follows && last.mem === null) last.length += n;
    else this.runs.push({ index, offset, length: n, mem: null, filePos: f.size });
    f.size += n;
  }

  /** The staged bytes in arrival order. */
  async *replay(): AsyncGenerator<StagedPiece> {
    for (const r of this.runs) {
      if (r.mem) {
        let off = r.offset;
        for (const bytes of r.mem) {
          yield { index: r.index, offset: off, bytes };
          off += bytes.byteLength;
        }
        continue;
      }
      const f = this.file!;
      for (let done = 0; done < r.length;) {
        const m = Math.min(REPLAY_BYTES, r.length - done);
        const buf = new Uint8Array(m);
        let got = 0;
        while (got < m) {
          const { bytesRead } = await f.fh.read(buf, got, m - got, r.filePos + done + got);
          if (bytesRead === 0) throw new Error('result stage file ended early');
          got += bytesRead;
        }
        yield { index: r.index, offset: r.offset + done, bytes: buf };
        done += m;
      }
    }
  }

  /** Drops what is staged: memory back to the budget, the file removed. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.budget.left += this.held;
    this.held = 0;
    this.runs.length = 0;
    const f = this.file;
    this.file = null;
    if (f) {
      await f.fh.close().catch(() => undefined);
      await rm(f.path, { force: true });
    }
  }
}
