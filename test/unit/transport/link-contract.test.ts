// The Link contract (src/transport/link.ts), one suite run over every link kind: in-memory,
// MessagePort (worker threads), gRPC (Federation.Connect over mutual TLS) and the TLS data plane,
// the addressable ones through the Listener and Dialer their address picks. Each kind is a
// factory of connected pairs; every test is the same for all of them.
import assert from 'node:assert/strict';
import { randomBytes, randomFillSync } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { MessageChannel } from 'node:worker_threads';
import { createCA, issueCert } from '../../../src/provision/ca.ts';
import { Channel, ChannelClosedError } from '../../../src/streaming/index.ts';
import { parseAddress } from '../../../src/transport/address.ts';
import { type Dialer, dialerFor } from '../../../src/transport/dialer.ts';
import { MessagePortLink } from '../../../src/transport/in-memory.ts';
import type { Frame, Link } from '../../../src/transport/link.ts';
import { type Listener, listenerFor } from '../../../src/transport/listener.ts';
import { AsyncQueue } from '../../../src/util/async-queue.ts';
import { MAX_MESSAGE_BYTES } from '../../../src/util/limits.ts';
import { FaultProxy } from '../../helpers/fault-proxy.ts';
import { nextValue } from '../../helpers/next.ts';

interface Pair {
  /** the dialling end (its peer is "server") */
  client: Link;
  /** the accepting end (its peer is the site, "site-1") */
  server: Link;
  /** breaks the connection under both ends without either closing its link (a network failure) */
  sever(): void;
}

interface LinkKind {
  name: string;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  pair(): Promise<Pair>;
}

/** The server ends, as their listener accepts them. */
function acceptor(): { onConnect: (l: Link) => string | null; next: () => Promise<Link> } {
  const q = new AsyncQueue<Link>();
  return { onConnect: (l) => (q.push(l), null), next: async () => (await q.next())! };
}

let certs: { ca: string; srv: { certPem: string; keyPem: string }; cli: { certPem: string; keyPem: string } };

/**
 * A kind reached by address: a Listener and a Dialer chosen by the scheme (src/transport), with
 * a FaultProxy in between for the socket kinds so a test can break the connection.
 */
function addressKind(name: string, scheme: 'mem' | 'grpc' | 'tls'): LinkKind {
  let listener: Listener;
  let dialer: Dialer;
  let proxy: FaultProxy | null = null;
  const accepted = acceptor();
  let last: Link | null = null;
  return {
    name,
    async setup() {
      const at = scheme === 'mem' ? `mem://contract-${randomBytes(4).toString('hex')}` : `${scheme}://127.0.0.1:0`;
      listener = listenerFor(at, { onConnect: accepted.onConnect, caPem: certs.ca, certPem: certs.srv.certPem, keyPem: certs.srv.keyPem });
      const bound = parseAddress(await listener.start());
      let target = bound;
      if (bound.scheme !== 'mem') {
        proxy = new FaultProxy();
        target = { ...bound, port: await proxy.start(bound.port) };
      }
      dialer = dialerFor(target, {
        serverName: 'localhost',
        caPem: certs.ca,
        certPem: certs.cli.certPem,
        keyPem: certs.cli.keyPem,
        identity: { name: 'site-1', org: 'test', kind: 'client' },
      });
    },
    async teardown() {
      dialer.close();
      await proxy?.close();
      await listener.close(200);
    },
    async pair() {
      const client = await dialer.dial({ purpose: 'session', jobId: null, channelId: randomBytes(12).toString('hex') });
      const server = await accepted.next();
      last = server;
      return { client, server, sever: () => (proxy ? proxy.cut() : last?.close('severed')) };
    },
  };
}

const KINDS: LinkKind[] = [
  addressKind('in-memory (mem://)', 'mem'),
  {
    name: 'MessagePort',
    setup: async () => undefined,
    teardown: async () => undefined,
    async pair() {
      const { port1, port2 } = new MessageChannel();
      return { client: new MessagePortLink('server', port1), server: new MessagePortLink('site-1', port2), sever: () => port2.close() };
    },
  },
  addressKind('gRPC (grpc://)', 'grpc'),
  addressKind('TLS data plane (tls://)', 'tls'),
];

