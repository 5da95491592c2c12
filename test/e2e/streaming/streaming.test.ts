// Issue 4 at small sizes: a 64 MiB model in 64 KiB chunks, in the three streaming modes
// (object, container, file), bit-identical; streams that survive a dropped link and resume
// from the last acknowledged offset, re-sending at most one window; the same over the real
// gRPC link and over the TLS data plane, both with mutual TLS on loopback, with the connection
// cut by a TCP proxy.
import assert from 'node:assert/strict';
import { createHash, randomFillSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { DType } from '../../../src/core/dtypes.ts';
import { fileSource } from '../../../src/core/model-source.ts';
import { writeSafetensors, writeStreamToFile } from '../../../src/core/safetensors.ts';
import { decodeStream, dictToStream, encodeStream, streamToDict } from '../../../src/core/tensor-stream.ts';
import { type TensorDict, tensor, tensorBytes } from '../../../src/core/tensor.ts';
import { createCA, issueCert } from '../../../src/provision/ca.ts';
import { Channel, type ChannelOptions, type Envelope } from '../../../src/streaming/index.ts';
import { GrpcClient } from '../../../src/transport/grpc/client.ts';
import { GrpcServer } from '../../../src/transport/grpc/server.ts';
import type { ConnectInfo, PeerIdentity } from '../../../src/transport/peer.ts';
import { dialTls } from '../../../src/transport/tls/dial.ts';
import { TlsDataServer } from '../../../src/transport/tls/server.ts';
import { linkPair } from '../../../src/transport/in-memory.ts';
import type { Frame, Link } from '../../../src/transport/link.ts';
import { FaultProxy } from '../../helpers/fault-proxy.ts';
import { nextValue } from '../../helpers/next.ts';

const MIB = 1 << 20;
const CHUNK = 64 << 10;
const WINDOW = 2 * MIB;
const OPTS: ChannelOptions = { chunkBytes: CHUNK, windowBytes: WINDOW };

const tmp = mkdtempSync(join(tmpdir(), 'flotilla-streaming-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

// ---- the models: 64 MiB (in memory) and 8 MiB (over gRPC), with tensors far larger than a chunk --

interface Fixture {
  dict: TensorDict;
  path: string;
  /** the model's safetensors bytes: the object mode's one buffer, and what every mode must deliver */
  bytes: Buffer;
}

function makeModel(scale: number): TensorDict {
  const d: TensorDict = new Map();
  const add = (name: string, dtype: DType, shape: number[]): void => {
    const t = tensor(dtype, shape);
    randomFillSync(tensorBytes(t));
    d.set(name, t);
  };
  const rows = Math.round(4096 * scale);
  add('embed.weight', 'F32', [rows, 1000]); // 15.6 MiB at scale 1
  add('block.0.weight', 'BF16', [rows, 2000]);
  add('block.1.weight', 'F16', [rows, 2047]);
  for (let i = 0; i < 24; i++) add(`block.${i}.bias`, 'F32', [1000 + i]);
  add('head.weight', 'F32', [rows, 1070]);
  add('head.step', 'I64', [1]);
  return d;
}

async function fixture(name: string, scale: number): Promise<Fixture> {
  const dict = makeModel(scale);
  const path = join(tmp, `${name}.safetensors`);
  await writeSafetensors(path, dict);
  return { dict, path, bytes: readFileSync(path) };
}

let big: Fixture; // 64 MiB
let small: Fixture; // 8 MiB

before(async () => {
  big = await fixture('big', 1);
  small = await fixture('small', 1 / 8);
  assert.ok(big.bytes.byteLength > 64e6, `model of ${big.bytes.byteLength} bytes`);
});

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

// ---- helpers ---------------------------------------------------------------------------

async function* once(b: Uint8Array): AsyncGenerator<Uint8Array> {
  yield b;
}

async function collect(p: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of p) parts.push(c.slice());
  return Buffer.concat(parts);
}

type Mode = 'object' | 'container' | 'file';

/** Sends the model in `mode` from `tx` and checks on `rx` that it arrives bit-identical. */
async function transfer(
  m: Fixture,
  mode: Mode,
  tx: Channel,
  rx: Channel,
  inbox: AsyncIterator<Envelope>,
  onBytes?: (n: number) => void,
): Promise<void> {
  const { dict: model, bytes: objectBytes } = m;
  let source: AsyncIterable<Uint8Array>;
  if (mode === 'object') source = once(objectBytes);
  else if (mode === 'container') source = encodeStream(dictToStream(model, { chunkBytes: CHUNK }));
  else source = encodeStream((await fileSource(m.path)).open(CHUNK));
  const sent = tx.send({ type: 'model', mode }, source);
  const env = await nextValue<Envelope>(inbox);
  assert.equal(env.msg.type, 'model');
  let payload: AsyncIterable<Uint8Array> = env.payload!;
  if (onBytes) {
    const inner = payload;
    payload = (async function* () {
      let n = 0;
      for await (const c of inner) {
        n += c.byteLength;
        onBytes(n);
        yield c;
      }
    })();
  }
  if (mode === 'object') {
    const got = await collect(payload);
    assert.equal(got.byteLength, objectBytes.byteLength);
    assert.ok(got.equals(objectBytes), 'object mode: bytes differ');
  } else if (mode === 'container') {
    const decoded = await decodeStream(payload, { chunkBytes: CHUNK });
    let largestPiece = 0;
    const got = await streamToDict({
      header: decoded.header,
      async *pieces() {
        for await (const p of decoded.pieces()) {
          largestPiece = Math.max(largestPiece, p.bytes.byteLength);
          yield p;
        }
      },
    });
    assert.ok(largestPiece <= CHUNK, `a piece of ${largestPiece} bytes: tensors larger than a chunk must be split`);
    assert.deepEqual([...got.keys()], [...model.keys()]);
    for (const [name, t] of model) {
      const g = got.get(name)!;
      assert.equal(g.dtype, t.dtype, name);
      assert.deepEqual(g.shape, t.shape, name);
      assert.ok(Buffer.from(tensorBytes(g)).equals(tensorBytes(t)), `container mode: tensor ${name} differs`);
    }
  } else {
    const out = join(tmp, `received-${randomBytes(4).toString('hex')}.safetensors`);
    await writeStreamToFile(out, await decodeStream(payload, { chunkBytes: CHUNK }));
    assert.equal(sha(readFileSync(out)), sha(objectBytes), 'file mode: files differ');
    rmSync(out);
  }
  await sent;
}

/**
 * An in-memory link pair whose connection can be cut like a network's: after cut(), frames in
 * flight in both directions (data and acknowledgements) are lost for `lossMs`, then both ends close.
 */
function cuttablePair(txPeer: string, rxPeer: string): { tx: Link & { dataBytes: number }; rx: Link; cut(lossMs?: number): void } {
  const [a, b] = linkPair(txPeer, rxPeer);
  let cutting = false;
  const wrap = (l: Link): Link & { dataBytes: number } => {
    const w = {
      dataBytes: 0,
      peer: l.peer,
      closed: l.closed,
      send: async (f: Frame): Promise<void> => {
        if (cutting) return; // lost on the wire
        if (f.type === 'data') w.dataBytes += f.bytes.byteLength;
        return l.send(f);
      },
      frames: () => l.frames(),
      close: (r?: string) => l.close(r),
    };
    return w;
  };
  return {
    tx: wrap(a),
    rx: wrap(b),
    cut(lossMs = 20) {
      cutting = true;
      setTimeout(() => a.close('connection reset'), lossMs);
    },
  };
}

// ---- in memory ------------------------------------------------------------------------------

describe('streaming modes at 64 MiB, 64 KiB chunks (in-memory link)', () => {
  for (const mode of ['object', 'container', 'file'] as const) {
    test(`${mode} mode arrives bit-identical`, async () => {
      const [a, b] = linkPair('rx', 'tx');
      const tx = new Channel(a, OPTS);
      const rx = new Channel(b, OPTS);
      await transfer(big, mode, tx, rx, rx.messages()[Symbol.asyncIterator]());
      tx.close('done');
    });
  }
});

describe('resume after a dropped link (in-memory link)', () => {
  for (const mode of ['object', 'container', 'file'] as const) {
    test(`${mode} mode: the link is cut mid-transfer, a new one attached; the stream resumes, bit-identical, re-sending at most one window`, async () => {
      const links: ReturnType<typeof cuttablePair>[] = [cuttablePair('rx', 'tx')];
      const lost: string[] = [];
      // the receiving side accepts links; the sending side dials (mode file) or is handed one (the others)
      const rx = new Channel(links[0]!.rx, { ...OPTS, resume: { timeoutMs: 10_000 } });
      const dial = (): Link => {
        const p = cuttablePair('rx', 'tx');
        links.push(p);
        rx.attach(p.rx);
        return p.tx;
      };
      const tx = new Channel(links[0]!.tx, {
        ...OPTS,
        resume: { timeoutMs: 10_000, onLinkLost: (r) => lost.push(r), ...(mode === 'file' && { redial: dial }) },
      });
      let cutAt = 0;
      const total = big.bytes.byteLength;
      await transfer(big, mode, tx, rx, rx.messages()[Symbol.asyncIterator](), (n) => {
        if (cutAt === 0 && n > total * 0.4) {
          cutAt = n;
          links[0]!.cut();
          if (mode !== 'file') {
            // the dialling side is not told: the test reconnects both ends by hand, a little later
            setTimeout(() => {
              const p = cuttablePair('rx', 'tx');
              links.push(p);
              tx.attach(p.tx);
              rx.attach(p.rx);
            }, 60);
          }
        }
      });
      assert.ok(cutAt > 0);
      assert.equal(tx.stats.resumes, 1, 'one resume on the sending side');
      assert.equal(rx.stats.resumes, 1, 'one resume on the receiving side');
      assert.deepEqual(lost, ['connection reset']);
      const onWire = links.reduce((s, l) => s + l.tx.dataBytes, 0);
      const resent = onWire - total;
      assert.ok(resent >= 0 && resent <= WINDOW, `re-sent ${resent} bytes with a ${WINDOW}-byte window`);
      assert.ok(tx.stats.resentBytes <= WINDOW, `stats.resentBytes ${tx.stats.resentBytes}`);
      assert.ok(onWire >= total);
      tx.close('done');
    });
  }

  test('control messages sent while the link is down, or lost with it, arrive after the resume, in order, exactly once', async () => {
    const first = cuttablePair('b', 'a');
    const a = new Channel(first.tx, { resume: { timeoutMs: 5000 } });
    const b = new Channel(first.rx, { resume: { timeoutMs: 5000 } });
    const inbox = b.messages()[Symbol.asyncIterator]();
    await a.send({ n: 1 });
    assert.deepEqual((await nextValue(inbox)).msg, { n: 1 });
    first.cut(30);
    await a.send({ n: 2 }); // lost on the wire
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(a.isDetached, true);
    await a.send({ n: 3 }); // queued: no link
    const second = cuttablePair('b', 'a');
    b.attach(second.rx);
    a.attach(second.tx);
    await a.send({ n: 4 });
    const got = [];
    for (let i = 0; i < 3; i++) got.push((await nextValue(inbox)).msg);
    assert.deepEqual(got, [{ n: 2 }, { n: 3 }, { n: 4 }]);
    a.close('done');
    assert.equal((await inbox.next()).done, true, 'closing a resumable channel ends the peer at once');
  });

  test('a stream whose link does not come back fails after the resume timeout, on both ends', async () => {
    const p = cuttablePair('rx', 'tx');
    const tx = new Channel(p.tx, { chunkBytes: 1024, windowBytes: 8192, resume: { timeoutMs: 300 } });
    const rx = new Channel(p.rx, { resume: { timeoutMs: 300 } });
    const sending = tx.send({ type: 'x' }, once(new Uint8Array(1 << 20)));
    const env = await nextValue(rx.messages());
    const reading = collect(env.payload!);
    const t0 = Date.now();
    p.cut(0);
    await assert.rejects(sending, /no new link within 300 ms/);
    await assert.rejects(reading, /no new link within 300 ms/);
    const waited = Date.now() - t0;
    assert.ok(waited >= 250 && waited < 3000, `failed after ${waited} ms`);
  });

  test('a reconnection to a peer that no longer has the channel is refused at once, not waited out', async () => {
    const p = cuttablePair('b', 'a');
    let fresh: Channel | null = null;
    const a = new Channel(p.tx, {
      resume: {
        timeoutMs: 10_000,
        // the peer restarted: the new link reaches a new channel, which knows nothing of this one
        redial: () => {
          const [x, y] = linkPair('b', 'a');
          fresh = new Channel(y, { resume: true });
          return x;
        },
      },
    });
    const b = new Channel(p.rx, { resume: true });
    const t0 = Date.now();
    const inbox = a.messages()[Symbol.asyncIterator]();
    p.cut(0);
    assert.equal((await inbox.next()).done, true);
    assert.ok(Date.now() - t0 < 2000, `gave up after ${Date.now() - t0} ms`);
    assert.match(a.closeReason ?? '', /cannot resume/);
    assert.equal(fresh!.isClosed, true);
    b.close('test over'); // it was waiting for a link of its own
  });

  test('while the link is down the sender waits: nothing is queued, and the window still bounds what is in flight after the resume', async () => {
    const p = cuttablePair('rx', 'tx');
    const tx = new Channel(p.tx, { chunkBytes: 4096, windowBytes: 32_768, resume: { timeoutMs: 5000 } });
    const rx = new Channel(p.rx, { resume: { timeoutMs: 5000 } });
    const data = randomBytes(1 << 20);
    const sending = tx.send({ type: 'x' }, once(data));
    const env = await nextValue(rx.messages());
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(p.tx.dataBytes <= 32_768, `${p.tx.dataBytes} bytes in flight before anything was read`);
    p.cut(0);
    await new Promise((r) => setTimeout(r, 100));
    const q = cuttablePair('rx', 'tx');
    rx.attach(q.rx);
    tx.attach(q.tx);
    await new Promise((r) => setTimeout(r, 100));
    // nobody reads yet: after the resume, still at most a window in flight
    assert.ok(q.tx.dataBytes <= 32_768, `${q.tx.dataBytes} bytes sent over the new link before anything was read`);
    assert.ok((await collect(env.payload!)).equals(data));
    await sending;
  });

  test('bytes consumed but not yet acknowledged when the link drops are acknowledged once, by the resume: two cuts in a row still resume', async () => {
    // chunks far smaller than the ack step (an eighth of the window), so a cut finds bytes consumed and not yet acknowledged
    const opts = { chunkBytes: 1024, windowBytes: 65_536, resume: { timeoutMs: 5000 } };
    let p = cuttablePair('rx', 'tx');
    const tx = new Channel(p.tx, opts);
    const rx = new Channel(p.rx, opts);
    const data = randomBytes(256 << 10);
    const sending = tx.send({ type: 'x' }, once(data));
    const env = await nextValue(rx.messages());
    const chunks = env.payload![Symbol.asyncIterator]();
    const got: Buffer[] = [];
    const read = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        const r = await chunks.next();
        if (r.done) return;
        got.push(Buffer.from(r.value));
      }
    };
    for (let cut = 0; cut < 3; cut++) {
      await read(3); // 3 KiB consumed past the last acknowledgement
      p.cut(0);
      await new Promise((r) => setTimeout(r, 50));
      p = cuttablePair('rx', 'tx');
      rx.attach(p.rx);
      tx.attach(p.tx);
      await new Promise((r) => setTimeout(r, 50));
    }
    await read(Number.MAX_SAFE_INTEGER);
    await sending;
    assert.ok(Buffer.concat(got).equals(data), 'the payload arrives whole after three resumes');
    assert.equal(tx.stats.resumes, 3);
    tx.close('done');
  });

  test('a corrupted chunk after a resume is still caught by its hash and sent again', async () => {
    const p = cuttablePair('rx', 'tx');
    const tx = new Channel(p.tx, { chunkBytes: 1000, windowBytes: 8000, resume: { timeoutMs: 5000 } });
    const rx = new Channel(p.rx, { resume: { timeoutMs: 5000 } });
    const data = randomBytes(200_000);
    const sending = tx.send({ type: 'x' }, once(data));
    const env = await nextValue(rx.messages());
    let n = 0;
    let corrupted = 0;
    const got: Uint8Array[] = [];
    for await (const c of env.payload!) {
      got.push(c.slice());
      n += c.byteLength;
      if (n >= 50_000 && corrupted === 0) {
        corrupted = 1;
        p.cut(5);
        setTimeout(() => {
          const [a, b] = linkPair('rx', 'tx');
          let i = 0;
          const bad: Link = {
            peer: a.peer,
            closed: a.closed,
            send: (f: Frame) => {
              if (f.type === 'data' && f.bytes.byteLength > 0 && i++ === 5) {
                const flipped = new Uint8Array(f.bytes); // a copy (Buffer#slice would be a view)
                flipped[0]! ^= 1;
                return a.send({ ...f, bytes: flipped });
              }
              return a.send(f);
            },
            frames: () => a.frames(),
            close: (r?: string) => a.close(r),
          };
          rx.attach(b);
          tx.attach(bad);
        }, 30);
      }
    }
    assert.ok(Buffer.concat(got).equals(data));
    await sending;
  });
});

