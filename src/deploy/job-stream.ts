/**
 * A job folder as a byte stream, for folders of any size in bounded memory: `admin submit`
 * sends it to the server in pieces (Admin.Upload) and the server deploys it to each site as a
 * session payload the same way. The stream is
 *
 *     "FLOTILLA-JOB-1\n"  u32 (big-endian) manifest length  manifest JSON {files: [{path, size}]}
 *     then each file in manifest order: its `size` bytes, then its xxhash64 (8 bytes)
 *
 * so the receiver knows the total and every path before the first file byte arrives: a folder
 * over the limit, with a bad path or one that would not fit on the disk is refused at once, naming
 * the limit, the path or the free space. Each file is written as it arrives (never held whole) and
 * its hash checked; the folder is installed atomically only once every file and the job config
 * are valid.
 */
import { createReadStream } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createXXHash64 } from 'hash-wasm';
import { z } from 'zod';
import type { JobConfig } from '../runtime/job-config.ts';
import { ensureDiskSpace } from '../util/disk-space.ts';
import { describeZodError } from '../util/zod-error.ts';
import { BUNDLE_LIMITS, BundleError, type JobFile, SafePath, fileFolderClash, installJob } from './job-bundle.ts';

const MAGIC = Buffer.from('FLOTILLA-JOB-1\n');
const MAX_MANIFEST_BYTES = 4 << 20;
const PIECE_BYTES = 1 << 20;
const HASH_BYTES = 8;

const Manifest = z.strictObject({
  files: z
    .array(z.strictObject({ path: SafePath, size: z.number().int().nonnegative() }))
    .min(1)
    .max(BUNDLE_LIMITS.maxFiles),
});

/** The stream of a listed job folder (listJobFiles), read from disk a piece at a time. */
export async function* encodeJobStream(files: JobFile[]): AsyncGenerator<Uint8Array> {
  const manifest = Buffer.from(JSON.stringify({ files: files.map(({ path, size }) => ({ path, size })) }));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(manifest.byteLength);
  yield Buffer.concat([MAGIC, len, manifest]);
  for (const f of files) {
    const hasher = await createXXHash64();
    hasher.init();
    let sent = 0;
    for await (const chunk of createReadStream(f.abs, { highWaterMark: PIECE_BYTES }) as AsyncIterable<Buffer>) {
      if (sent + chunk.byteLength > f.size)
        throw new BundleError(`${f.abs} grew while being sent (listed with ${f.size} bytes): submit again once it is written`);
      hasher.update(chunk);
      sent += chunk.byteLength;
      yield chunk;
    }
    if (sent !== f.size)
      throw new BundleError(`${f.abs} shrank while being sent (${sent} of ${f.size} bytes): submit again once it is written`);
    yield hasher.digest('binary');
  }
}

/** Pulls exact byte counts out of a stream of pieces without copying more than a piece at a time. */
class Reader {
  private buf: Buffer = Buffer.alloc(0);
  private readonly it: AsyncIterator<Uint8Array>;
  received = 0;

  constructor(src: AsyncIterable<Uint8Array>) {
    this.it = src[Symbol.asyncIterator]();
  }

  /** At least one more byte (false at the stream's end). */
  private async fill(): Promise<boolean> {
    for (;;) {
      const r = await this.it.next();
      if (r.done) return false;
      if (r.value.byteLength === 0) continue;
      this.received += r.value.byteLength;
      const v = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
      this.buf = this.buf.byteLength ? Buffer.concat([this.buf, v]) : v;
      return true;
    }
  }

