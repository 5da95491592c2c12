import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  Channel,
  ChannelClosedError,
  CorruptStreamError,
  MalformedMessageError,
  StallError,
  StreamCancelledError,
  type TransferProgress,
  etaSeconds,
} from '../../../src/streaming/index.ts';
import { linkPair } from '../../../src/transport/in-memory.ts';
import type { Frame, Link } from '../../../src/transport/link.ts';
import { nextValue } from '../../helpers/next.ts';

function bytes(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

async function* chunks(b: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let o = 0; o < b.byteLength; o += size) yield b.subarray(o, o + size);
}

async function collect(p: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of p) parts.push(c.slice());
  return Buffer.concat(parts);
}

/** Wraps a link to count the payload bytes the sender has put on it. */
function counting(link: Link): Link & { dataBytes: number } {
  const w = {
    dataBytes: 0,
    peer: link.peer,
    closed: link.closed,
    send: (f: Frame) => {
      if (f.type === 'data') w.dataBytes += f.bytes.byteLength;
      return link.send(f);
    },
    frames: () => link.frames(),
    close: (r?: string) => link.close(r),
  };
  return w;
}

test('a payload crosses the channel bit-identical, in chunks no larger than chunkBytes', async () => {
  const [a, b] = linkPair('b', 'a');
  const sender = new Channel(a, { chunkBytes: 1000, windowBytes: 8000 });
  const receiver = new Channel(b, { chunkBytes: 1000, windowBytes: 8000 });
  const data = bytes(123_457);
  const sent = sender.send({ type: 'x', n: 1 }, chunks(data, 4096));
  const it = receiver.messages()[Symbol.asyncIterator]();
  const env = await nextValue(it);
  assert.deepEqual(env.msg, { type: 'x', n: 1 });
  let maxChunk = 0;
  const parts: Uint8Array[] = [];
  for await (const c of env.payload!) {
    maxChunk = Math.max(maxChunk, c.byteLength);
    parts.push(c.slice());
  }
  await sent;
  assert.ok(maxChunk <= 1000, `chunk of ${maxChunk} bytes`);
  assert.deepEqual(Buffer.concat(parts), Buffer.from(data));
});

test('an announced size reaches both ends: progress reports carry it, the ETA follows from it, the message stays clean', async () => {
  const [a, b] = linkPair('b', 'a');
  const seen: TransferProgress[] = [];
  const sender = new Channel(a, { chunkBytes: 1000, onTransfer: (t) => seen.push(t) });
  const receiver = new Channel(b, { chunkBytes: 1000, onTransfer: (t) => seen.push(t) });
  const data = bytes(20_000);
  const sent = sender.send({ type: 'model' }, chunks(data, 4096), { totalBytes: data.byteLength });
  const env = await nextValue(receiver.messages());
  assert.deepEqual(env.msg, { type: 'model' }, "the size field is the channel's, not the application's");
  assert.deepEqual(await collect(env.payload!), Buffer.from(data));
  await sent;
  for (const dir of ['send', 'receive'] as const) {
    const end = seen.find((t) => t.direction === dir && t.done);
    assert.ok(end, `a final ${dir} report`);
    assert.equal(end.total, data.byteLength);
    assert.equal(end.bytes, data.byteLength);
    assert.equal(etaSeconds(end), 0);
  }
  assert.equal(etaSeconds({ bytes: 250, total: 1000, seconds: 1 }), 3, 'a quarter done in 1 s: 3 s to go');
  assert.equal(etaSeconds({ bytes: 250, seconds: 1 }), undefined, 'no size, no ETA');
});

test('a receiver that stops reading makes the sender wait at the window, not buffer', async () => {
  const [a, b] = linkPair('b', 'a');
  const counted = counting(a);
  const sender = new Channel(counted, { chunkBytes: 4096, windowBytes: 32_768 });
  const receiver = new Channel(b);
  const data = bytes(1 << 20);
  let finished = false;
  const sent = sender.send({ type: 'big' }, chunks(data, 65536)).then(() => (finished = true));
  const it = receiver.messages()[Symbol.asyncIterator]();
  const env = await nextValue(it);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(finished, false);
  assert.ok(counted.dataBytes <= 32_768, `sender put ${counted.dataBytes} bytes in flight with a 32 KiB window`);
  assert.deepEqual(await collect(env.payload!), Buffer.from(data));
  await sent;
  assert.equal(finished, true);
});

test('a stalled transfer fails after the stall timeout; a cancelled one fails at once', async () => {
  const [a, b] = linkPair('b', 'a');
  const sender = new Channel(a, { chunkBytes: 1024, windowBytes: 4096, stallTimeoutMs: 150 });
  // no hold: a payload left unread is not kept alive at the sender (stall-keepalive.test.ts has the hold)
  const receiver = new Channel(b, { holdTimeoutMs: 0 });
  const it = receiver.messages()[Symbol.asyncIterator]();
  const started = Date.now();
  const p1 = sender.send({ type: 'never read' }, chunks(bytes(100_000), 1024));
  await it.next();
  await assert.rejects(p1, (e) => e instanceof StallError && /stalled/.test(e.message));
  assert.ok(Date.now() - started < 2000);

  const p2 = sender.send({ type: 'cancel me' }, chunks(bytes(100_000), 1024));
  const env = await nextValue(it);
  env.payload!.cancel('not wanted');
  await assert.rejects(p2, (e) => e instanceof StreamCancelledError && e.by === 'peer' && e.reason === 'not wanted');
});

