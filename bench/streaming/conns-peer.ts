/**
 * Experiment of bench/streaming: one transfer split over N parallel gRPC calls
 * (the bare Link, as link-peer.ts), either N calls on one HTTP/2 connection
 * (`--share yes`) or N TLS connections (`--share no`). Sequential: server →
 * client, then client → server. Slice k of the bytes goes over call k; the
 * hashes are the per-call xxhash64s joined in call order.
 * Prints `PORT <n>` (server) and `RESULT <json>`.
 *
 *   node --conditions=flotilla-source --import tsx bench/streaming.ts ... is not needed: run a pair by hand,
 *   node --conditions=flotilla-source --import tsx bench/streaming/conns-peer.ts --role server --certs DIR --conns 4 --bytes 5e8
 *   node --conditions=flotilla-source --import tsx bench/streaming/conns-peer.ts --role client --certs DIR --conns 4 --bytes 5e8 --port N
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GrpcClient } from '../../src/transport/grpc/client.ts';
import { GrpcServer } from '../../src/transport/grpc/server.ts';
import { CHANNEL_OPTIONS } from '../../src/transport/grpc/wire.ts';
import type { Frame, Link } from '../../src/transport/link.ts';
import { Tap, applyH2Window, flags, now, num, processFacts } from './common.ts';
import { ModelBytes } from './model.ts';

const f = flags(process.argv.slice(2), {
  role: 'server',
  bytes: String(5e8),
  seed: '1',
  certs: '',
  port: '0',
  'chunk-mib': '1',
  conns: '2',
  share: 'no',
  'h2-window': String(4 << 20),
});
applyH2Window(Number(f['h2-window']));
const total = num(f.bytes, '--bytes');
const n = num(f.conns, '--conns');
const chunk = Math.round(num(f['chunk-mib'], '--chunk-mib') * (1 << 20));
const pem = (name: string): string => readFileSync(join(f.certs, name), 'utf8');
// slice k: [k * share, min(total, (k + 1) * share)), 1 MiB-aligned
const slice = Math.ceil(total / n / (1 << 20)) * (1 << 20);
const range = (k: number): [number, number] => [Math.min(total, k * slice), Math.min(total, (k + 1) * slice)];

async function pour(link: Link, tap: Tap, k: number): Promise<void> {
  const gen = new ModelBytes(Number(f.seed));
  const [from, to] = range(k);
  for (let at = from; at < to; at += chunk) {
    const b = new Uint8Array(Math.min(chunk, to - at));
    gen.fill(b, at);
    tap.update(b);
    await link.send({ type: 'data', stream: 1, bytes: b, last: false });
  }
  await link.send({ type: 'data', stream: 1, bytes: new Uint8Array(0), last: true });
}

async function take(link: Link, frames: AsyncIterator<Frame>, tap: Tap): Promise<void> {
  for (;;) {
    const r = await frames.next();
    if (r.done) throw new Error(`link closed after ${tap.bytes} bytes: ${await link.closed}`);
    if (r.value.type !== 'data') continue;
    tap.update(r.value.bytes);
    if (r.value.last) return;
  }
}

const taps = async (): Promise<Tap[]> => Promise.all(Array.from({ length: n }, () => Tap.create()));
const joined = (t: Tap[]): string => t.map((x) => x.digest()).join('-');
const sum = (t: Tap[]): number => t.reduce((s, x) => s + x.bytes, 0);

async function server(): Promise<Record<string, unknown>> {
  const links: { link: Link; frames: AsyncIterator<Frame>; k: number }[] = [];
  let all!: () => void;
  const ready = new Promise<void>((r) => (all = r));
  const srv = new GrpcServer({
    host: '127.0.0.1',
    port: 0,
    caPem: pem('ca.pem'),
    certPem: pem('server.crt'),
    keyPem: pem('server.key'),
    handlers: {
      onConnect: (link) => {
        const frames = link.frames()[Symbol.asyncIterator]();
        // the hello names the call's slice
        void frames.next().then((r) => {
          if (r.done || r.value.type !== 'control') throw new Error('expected a hello');
          links.push({ link, frames, k: (JSON.parse(r.value.json) as { k: number }).k });
          if (links.length === n) all();
        });
        return null;
      },
      onAdmin: async () => ({ ok: false, json: '""', blob: new Uint8Array(0) }),
    },
  });
  console.log(`PORT ${await srv.start()}`);
  await ready;
  links.sort((a, b) => a.k - b.k);
  const out = await taps();
  const back = await taps();
  const t0 = now();
  const sent = Promise.all(links.map((l) => pour(l.link, out[l.k]!, l.k))).then(() => now());
  await Promise.all(links.map((l) => take(l.link, l.frames, back[l.k]!)));
  const tBack = now();
  const tSent = await sent;
  for (const l of links) l.link.close('done');
  await srv.close(500);
  return {
    role: 'server',
    conns: n,
    share: f.share,
    t0,
    tSent,
    tBack,
    bytesSent: sum(out),
    bytesBack: sum(back),
    hashSent: joined(out),
    hashBack: joined(back),
  };
}

async function client(): Promise<Record<string, unknown>> {
  // grpc-js shares one connection between clients of the same target and options; a local pool per client gives each its own
  if (f.share === 'no') (CHANNEL_OPTIONS as Record<string, unknown>)['grpc.use_local_subchannel_pool'] = 1;
  const opts = {
    host: '127.0.0.1',
    port: num(f.port, '--port'),
    serverName: 'localhost',
    caPem: pem('ca.pem'),
    certPem: pem('client.crt'),
    keyPem: pem('client.key'),
  };
  const clients = f.share === 'no' ? Array.from({ length: n }, () => new GrpcClient(opts)) : [new GrpcClient(opts)];
  await Promise.all(clients.map((c) => c.ready(30_000)));
  const links = Array.from({ length: n }, (_, k) => clients[k % clients.length]!.connect({ 'x-flotilla-purpose': 'session' }));
  const frames = links.map((l) => l.frames()[Symbol.asyncIterator]());
  await Promise.all(links.map((l, k) => l.send({ type: 'control', json: JSON.stringify({ k }) })));
  const got = await taps();
  await Promise.all(links.map((l, k) => take(l, frames[k]!, got[k]!)));
  const tRecv = now();
  const tSendStart = now();
  const again = await taps();
  await Promise.all(links.map((l, k) => pour(l, again[k]!, k)));
  const tSendDone = now();
  await Promise.all(links.map((l) => l.closed));
  for (const c of clients) c.close();
  return { role: 'client', tRecv, tSendStart, tSendDone, bytesReceived: sum(got), hashReceived: joined(got) };
}

const result = f.role === 'server' ? await server() : await client();
console.log(`RESULT ${JSON.stringify({ ...result, ...processFacts() })}`);
process.exit(0);