  async exact(n: number, what: string): Promise<Buffer> {
    while (this.buf.byteLength < n) if (!(await this.fill())) throw new BundleError(`job stream ended inside ${what}`);
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Up to `max` bytes (at least one), as they arrive. */
  async some(max: number, what: string): Promise<Buffer> {
    if (this.buf.byteLength === 0 && !(await this.fill())) throw new BundleError(`job stream ended inside ${what}`);
    const out = this.buf.subarray(0, Math.min(max, this.buf.byteLength));
    this.buf = this.buf.subarray(out.byteLength);
    return out;
  }

  async atEnd(): Promise<boolean> {
    return this.buf.byteLength === 0 && !(await this.fill());
  }

  /** Stops the source (its `return`: a gRPC call or a payload is released). */
  async close(): Promise<void> {
    await this.it.return?.();
  }
}

export interface ReceiveJobOptions {
  /** largest folder accepted (the sum of its files), named in the refusal */
  maxBytes: number;
  /** what the limit is called, for the refusal (e.g. "the server's maxJobBytes") */
  limitName: string;
  /** bytes that must stay free on the disk after the folder is written (default: disk-space.ts) */
  minFreeBytes?: number;
}

/**
 * Receives a job stream into `dest` (atomically: a temp folder renamed into place) and returns
 * its job config. The manifest is checked before any file byte is read: size limit, file count,
 * paths, free disk space; then each file's bytes and hash. Throws a BundleError (or
 * DiskSpaceError, JobConfigError) naming what is wrong; the source is released either way.
 */
export async function receiveJobStream(src: AsyncIterable<Uint8Array>, dest: string, opts: ReceiveJobOptions): Promise<JobConfig> {
  const r = new Reader(src);
  const tmp = `${dest}.tmp-${process.pid}-${Date.now()}`;
  try {
    const magic = await r.exact(MAGIC.byteLength, 'its header');
    if (!magic.equals(MAGIC)) throw new BundleError('not a job stream (bad header): the sender speaks another protocol version');
    const len = (await r.exact(4, 'its header')).readUInt32BE(0);
    if (len > MAX_MANIFEST_BYTES) throw new BundleError(`job stream manifest of ${len} bytes is over ${MAX_MANIFEST_BYTES} bytes`);
    let raw: unknown;
    try {
      raw = JSON.parse((await r.exact(len, 'its manifest')).toString('utf8'));
    } catch (e) {
      if (e instanceof BundleError) throw e;
      throw new BundleError(`job stream manifest is not valid JSON: ${(e as Error).message}`);
    }
    const m = Manifest.safeParse(raw);
    if (!m.success) throw new BundleError(`malformed job stream manifest: ${describeZodError(m.error)}`);
    const files = m.data.files;
    const total = files.reduce((s, f) => s + f.size, 0);
    if (total > opts.maxBytes)
      throw new BundleError(
        `job folder of ${total} bytes exceeds the limit of ${opts.maxBytes} bytes (${opts.limitName}): keep data and large models out of the job folder`,
      );
    const seen = new Set<string>();
    for (const [i, f] of files.entries()) {
      if (seen.has(f.path)) throw new BundleError(`malformed job stream manifest: files.${i}.path: duplicate path ${f.path}`);
      seen.add(f.path);
    }
    const clash = fileFolderClash(files.map((f) => f.path));
    if (clash !== null) throw new BundleError(`malformed job stream manifest: ${clash} is both a file and a folder`);
    ensureDiskSpace(dirname(dest), total, `a job folder of ${total} bytes`, opts.minFreeBytes);
    await rm(tmp, { recursive: true, force: true });
    for (const f of files) {
      const p = join(tmp, f.path);
      await mkdir(dirname(p), { recursive: true });
      // 'wx': the stream can only create new regular files, never write through a link
      const fh = await open(p, 'wx');
      try {
        const hasher = await createXXHash64();
        hasher.init();
        for (let left = f.size; left > 0;) {
          const piece = await r.some(Math.min(left, PIECE_BYTES), f.path);
          hasher.update(piece);
          await fh.write(piece);
          left -= piece.byteLength;
        }
        const want = Buffer.from(hasher.digest('binary'));
        const got = await r.exact(HASH_BYTES, `${f.path}'s hash`);
        if (!want.equals(got))
          throw new BundleError(`${f.path} is corrupt: xxhash64 ${want.toString('hex')}, the sender's ${got.toString('hex')}`);
      } finally {
        await fh.close();
      }
    }
    if (!(await r.atEnd())) throw new BundleError('job stream has bytes after its last file');
    return installJob(tmp, dest);
  } finally {
    await r.close().catch(() => undefined);
    await rm(tmp, { recursive: true, force: true });
  }
}