test('malformed control frames are reported as typed errors, never delivered, and the channel keeps working', async () => {
  const [a, b] = linkPair('b', 'a');
  const malformed: MalformedMessageError[] = [];
  const receiver = new Channel(b, { onMalformed: (e) => malformed.push(e) });
  await a.send({ type: 'control', json: '{not json' });
  await a.send({ type: 'control', json: '[1,2]' });
  await a.send({ type: 'control', json: JSON.stringify({ type: 'bare', __stream: 1 }) });
  const sender = new Channel(a);
  await sender.send({ type: 'fine', __stream: 'the application may use any key' });
  const got: unknown[] = [];
  for await (const env of receiver.messages()) {
    got.push(env.msg);
    break;
  }
  assert.deepEqual(got, [{ type: 'fine', __stream: 'the application may use any key' }]);
  assert.equal(malformed.length, 3);
  for (const e of malformed) assert.ok(e instanceof MalformedMessageError && e.peer === 'a');
  assert.match(malformed[0]!.message, /not JSON/);
});

test('closing the link fails an unfinished payload on the receiving side', async () => {
  const [a, b] = linkPair('b', 'a');
  const sender = new Channel(a, { chunkBytes: 1024, windowBytes: 2048 });
  const receiver = new Channel(b);
  async function* slow(): AsyncGenerator<Uint8Array> {
    for (let i = 0; i < 100; i++) {
      await new Promise((r) => setTimeout(r, 5));
      yield bytes(1024);
    }
  }
  void sender.send({ type: 'x' }, slow()).catch(() => undefined);
  const env = await nextValue(receiver.messages());
  const reading = collect(env.payload!);
  setTimeout(() => a.close('network down'), 20);
  await assert.rejects(reading, (e) => e instanceof ChannelClosedError && e.reason === 'network down');
});

/** Flips a bit in the n-th data frame's bytes (on a copy), like a faulty network or disk would. */
function corrupting(link: Link, which: (f: Extract<Frame, { type: 'data' }>, i: number) => boolean, digest = false): Link {
  let i = 0;
  return {
    peer: link.peer,
    closed: link.closed,
    send: (f: Frame) => {
      if (f.type === 'data' && f.bytes.byteLength > 0 && which(f, i++)) {
        const bad = f.bytes.slice();
        bad[bad.length >> 1]! ^= 0x10;
        return link.send({ ...f, bytes: bad });
      }
      if (digest && f.type === 'data' && f.last && f.digest) return link.send({ ...f, digest: '0'.repeat(16) });
      return link.send(f);
    },
    frames: () => link.frames(),
    close: (r?: string) => link.close(r),
  };
}

test('a corrupted chunk is detected by its hash and sent again: the payload arrives bit-identical', async () => {
  const [a, b] = linkPair('b', 'a');
  const sender = new Channel(
    corrupting(a, (_f, i) => i === 3 || i === 7),
    { chunkBytes: 1000, windowBytes: 5000 },
  );
  const receiver = new Channel(b);
  const data = bytes(50_000, 9);
  const sent = sender.send({ type: 'x' }, chunks(data, 3000));
  const env = await nextValue(receiver.messages());
  assert.deepEqual(await collect(env.payload!), Buffer.from(data));
  await sent;
});

test('a stream whose whole-object hash does not match fails instead of passing bad data on', async () => {
  const [a, b] = linkPair('b', 'a');
  const sender = new Channel(corrupting(a, () => false, true));
  const receiver = new Channel(b);
  void sender.send({ type: 'x' }, chunks(bytes(10_000), 1000)).catch(() => undefined);
  const env = await nextValue(receiver.messages());
  await assert.rejects(collect(env.payload!), (e) => e instanceof CorruptStreamError && /is corrupt: xxhash64/.test(e.message));
});

test('a sender that ignores flow control gets its stream cancelled, not queued without bound', async () => {
  const [raw, b] = linkPair('b', 'a');
  const receiver = new Channel(b, { chunkBytes: 1000, windowBytes: 4000 });
  const inbox = receiver.messages()[Symbol.asyncIterator]();
  // a peer speaking the frames by hand: it announces a 4,000-byte window, then never waits for an ack
  await raw.send({ type: 'control', json: JSON.stringify({ msg: { type: 'model' }, stream: { id: 1, window: 4000 } }) });
  const env = await nextValue(inbox);
  assert.deepEqual(env.msg, { type: 'model' }, 'the stream header travels beside the message');
  const cancels: string[] = [];
  void (async () => {
    for await (const f of raw.frames()) if (f.type === 'cancel') cancels.push(f.reason);
  })();
  const piece = new Uint8Array(1 << 20);
  // window 4,000 + one piece of up to 16 MiB: the 17th MiB unconsumed is over the line
  for (let i = 0; i < 18; i++) await raw.send({ type: 'data', stream: 1, offset: i * piece.byteLength, bytes: piece, last: false });
  // nothing read yet: let the receiving channel take the frames off the link
  await new Promise((r) => setTimeout(r, 20));
  await assert.rejects(collect(env.payload!), /sender ignored flow control: 17825792 bytes unconsumed, at most 16781216 allowed/);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(cancels.length, 1);
  assert.match(cancels[0]!, /ignored flow control/);
  receiver.close('done');
});

test('a sender keeping to its window is never cut off, even with pieces larger than the window', async () => {
  const [a, b] = linkPair('b', 'a');
  const sender = new Channel(a, { chunkBytes: 1 << 20, windowBytes: 1000 });
  const receiver = new Channel(b, { windowBytes: 1000 });
  const data = bytes(5 << 20, 7);
  const sent = sender.send({ type: 'model' }, chunks(data, 1 << 20));
  const env = await nextValue(receiver.messages());
  assert.ok(Buffer.from(await collect(env.payload!)).equals(data));
  await sent;
  sender.close('done');
});
