/**
 * The baseline of bench/streaming: a plain Node `tls` socket between two
 * processes, mutual TLS with the same certificates, moving the same number of
 * bytes server → client → server, generated and hashed exactly as the
 * Flotilla runs do (so the difference is the gRPC + channel machinery).
 *
 *   seq    the client receives everything, then sends the same amount back
 *   relay  the client writes every chunk back as it arrives (what container mode does)
 *   file   file mode's baseline: the server streams `--file` from disk (fs.createReadStream),
 *          the client writes what arrives to a file, fsyncs it, then streams that file back
 *          to a file on the server; both writers flush in the background every 64 MiB and
 *          fsync at the end, exactly the disk work Flotilla's file mode does
 *
 * Prints `PORT <n>` (server) and `RESULT <json>`.
 */
import { closeSync, createReadStream, fdatasync, openSync, readFileSync, rmSync, write as fsWrite } from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { Tap, flags, now, num, processFacts } from './common.ts';
import { ModelBytes } from './model.ts';

const f = flags(process.argv.slice(2), {
  role: 'server',
  mode: 'seq',
  bytes: String(1e9),
  seed: '1',
  certs: '',
  port: '0',
  'chunk-mib': '1',
  dir: '',
  file: '',
});
if (!['seq', 'relay', 'file'].includes(f.mode)) throw new Error(`--mode must be seq, relay or file, got "${f.mode}"`);
if (f.mode === 'file' && (!f.file || !f.dir)) throw new Error('--mode file needs --file and --dir');
const total = num(f.bytes, '--bytes');
const chunk = Math.round(num(f['chunk-mib'], '--chunk-mib') * (1 << 20));
const pem = (name: string): string => readFileSync(join(f.certs, name), 'utf8');

/** Writes `total` bytes (generated, or read from `path` in file mode) in fresh chunks, honouring backpressure. */
async function pour(sock: tls.TLSSocket, tap: Tap, path?: string): Promise<void> {
  if (path) {
    for await (const b of createReadStream(path, { highWaterMark: chunk }) as AsyncIterable<Buffer>) {
      tap.update(b);
      if (!sock.write(b)) await new Promise<void>((r) => (sock.once('drain', r), sock.once('close', r)));
    }
    return;
  }
  const gen = new ModelBytes(Number(f.seed));
  for (let at = 0; at < total; at += chunk) {
    const b = new Uint8Array(Math.min(chunk, total - at));
    gen.fill(b, at);
    tap.update(b);
    // the peer may close as soon as it has every byte, before this side sees 'drain'
    if (!sock.write(b)) await new Promise<void>((r) => (sock.once('drain', r), sock.once('close', r)));
  }
}

const datasync = promisify(fdatasync);
const EARLY_FLUSH_BYTES = 64 << 20;

/**
 * A file written from socket data with the same disk strategy as Flotilla's writer, so the
 * two differ only in what lies between the disk and the socket: `chunk`-sized positioned
 * writes (TLS hands over 16 KiB reads, and a file write per read runs at a third of the speed,
 * so the bytes are gathered first: one copy, as Flotilla's receiver makes), four in flight
 * (the socket pauses while four are pending), fdatasync in the background every 64 MiB and
 * at the end.
 */
class DurableFile {
  private readonly fd: number;
  private unflushed = 0;
  private flushing: Promise<void> | null = null;
  private buf = Buffer.allocUnsafeSlow(chunk);
  private filled = 0;
  private position = 0;
  private readonly pending = new Set<Promise<void>>();
  private failure: Error | null = null;
  constructor(
    readonly path: string,
    private readonly sock: tls.TLSSocket,
  ) {
    this.fd = openSync(path, 'w');
  }
  write(b: Buffer): void {
    for (let at = 0; at < b.byteLength;) {
      const n = Math.min(b.byteLength - at, chunk - this.filled);
      b.copy(this.buf, this.filled, at, at + n);
      this.filled += n;
      at += n;
      if (this.filled === chunk) this.flush();
    }
  }
  private flush(): void {
    if (this.filled === 0) return;
    const w = writeAll(this.fd, this.buf.subarray(0, this.filled), this.position);
    this.pending.add(w);
    void w.then(
      () => {
        this.pending.delete(w);
        if (this.pending.size < INFLIGHT_WRITES) this.sock.resume();
      },
      (e: unknown) => {
        this.pending.delete(w);
        // reported by close(); the socket stays paused
        this.failure ??= e instanceof Error ? e : new Error(String(e));
      },
    );
    if (this.pending.size >= INFLIGHT_WRITES) this.sock.pause();
    this.position += this.filled;
    this.unflushed += this.filled;
    // the write is still reading the buffer: a fresh one for the next bytes
    this.buf = Buffer.allocUnsafeSlow(chunk);
    this.filled = 0;
    if (this.unflushed >= EARLY_FLUSH_BYTES && this.flushing === null) {
      this.unflushed = 0;
      this.flushing = datasync(this.fd).finally(() => (this.flushing = null));
    }
  }
  async close(): Promise<void> {
    this.flush();
    await Promise.allSettled(this.pending);
    if (this.failure) throw this.failure;
    await this.flushing;
    await datasync(this.fd);
    closeSync(this.fd);
  }
}

