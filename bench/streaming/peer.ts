/**
 * One side of a bench/streaming run, in its own process so its peak RSS is its
 * own: `--role server` listens (gRPC + mutual TLS), sends the model and takes
 * it back; `--role client` connects, receives it and sends it back. Both wrap
 * the Link in a Channel. Prints `PORT <n>` (server) and then `RESULT <json>`.
 *
 *   regular    the model as one buffer on the sender, collected whole by the receiver
 *   container  encodeStream of a tensor stream; the client decodes it and hashes it
 *              (keeping nothing), then sends a model update of the same layout back the
 *              same way (generated from the same seed: the same bytes), which the server
 *              decodes and hashes. Sequential, as a task and its result are.
 *   relay      container streaming both ways at once: the client decodes and relays
 *              each piece straight back (it keeps nothing); the server decodes what
 *              returns and hashes it
 *   file       a safetensors file streamed from disk, written to a file on the
 *              client, which then streams that file back to a file on the server
 */
import { appendFileSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { buildHeader } from '../../src/core/safetensors-header.ts';
import { fileSource } from '../../src/core/model-source.ts';
import { writeStreamToFile } from '../../src/core/safetensors.ts';
import { type TensorStream, decodeStream, encodeStream } from '../../src/core/tensor-stream.ts';
import { Channel, type Envelope, type TransferProgress } from '../../src/streaming/index.ts';
import { GrpcClient } from '../../src/transport/grpc/client.ts';
import { GrpcServer } from '../../src/transport/grpc/server.ts';
import { dialTls } from '../../src/transport/tls/dial.ts';
import { TlsDataServer } from '../../src/transport/tls/server.ts';
import type { Link } from '../../src/transport/link.ts';
import { Tap, applyH2Window, flags, now, num, peakRssMB, processFacts } from './common.ts';
import { META, layoutBytes, modelLayout, syntheticStream } from './model.ts';

const f = flags(process.argv.slice(2), {
  role: 'server',
  mode: 'container',
  bytes: String(1e9),
  seed: '1',
  'chunk-mib': '1',
  'window-mib': '64',
  certs: '',
  port: '0',
  file: '',
  dir: '',
  'h2-window': '0',
  back: 'yes',
  progress: '',
  transport: 'grpc',
});
if (f.transport !== 'grpc' && f.transport !== 'tls') throw new Error(`--transport must be grpc or tls, got "${f.transport}"`);
if (f.back !== 'yes' && f.back !== 'no') throw new Error(`--back must be yes or no, got "${f.back}"`);
const MIB = 1 << 20;
const chunkBytes = Math.round(num(f['chunk-mib'], '--chunk-mib') * MIB);
const windowBytes = Math.round(num(f['window-mib'], '--window-mib') * MIB);
const mode = f.mode;
if (mode !== 'regular' && mode !== 'container' && mode !== 'relay' && mode !== 'file')
  throw new Error(`--mode must be regular, container, relay or file, got "${mode}"`);
if (f.back === 'no' && mode !== 'container') throw new Error('--back no is for container mode only');
const pem = (name: string): string => readFileSync(join(f.certs, name), 'utf8');

applyH2Window(Number(f['h2-window']));

async function* once(b: Uint8Array): AsyncGenerator<Uint8Array> {
  yield b;
}

/** Receives a payload whole into one buffer (what "regular" transmission does). */
async function collect(payload: AsyncIterable<Uint8Array>, total: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(total);
  let at = 0;
  for await (const b of payload) {
    if (at + b.byteLength > total) throw new Error(`payload longer than the announced ${total} bytes`);
    buf.set(b, at);
    at += b.byteLength;
  }
  if (at !== total) throw new Error(`payload of ${at} bytes, ${total} announced`);
  return buf;
}

async function drain(stream: TensorStream): Promise<number> {
  let n = 0;
  for await (const p of stream.pieces()) n += p.bytes.byteLength;
  return n;
}

async function nextEnvelope(it: AsyncIterator<Envelope>, type: string): Promise<Envelope> {
  const r = await it.next();
  if (r.done) throw new Error(`channel closed while waiting for "${type}"`);
  if (r.value.msg.type !== type) throw new Error(`expected "${type}", got ${JSON.stringify(r.value.msg).slice(0, 200)}`);
  return r.value;
}

/** With --progress FILE: one line per transfer every 15 s and at its end (bytes, rate, peak RSS). */
let lastProgress = 0;
const onTransfer = (t: TransferProgress): void => {
  const at = performance.now();
  if (!t.done && at - lastProgress < 15_000) return;
  lastProgress = at;
  const line = `${new Date().toISOString()} ${f.role} ${t.direction} ${(t.bytes / 1e9).toFixed(2)} GB in ${t.seconds.toFixed(0)} s (${(t.bytes / 1e9 / Math.max(t.seconds, 1e-3)).toFixed(3)} GB/s) peak RSS ${peakRssMB()} MB${t.done ? ' done' : ''}\n`;
  appendFileSync(f.progress, line);
};
const channelOpts = { chunkBytes, windowBytes, ...(f.progress && { onTransfer }) };

async function server(): Promise<Record<string, unknown>> {
  let gotLink!: (l: Link) => void;
  const linkP = new Promise<Link>((r) => (gotLink = r));
  const tlsOpts = { host: '127.0.0.1', port: 0, caPem: pem('ca.pem'), certPem: pem('server.crt'), keyPem: pem('server.key') };
  const srv =
    f.transport === 'tls'
      ? new TlsDataServer({ ...tlsOpts, onConnect: (link) => (gotLink(link), null) })
      : new GrpcServer({
          ...tlsOpts,
          handlers: {
            onConnect: (link) => {
              gotLink(link);
              return null;
            },
            onAdmin: async () => ({ ok: false, json: '"no admin here"', blob: new Uint8Array(0) }),
          },
        });
  const tensors = modelLayout(num(f.bytes, '--bytes'));
  const seed = Number(f.seed);
  const r: Record<string, unknown> = {};
  const out = await Tap.create();
  let keep: Buffer | null = null;
  if (mode === 'regular') {
    // the whole model in one buffer, as a server without streaming holds it; built before
    // the client connects (building it keeps the event loop busy past gRPC's keepalive timeout)
    const tm = now();
    keep = Buffer.allocUnsafe(buildHeader(tensors, META(seed)).bytes.byteLength + layoutBytes(tensors));
    let at = 0;
    for await (const b of encodeStream(syntheticStream(tensors, seed, 16 * MIB))) {
      keep.set(b, at);
      at += b.byteLength;
    }
    out.update(keep);
    r.materializeSeconds = (now() - tm) / 1000;
  }
  console.log(`PORT ${await srv.start()}`);
  const ch = new Channel(await linkP, channelOpts);
  const inbox = ch.messages()[Symbol.asyncIterator]();
  await nextEnvelope(inbox, 'hello');
  const back = await Tap.create();
  let t0: number;
  let tSent: number;
  let tBack: number;
  if (mode === 'regular') {
    const total = keep!.byteLength;
    t0 = now();
    await ch.send({ type: 'model', bytes: total }, once(keep!));
    tSent = now();
    const env = await nextEnvelope(inbox, 'back');
    const got = await collect(env.payload!, Number(env.msg.bytes));
    tBack = now();
    back.update(got);
  } else if (mode === 'container' || mode === 'relay') {
    t0 = now();
    const sending = ch.send({ type: 'model' }, out.through(encodeStream(syntheticStream(tensors, seed, chunkBytes)))).then(() => now());
    if (f.back === 'no') {
      // one way: the client only hashes what it decodes and says when it is done
      tSent = await sending;
      await nextEnvelope(inbox, 'received');
      tBack = now();
    } else {
      const env = await nextEnvelope(inbox, 'back');
      const decoded = await decodeStream(back.through(env.payload!), { chunkBytes });
      r.tensors = decoded.header.tensors.length;
      r.dataBytesBack = await drain(decoded);
      tBack = now();
      tSent = await sending;
    }
  } else {
    const src = await fileSource(f.file);
    t0 = now();
    await ch.send({ type: 'model' }, out.through(encodeStream(src.open(chunkBytes))));
    tSent = now();
    const env = await nextEnvelope(inbox, 'back');
    const backPath = join(f.dir, 'server-back.safetensors');
    await writeStreamToFile(backPath, await decodeStream(back.through(env.payload!), { chunkBytes }));
    tBack = now();
    rmSync(backPath, { force: true });
  }
  Object.assign(r, {
    role: 'server',
    t0,
    tSent,
    tBack,
    bytesSent: out.bytes,
    bytesBack: back.bytes,
    hashSent: out.digest(),
    hashBack: back.digest(),
    tensors: tensors.length,
    largestTensorBytes: Math.max(...tensors.map((t) => layoutBytes([t]))),
  });
  void keep;
  ch.close('done');
  await srv.close(500);
  return r;
}

async function client(): Promise<Record<string, unknown>> {
  const dial = {
    host: '127.0.0.1',
    port: num(f.port, '--port'),
    serverName: 'localhost',
    caPem: pem('ca.pem'),
    certPem: pem('client.crt'),
    keyPem: pem('client.key'),
  };
  let c: GrpcClient | null = null;
  let link: Link;
  if (f.transport === 'tls') link = await dialTls(dial, { purpose: 'session', jobId: null, channelId: null });
  else {
    c = new GrpcClient(dial);
    await c.ready(30_000);
    link = c.connect({ 'x-flotilla-purpose': 'session' });
  }
  const ch = new Channel(link, channelOpts);
  const inbox = ch.messages()[Symbol.asyncIterator]();
  await ch.send({ type: 'hello' });
  const env = await nextEnvelope(inbox, 'model');
  const got = await Tap.create();
  let tRecv: number;
  let tSendStart: number;
  if (mode === 'regular') {
    const total = Number(env.msg.bytes);
    const buf = await collect(got.through(env.payload!), total);
    tRecv = now();
    tSendStart = now();
    await ch.send({ type: 'back', bytes: total }, once(buf));
  } else if (mode === 'container' && f.back === 'no') {
    const decoded = await decodeStream(got.through(env.payload!), { chunkBytes });
    await drain(decoded);
    tRecv = now();
    tSendStart = tRecv;
    await ch.send({ type: 'received', bytes: got.bytes });
    // the server closes the channel once it has this message
    await inbox.next();
  } else if (mode === 'container') {
    const decoded = await decodeStream(got.through(env.payload!), { chunkBytes });
    await drain(decoded);
    tRecv = now();
    tSendStart = now();
    // the update goes back as a tensor stream generated piece by piece: nothing is held
    await ch.send({ type: 'back' }, encodeStream(syntheticStream(decoded.header.tensors, Number(f.seed), chunkBytes)));
  } else if (mode === 'relay') {
    const decoded = await decodeStream(got.through(env.payload!), { chunkBytes });
    tSendStart = now();
    let recvDone = 0;
    // relay: each decoded piece goes straight back; nothing is kept
    const relay: TensorStream = {
      header: decoded.header,
      async *pieces() {
        yield* decoded.pieces();
        recvDone = now();
      },
    };
    await ch.send({ type: 'back' }, encodeStream(relay));
    tRecv = recvDone;
  } else {
    const path = join(f.dir, 'client-copy.safetensors');
    await writeStreamToFile(path, await decodeStream(got.through(env.payload!), { chunkBytes }));
    tRecv = now();
    tSendStart = now();
    await ch.send({ type: 'back' }, encodeStream((await fileSource(path)).open(chunkBytes)));
    rmSync(path, { force: true });
  }
  const tSendDone = now();
  ch.close('done');
  c?.close();
  return { role: 'client', tRecv, tSendStart, tSendDone, bytesReceived: got.bytes, hashReceived: got.digest() };
}

const result = f.role === 'server' ? await server() : await client();
console.log(`RESULT ${JSON.stringify({ ...result, ...processFacts() })}`);
process.exit(0);
