/**
 * Streamed download of a job's server results (Admin.Download): global models
 * of any size, metrics and logs. The server sends a manifest (every file and
 * its size, so the admin sees a total and an ETA), then each file as start,
 * 1 MiB data pieces read from disk under the call's backpressure, and an end
 * carrying the file's xxhash64. The admin writes each file to a temporary name
 * and renames it only once its size and hash match: an interrupted download
 * never leaves a truncated model under the real name. Memory is one piece on
 * each end, whatever the model size.
 */
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { createXXHash64 } from 'hash-wasm';
import { z } from 'zod';
import type { DownloadPieceWire } from '../transport/grpc/wire.ts';
import { describeZodError } from '../util/zod-error.ts';

const PIECE_BYTES = 1 << 20;
/** Most files one download lists: far above any job's results, low enough to refuse a runaway manifest. */
const MAX_FILES = 100_000;

export interface ResultFile {
  path: string;
  size: number;
}

/** Every file under `root`, sorted, with forward-slash relative paths. */
export async function listResults(root: string): Promise<ResultFile[]> {
  const out: ResultFile[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const e of (await readdir(join(root, rel), { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(r);
      else if (e.isFile()) out.push({ path: r, size: (await stat(join(root, r))).size });
    }
  };
  await walk('');
  return out;
}

/** Server side: streams the files under `root`; `write` resolves when the call can take more. */
export async function sendResults(root: string, write: (p: DownloadPieceWire) => Promise<void>): Promise<ResultFile[]> {
  const files = await listResults(root);
  await write({ manifest: { files } });
  for (const f of files) {
    await write({ start: f });
    const hasher = await createXXHash64();
    hasher.init();
    let sent = 0;
    for await (const chunk of createReadStream(join(root, f.path), { highWaterMark: PIECE_BYTES }) as AsyncIterable<Buffer>) {
      // a file that grows while being sent would break the manifest's promise: send what was listed
      const piece = sent + chunk.byteLength > f.size ? chunk.subarray(0, f.size - sent) : chunk;
      hasher.update(piece);
      sent += piece.byteLength;
      if (piece.byteLength > 0) await write({ data: piece });
      if (sent === f.size) break;
    }
    if (sent !== f.size) throw new Error(`${f.path} shrank while being sent (${sent} of ${f.size} bytes)`);
    await write({ end: { xxhash64: hasher.digest('hex') } });
  }
  return files;
}

const Entry = z.strictObject({ path: z.string().min(1).max(4096), size: z.number().int().nonnegative() });
const Manifest = z.strictObject({ files: z.array(Entry).max(MAX_FILES) });

export class DownloadError extends Error {
  override readonly name = 'DownloadError';
}

/** A relative path that stays inside the destination folder. */
function safePath(dest: string, rel: string): string {
  if (rel.startsWith('/') || rel.includes('\\') || rel.split('/').some((s) => s === '' || s === '.' || s === '..')) {
    throw new DownloadError(`server sent an unsafe path "${rel}"`);
  }
  const full = resolve(dest, rel);
  if (!full.startsWith(resolve(dest) + sep)) throw new DownloadError(`server sent a path outside the download folder: "${rel}"`);
  return full;
}

export interface DownloadProgress {
  bytes: number;
  total: number;
  file: string;
}

/**
 * Admin side: writes the streamed files under `dest`, checking order, sizes and hashes
 * (every piece is validated: the server is trusted for content, not for well-formedness).
 */
export async function receiveResults(
  pieces: AsyncIterable<DownloadPieceWire>,
  dest: string,
  onProgress?: (p: DownloadProgress) => void,
): Promise<ResultFile[]> {
  let manifest: ResultFile[] | null = null;
  let total = 0;
  let done = 0;
  let next = 0;
  let open_: {
    entry: ResultFile;
    full: string;
    tmp: string;
    fh: Awaited<ReturnType<typeof open>>;
    written: number;
    hasher: Awaited<ReturnType<typeof createXXHash64>>;
  } | null = null;
  try {
    for await (const p of pieces) {
      switch (p.kind) {
        case 'manifest': {
          if (manifest) throw new DownloadError('a second manifest in one download');
          const m = Manifest.safeParse({ files: p.manifest?.files ?? [] });
          if (!m.success) throw new DownloadError(`malformed manifest: ${describeZodError(m.error)}`);
          manifest = m.data.files;
          for (const f of manifest) safePath(dest, f.path);
          total = manifest.reduce((s, f) => s + f.size, 0);
          onProgress?.({ bytes: 0, total, file: '' });
          break;
        }
        case 'start': {
          if (!manifest) throw new DownloadError('a file before the manifest');
          if (open_) throw new DownloadError(`file "${p.start?.path}" started before "${open_.entry.path}" ended`);
          const want = manifest[next];
          if (!want || p.start?.path !== want.path || p.start?.size !== want.size)
            throw new DownloadError(`file "${p.start?.path}" is not the next one the manifest listed ("${want?.path ?? 'none'}")`);
          const full = safePath(dest, want.path);
          await mkdir(dirname(full), { recursive: true });
          const tmp = `${full}.part`;
          const hasher = await createXXHash64();
          hasher.init();
          open_ = { entry: want, full, tmp, fh: await open(tmp, 'w'), written: 0, hasher };
          break;
        }
        case 'data': {
          if (!open_ || !(p.data instanceof Uint8Array)) throw new DownloadError('data outside a file');
          if (open_.written + p.data.byteLength > open_.entry.size)
            throw new DownloadError(`"${open_.entry.path}" is longer than the ${open_.entry.size} bytes announced`);
          await open_.fh.write(p.data);
          open_.hasher.update(p.data);
          open_.written += p.data.byteLength;
          done += p.data.byteLength;
          onProgress?.({ bytes: done, total, file: open_.entry.path });
          break;
        }
        case 'end': {
          if (!open_) throw new DownloadError('a file end without a file');
          const o = open_;
          if (o.written !== o.entry.size) throw new DownloadError(`"${o.entry.path}" ended after ${o.written} of ${o.entry.size} bytes`);
          const digest = o.hasher.digest('hex');
          if (digest !== p.end?.xxhash64)
            throw new DownloadError(`"${o.entry.path}" is corrupt: xxhash64 ${digest}, the server sent ${p.end?.xxhash64}`);
          await o.fh.sync();
          await o.fh.close();
          await rename(o.tmp, o.full);
          open_ = null;
          next++;
          break;
        }
        default:
          throw new DownloadError('a download piece with no kind set');
      }
    }
    if (!manifest) throw new DownloadError('the server ended the download without a manifest');
    if (open_ || next !== manifest.length) throw new DownloadError(`download ended early: ${next} of ${manifest.length} files complete`);
    return manifest;
  } catch (e) {
    if (open_) {
      await open_.fh.close().catch(() => undefined);
      await rm(open_.tmp, { force: true });
    }
    throw e;
  }
}