const INFLIGHT_WRITES = 4;
const writeAsync = promisify(fsWrite);

async function writeAll(fd: number, b: Buffer, position: number): Promise<void> {
  for (let off = 0; off < b.byteLength;) off += (await writeAsync(fd, b, off, b.byteLength - off, position + off)).bytesWritten;
}

function server(): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const srv = tls.createServer(
      { key: pem('server.key'), cert: pem('server.crt'), ca: pem('ca.pem'), requestCert: true, rejectUnauthorized: true },
      (sock) => {
        void (async () => {
          const out = await Tap.create();
          const back = await Tap.create();
          let tBack = 0;
          const file = f.mode === 'file' ? new DurableFile(join(f.dir, 'tls-server-back.bin'), sock) : null;
          const done = new Promise<void>((r, fail) => {
            sock.on('data', (b: Buffer) => {
              back.update(b);
              file?.write(b);
              if (back.bytes >= total && !tBack) {
                tBack = -1;
                void (file ? file.close() : Promise.resolve()).then(() => {
                  tBack = now();
                  if (file) rmSync(file.path, { force: true });
                  r();
                }, fail);
              }
            });
          });
          const t0 = now();
          await pour(sock, out, f.mode === 'file' ? f.file : undefined);
          const tSent = now();
          await done;
          sock.end();
          srv.close();
          resolve({
            role: 'server',
            t0,
            tSent,
            tBack,
            bytesSent: out.bytes,
            bytesBack: back.bytes,
            hashSent: out.digest(),
            hashBack: back.digest(),
          });
        })().catch(reject);
      },
    );
    srv.listen(0, '127.0.0.1', () => console.log(`PORT ${(srv.address() as { port: number }).port}`));
  });
}

let closed: Promise<void> = Promise.resolve();

function client(): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    void Tap.create().then((got) => {
      const sock = tls.connect({
        host: '127.0.0.1',
        port: num(f.port, '--port'),
        servername: 'localhost',
        key: pem('client.key'),
        cert: pem('client.crt'),
        ca: pem('ca.pem'),
      });
      sock.on('error', reject);
      closed = new Promise((r) => sock.on('close', () => r()));
      let tRecv = 0;
      let tSendStart = 0;
      const finish = (): void => {
        const tSendDone = now();
        resolve({ role: 'client', tRecv, tSendStart, tSendDone, bytesReceived: got.bytes, hashReceived: got.digest() });
      };
      sock.on('secureConnect', () => (tSendStart = now()));
      const file = f.mode === 'file' ? new DurableFile(join(f.dir, 'tls-client-copy.bin'), sock) : null;
      sock.on('data', (b: Buffer) => {
        got.update(b);
        file?.write(b);
        if (f.mode === 'relay' && !sock.write(b)) {
          sock.pause();
          sock.once('drain', () => sock.resume());
        }
        if (got.bytes >= total && !tRecv) {
          tRecv = now();
          if (f.mode === 'relay') {
            // everything is written once the socket's queue drains; the server's tBack tells the real end
            finish();
          } else if (file) {
            void (async () => {
              await file.close();
              tRecv = now();
              tSendStart = now();
              await pour(sock, await Tap.create(), file.path);
              rmSync(file.path, { force: true });
            })().then(finish, reject);
          } else {
            tSendStart = now();
            void Tap.create()
              .then((t) => pour(sock, t))
              .then(finish, reject);
          }
        }
      });
    }, reject);
  });
}

const result = f.role === 'server' ? await server() : await client();
console.log(`RESULT ${JSON.stringify({ ...result, ...processFacts() })}`);
// the client leaves only when the server, having every byte, closes the connection
await closed;
process.exit(0);
