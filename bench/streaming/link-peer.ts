/**
 * A second baseline of bench/streaming: the bare gRPC Link (same gRPC +
 * mutual-TLS transport as Flotilla, no Channel: no acknowledgements, no
 * CRC-32 or xxhash64 per chunk), moving the same bytes the same way as
 * tls-peer.ts (`seq` or `relay`). Separates the transport's cost from the
 * Channel's. Prints `PORT <n>` (server) and `RESULT <json>`.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GrpcClient } from '../../src/transport/grpc/client.ts';
import { GrpcServer } from '../../src/transport/grpc/server.ts';
import type { Frame, Link } from '../../src/transport/link.ts';
import { Tap, applyH2Window, flags, now, num, processFacts } from './common.ts';
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
  'h2-window': '0',
});
applyH2Window(Number(f['h2-window']));
const total = num(f.bytes, '--bytes');
const chunk = Math.round(num(f['chunk-mib'], '--chunk-mib') * (1 << 20));
const pem = (name: string): string => readFileSync(join(f.certs, name), 'utf8');

async function pour(link: Link, tap: Tap): Promise<void> {
  const gen = new ModelBytes(Number(f.seed));
  for (let at = 0; at < total; at += chunk) {
    const b = new Uint8Array(Math.min(chunk, total - at));
    gen.fill(b, at);
    tap.update(b);
    await link.send({ type: 'data', stream: 1, bytes: b, last: false });
  }
  await link.send({ type: 'data', stream: 1, bytes: new Uint8Array(0), last: true });
}

/** Data frames until the last one, each passed to `each`. */
async function take(link: Link, frames: AsyncIterator<Frame>, tap: Tap, each?: (b: Uint8Array) => Promise<void>): Promise<void> {
  for (;;) {
    const r = await frames.next();
    if (r.done) throw new Error(`link closed after ${tap.bytes} bytes: ${await link.closed}`);
    if (r.value.type !== 'data') continue;
    tap.update(r.value.bytes);
    if (each && r.value.bytes.byteLength > 0) await each(r.value.bytes);
    if (r.value.last) return;
  }
}

async function server(): Promise<Record<string, unknown>> {
  let gotLink!: (l: Link) => void;
  const linkP = new Promise<Link>((r) => (gotLink = r));
  const srv = new GrpcServer({
    host: '127.0.0.1',
    port: 0,
    caPem: pem('ca.pem'),
    certPem: pem('server.crt'),
    keyPem: pem('server.key'),
    handlers: { onConnect: (l) => (gotLink(l), null), onAdmin: async () => ({ ok: false, json: '""', blob: new Uint8Array(0) }) },
  });
  console.log(`PORT ${await srv.start()}`);
  const link = await linkP;
  const frames = link.frames()[Symbol.asyncIterator]();
  await frames.next(); // the client's hello
  const out = await Tap.create();
  const back = await Tap.create();
  const t0 = now();
  const backP = (async () => (await pour(link, out), now()))();
  // in seq mode nothing comes back before everything went out, so reading concurrently is harmless
  await take(link, frames, back);
  const tBack = now();
  const tSent = await backP;
  link.close('done');
  await srv.close(500);
  return { role: 'server', t0, tSent, tBack, bytesSent: out.bytes, bytesBack: back.bytes, hashSent: out.digest(), hashBack: back.digest() };
}

async function client(): Promise<Record<string, unknown>> {
  const c = new GrpcClient({
    host: '127.0.0.1',
    port: num(f.port, '--port'),
    serverName: 'localhost',
    caPem: pem('ca.pem'),
    certPem: pem('client.crt'),
    keyPem: pem('client.key'),
  });
  await c.ready(30_000);
  const link = c.connect({ 'x-flotilla-purpose': 'session' });
  const frames = link.frames()[Symbol.asyncIterator]();
  await link.send({ type: 'control', json: '{"type":"hello"}' });
  const got = await Tap.create();
  let tSendStart = now();
  if (f.mode === 'relay') {
    await take(link, frames, got, (b) => link.send({ type: 'data', stream: 1, bytes: b, last: false }));
    await link.send({ type: 'data', stream: 1, bytes: new Uint8Array(0), last: true });
  } else {
    await take(link, frames, got);
  }
  const tRecv = now();
  if (f.mode !== 'relay') {
    tSendStart = now();
    await pour(link, await Tap.create());
  }
  const tSendDone = now();
  // stay until the server has everything and closes the call
  await link.closed;
  c.close();
  return { role: 'client', tRecv, tSendStart, tSendDone, bytesReceived: got.bytes, hashReceived: got.digest() };
}

const result = f.role === 'server' ? await server() : await client();
console.log(`RESULT ${JSON.stringify({ ...result, ...processFacts() })}`);
process.exit(0);