before(async () => {
  const ca = await createCA('link-contract', 1);
  const notAfter = new Date(Date.now() + 86_400_000);
  const srv = await issueCert(ca, { subject: { cn: 'server', org: 'test', ou: 'server' }, hosts: ['localhost', '127.0.0.1'], notAfter });
  const cli = await issueCert(ca, { subject: { cn: 'site-1', org: 'test', ou: 'client' }, notAfter });
  certs = { ca: ca.certPem, srv, cli };
});

/** Frames of every kind and every optional field, both ways. */
function sample(tag: string): Frame[] {
  const bytes = randomFillSync(new Uint8Array(70_001));
  return [
    { type: 'control', json: JSON.stringify({ tag, text: 'ünïcødé ✓' }) },
    { type: 'data', stream: 1, bytes, last: false, offset: 0, hash: '0123456789abcdef' },
    { type: 'data', stream: 1, bytes: new Uint8Array(0), last: true, offset: 70_001, digest: 'fedcba9876543210' },
    { type: 'data', stream: 0xffffffff, bytes: bytes.subarray(3, 10), last: false },
    { type: 'ack', stream: 7, bytes: 2 ** 40 + 3 },
    { type: 'resend', stream: 8, offset: 2 ** 33 },
    { type: 'cancel', stream: 9, reason: `${tag}: not wanted` },
  ];
}

/** Plain objects with plain byte arrays, to compare frames whatever buffer type a transport hands back. */
const plain = (f: Frame): unknown =>
  f.type === 'data' ? { ...f, bytes: Buffer.from(f.bytes.buffer, f.bytes.byteOffset, f.bytes.byteLength).toString('base64') } : { ...f };

async function take(link: Link, n: number, it = link.frames()[Symbol.asyncIterator]()): Promise<Frame[]> {
  const out: Frame[] = [];
  while (out.length < n) {
    const r = await it.next();
    if (r.done) break;
    out.push(r.value.type === 'data' ? { ...r.value, bytes: r.value.bytes.slice() } : r.value);
  }
  return out;
}

const settles = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([p, new Promise<T>((_, rej) => setTimeout(() => rej(new Error(`${what} did not settle within ${ms} ms`)), ms).unref())]);