// ---- over gRPC with mutual TLS on loopback -------------------------------------------------

// the same over both transports of a deployment: gRPC (control plane, and payloads when no data
// plane is set up) and the data plane (src/transport/tls: mutual TLS with the lean framing)
for (const kind of ['gRPC', 'the TLS data plane'] as const)
  describe(`over ${kind} with mutual TLS on loopback (8 MiB model, 64 KiB chunks)`, () => {
    let server: { close(graceMs?: number): Promise<void> };
    let client: GrpcClient | null = null;
    let dial: (channelId: string) => Promise<Link>;
    let proxy: FaultProxy;
    const serverChannels = new Map<string, Channel>();
    const serverSent = new Map<string, number>();
    const fresh: ((c: Channel) => void)[] = [];

    before(async () => {
      const ca = await createCA('streaming-test', 1);
      const notAfter = new Date(Date.now() + 86_400_000);
      const srv = await issueCert(ca, {
        subject: { cn: 'server', org: 'test', ou: 'server' },
        hosts: ['localhost', '127.0.0.1'],
        notAfter,
      });
      const cli = await issueCert(ca, { subject: { cn: 'site-1', org: 'test', ou: 'client' }, notAfter });
      // what a server does with resumable channels: a reconnection names its channel, which gets the new link
      const onConnect = (inner: Link, peer: PeerIdentity, info: ConnectInfo): string | null => {
        assert.equal(peer.name, 'site-1');
        const id = info.channelId ?? 'none';
        // count the payload bytes the server's channel hands to its links, per channel
        const link: Link = {
          peer: inner.peer,
          closed: inner.closed,
          send: (f: Frame) => {
            if (f.type === 'data') serverSent.set(id, (serverSent.get(id) ?? 0) + f.bytes.byteLength);
            return inner.send(f);
          },
          frames: () => inner.frames(),
          close: (r?: string) => inner.close(r),
        };
        const known = serverChannels.get(id);
        if (known && !known.isClosed) {
          known.attach(link);
          return null;
        }
        const ch = new Channel(link, { ...OPTS, resume: { timeoutMs: 15_000 } });
        serverChannels.set(id, ch);
        fresh.shift()?.(ch);
        return null;
      };
      const keys = { caPem: ca.certPem, certPem: srv.certPem, keyPem: srv.keyPem };
      proxy = new FaultProxy();
      const at = { host: '127.0.0.1', serverName: 'localhost', caPem: ca.certPem, certPem: cli.certPem, keyPem: cli.keyPem };
      if (kind === 'gRPC') {
        const grpc = new GrpcServer({
          host: '127.0.0.1',
          port: 0,
          ...keys,
          handlers: { onConnect, onAdmin: async () => ({ ok: false, json: '"no admin here"', blob: new Uint8Array(0) }) },
        });
        server = grpc;
        await proxy.start(await grpc.start());
        const c = new GrpcClient({ ...at, port: proxy.port });
        client = c;
        await c.ready(10_000);
        dial = async (channelId) => c.connect({ 'x-flotilla-purpose': 'session', 'x-flotilla-channel': channelId });
      } else {
        const data = new TlsDataServer({ host: '127.0.0.1', port: 0, ...keys, onConnect });
        server = data;
        await proxy.start(await data.start());
        dial = (channelId) => dialTls({ ...at, port: proxy.port }, { purpose: 'session', jobId: null, channelId });
      }
    });

    after(async () => {
      for (const c of serverChannels.values()) c.close('test over');
      client?.close();
      await proxy?.close();
      await server?.close(500);
    });

    /** A resumable client channel and the server's channel for it. */
    const resumes: { resentBytes: number; seconds: number }[] = [];
    async function pair(): Promise<{
      clientCh: Channel;
      serverCh: Channel;
      atServer: AsyncIterator<Envelope>;
      sentByServer: () => number;
    }> {
      const channelId = randomBytes(12).toString('hex');
      const serverCh = new Promise<Channel>((r) => fresh.push(r));
      const clientCh = new Channel(await dial(channelId), {
        ...OPTS,
        resume: { timeoutMs: 15_000, minDelayMs: 50, maxDelayMs: 500, redial: () => dial(channelId), onResumed: (r) => resumes.push(r) },
      });
      await clientCh.send({ type: 'hello' });
      const s = await serverCh;
      const atServer = s.messages()[Symbol.asyncIterator]();
      const env = await nextValue(atServer);
      assert.equal(env.msg.type, 'hello');
      return { clientCh, serverCh: s, atServer, sentByServer: () => serverSent.get(channelId) ?? 0 };
    }

    test('object, container and file modes arrive bit-identical in both directions', async () => {
      const { clientCh, serverCh, atServer } = await pair();
      const atClient = clientCh.messages()[Symbol.asyncIterator]();
      await transfer(small, 'object', serverCh, clientCh, atClient);
      await transfer(small, 'container', clientCh, serverCh, atServer);
      await transfer(small, 'file', serverCh, clientCh, atClient);
      clientCh.close('done');
    });

    test('a client that stops reading makes the server wait at the window, not buffer', async () => {
      const { clientCh, serverCh, sentByServer } = await pair();
      let done = false;
      const sending = serverCh.send({ type: 'model' }, once(small.bytes)).then(() => (done = true));
      const env = await nextValue(clientCh.messages());
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(done, false);
      assert.ok(
        sentByServer() <= WINDOW,
        `the server handed ${sentByServer()} bytes to gRPC with a ${WINDOW}-byte window and nothing read`,
      );
      assert.ok((await collect(env.payload!)).equals(small.bytes));
      await sending;
      clientCh.close('done');
    });

    test('a connection cut mid-transfer: the client redials, the server hands the channel the new call, the stream resumes bit-identical re-sending at most one window', async (t) => {
      const { clientCh, serverCh, atServer } = await pair();
      const cutsBefore = proxy.cuts;
      let cut = false;
      const total = small.bytes.byteLength;
      // client → server: a result streams back, container mode
      await transfer(small, 'container', clientCh, serverCh, atServer, (n) => {
        if (!cut && n > total * 0.3) {
          cut = true;
          proxy.cut();
        }
      });
      assert.equal(proxy.cuts, cutsBefore + 1);
      assert.ok(clientCh.stats.resumes >= 1, 'the client channel resumed');
      assert.ok(serverCh.stats.resumes >= 1, 'the server channel resumed');
      t.diagnostic(`resumes (client side): ${JSON.stringify(resumes)}; server side re-sent ${serverCh.stats.resentBytes} bytes`);
      assert.ok(
        clientCh.stats.resentBytes <= WINDOW * clientCh.stats.resumes,
        `re-sent ${clientCh.stats.resentBytes} bytes in ${clientCh.stats.resumes} resumes with a ${WINDOW}-byte window`,
      );
      clientCh.close('done');
    });
  });