for (const kind of KINDS)
  describe(`Link contract: ${kind.name}`, () => {
    before(() => kind.setup());
    after(() => kind.teardown());

    test('peer names the other side, on both ends', async () => {
      const p = await kind.pair();
      assert.equal(p.client.peer, 'server');
      assert.equal(p.server.peer, 'site-1');
      p.client.close('done');
    });

    test('ordering: frames of every kind arrive in order, every field intact, both ways at once', async () => {
      const p = await kind.pair();
      const up = sample('up');
      const down = sample('down');
      const got = Promise.all([take(p.server, up.length), take(p.client, down.length)]);
      await Promise.all([...up.map((f) => p.client.send(f)), ...down.map((f) => p.server.send(f))]);
      const [atServer, atClient] = await got;
      assert.deepEqual(atServer.map(plain), up.map(plain));
      assert.deepEqual(atClient.map(plain), down.map(plain));
      p.client.close('done');
    });

    test('backpressure: a burst far beyond the transport buffers (64 MiB, not awaited one by one) settles and arrives complete, in order', async () => {
      const p = await kind.pair();
      const piece = randomFillSync(new Uint8Array(1 << 20));
      const n = 64;
      const got = take(p.server, n);
      const sends: Promise<void>[] = [];
      for (let i = 0; i < n; i++) sends.push(p.client.send({ type: 'data', stream: 1, offset: i << 20, bytes: piece, last: i === n - 1 }));
      await settles(Promise.all(sends), 60_000, 'the sends');
      const frames = await got;
      assert.equal(frames.length, n);
      frames.forEach((f, i) => {
        assert.ok(f.type === 'data' && f.offset === i << 20 && f.last === (i === n - 1), `frame ${i} out of order`);
        assert.ok(Buffer.from(f.bytes).equals(piece), `frame ${i} bytes differ`);
      });
      p.client.close('done');
    });

    test(`large frames: a data piece and a control message of the protocol's limit (${MAX_MESSAGE_BYTES} bytes) cross intact`, async () => {
      const p = await kind.pair();
      const bytes = randomFillSync(new Uint8Array(MAX_MESSAGE_BYTES));
      const json = JSON.stringify({ fill: 'x'.repeat(MAX_MESSAGE_BYTES - 20) });
      assert.ok(json.length <= MAX_MESSAGE_BYTES);
      const got = take(p.server, 2);
      await p.client.send({ type: 'data', stream: 3, offset: 0, bytes, last: true });
      await p.client.send({ type: 'control', json });
      const [d, c] = await got;
      assert.ok(d?.type === 'data' && Buffer.from(d.bytes).equals(bytes));
      assert.ok(c?.type === 'control' && c.json === json);
      p.client.close('done');
    });

    test('close: frames sent before close() arrive first; both ends end and resolve closed; send() afterwards rejects; closing twice is harmless', async () => {
      const p = await kind.pair();
      const it = p.server.frames()[Symbol.asyncIterator]();
      await p.client.send({ type: 'control', json: '{"last":"words"}' });
      p.client.close('bye');
      p.client.close('again');
      const first = await settles(it.next(), 10_000, 'the frame before close');
      assert.deepEqual(first.value, { type: 'control', json: '{"last":"words"}' });
      assert.equal((await settles(it.next(), 10_000, 'the end of frames()')).done, true);
      assert.equal(await p.client.closed, 'bye');
      assert.equal(typeof (await settles(p.server.closed, 10_000, 'the far end closed')), 'string');
      await assert.rejects(p.client.send({ type: 'ack', stream: 1, bytes: 1 }));
      await assert.rejects(p.server.send({ type: 'ack', stream: 1, bytes: 1 }));
    });

    test('error: a connection broken under both ends ends them with a reason; sends fail instead of hanging', async () => {
      const p = await kind.pair();
      const ends = Promise.all([p.client.closed, p.server.closed]);
      const drained = Promise.all([take(p.client, 1), take(p.server, 1)]);
      p.sever();
      const reasons = await settles(ends, 30_000, 'closed after the connection broke');
      for (const r of reasons) assert.ok(typeof r === 'string' && r.length > 0);
      assert.deepEqual(await settles(drained, 10_000, 'frames() ending'), [[], []]);
      await assert.rejects(settles(p.client.send({ type: 'ack', stream: 1, bytes: 1 }), 10_000, 'a send on a broken link'));
    });

    test('a Channel over the link: a payload crosses bit-identical with its message, and closing fails the far end with ChannelClosedError', async () => {
      const p = await kind.pair();
      const tx = new Channel(p.client, { chunkBytes: 256 << 10, windowBytes: 2 << 20 });
      const rx = new Channel(p.server);
      const data = randomFillSync(new Uint8Array(5 << 20));
      const sent = tx.send(
        { type: 'model', round: 1 },
        (async function* () {
          for (let o = 0; o < data.byteLength; o += 1 << 20) yield data.subarray(o, o + (1 << 20));
        })(),
        { totalBytes: data.byteLength },
      );
      const inbox = rx.messages()[Symbol.asyncIterator]();
      const env = await nextValue(inbox);
      assert.deepEqual(env.msg, { type: 'model', round: 1 });
      const parts: Uint8Array[] = [];
      for await (const c of env.payload!) parts.push(c.slice());
      await sent;
      assert.ok(Buffer.concat(parts).equals(data));
      tx.close('finished');
      assert.equal((await inbox.next()).done, true);
      await assert.rejects(rx.send({ type: 'late' }), (e) => e instanceof ChannelClosedError);
    });
  });
