// The sender's stall timer against a receiver that is alive but busy, and one that is gone. A
// receiver holding bytes its consumer has not taken sends keepalives (zero-byte acks), so a consumer
// that starts late or pauses longer than the stall timeout, while the receiver's side keeps
// heartbeating, gets the whole payload; a receiver that sends nothing fails the transfer after the
// stall timeout, and a payload nobody reads fails it after the receiver's hold timeout.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Channel, StallError } from '../../../src/streaming/index.ts';
import { linkPair } from '../../../src/transport/in-memory.ts';
import type { Frame, Link } from '../../../src/transport/link.ts';
import { nextValue } from '../../helpers/next.ts';

const STALL_MS = 200;

function bytes(n: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 31 + 7) & 0xff);
}

async function* chunks(b: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let o = 0; o < b.byteLength; o += size) yield b.subarray(o, o + size);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A link whose outgoing frames vanish once `cut` is set: a receiver frozen or behind a dead network, as its sender sees it. */
function blackHole(link: Link): Link & { cut: boolean } {
  const w = {
    cut: false,
    peer: link.peer,
    closed: link.closed,
    send: (f: Frame) => (w.cut ? Promise.resolve() : link.send(f)),
    frames: () => link.frames(),
    close: (r?: string) => link.close(r),
  };
  return w;
}

test('a consumer that starts late and pauses longer than the stall timeout, its side heartbeating, gets the whole payload', async () => {
  const [a, b] = linkPair('b', 'a');
  const sender = new Channel(a, { chunkBytes: 1024, windowBytes: 4096, stallTimeoutMs: STALL_MS });
  const receiver = new Channel(b, { chunkBytes: 1024, windowBytes: 4096, stallTimeoutMs: STALL_MS });
  const data = bytes(40_000);
  const t0 = performance.now();
  let settled = false;
  const sent = sender.send({ type: 'task' }, chunks(data, 1024)).finally(() => (settled = true));
  const env = await nextValue(receiver.messages());
  // the receiver's application is alive: it sends heartbeats all along, while it leaves the payload alone
  const beats = setInterval(() => void receiver.send({ type: 'heartbeat' }).catch(() => undefined), 50);
  try {
    await sleep(STALL_MS * 5); // busy with something else before it reads
    assert.equal(settled, false, 'the transfer waits for the busy consumer');
    const parts: Uint8Array[] = [];
    for await (const c of env.payload!) {
      parts.push(c.slice());
      if (parts.length === 4) await sleep(STALL_MS * 5); // and pauses half-way
    }
    await sent;
    assert.deepEqual(Buffer.concat(parts), Buffer.from(data));
    assert.ok(performance.now() - t0 >= STALL_MS * 10, 'the pauses were ten stall timeouts in all');
  } finally {
    clearInterval(beats);
    sender.close('test over');
    receiver.close('test over');
  }
});

test('a receiver that sends nothing more fails the transfer after the stall timeout, even while it holds bytes', async () => {
  const [a, raw] = linkPair('b', 'a');
  const b = blackHole(raw);
  const sender = new Channel(a, { chunkBytes: 1024, windowBytes: 4096, stallTimeoutMs: STALL_MS });
  const receiver = new Channel(b, { stallTimeoutMs: STALL_MS });
  const sent = sender.send({ type: 'task' }, chunks(bytes(40_000), 1024));
  const env = await nextValue(receiver.messages());
  const it = env.payload![Symbol.asyncIterator]();
  await it.next(); // it was reading, then froze: no ack, no keepalive reaches the sender
  b.cut = true;
  const t0 = performance.now();
  await assert.rejects(sent, (e) => e instanceof StallError && /stalled: no acknowledgement for 200 ms/.test(e.message));
  const ms = performance.now() - t0;
  assert.ok(ms < STALL_MS + 1500, `failed ${ms.toFixed(0)} ms after the receiver went silent`);
  sender.close('test over');
  receiver.close('test over');
});

test("a payload nobody reads fails the sender's transfer after the receiver's hold timeout", async () => {
  const [a, b] = linkPair('b', 'a');
  const sender = new Channel(a, { chunkBytes: 1024, windowBytes: 4096, stallTimeoutMs: STALL_MS });
  const receiver = new Channel(b, { stallTimeoutMs: STALL_MS, holdTimeoutMs: 600 });
  const t0 = performance.now();
  const sent = sender.send({ type: 'never read' }, chunks(bytes(40_000), 1024));
  await nextValue(receiver.messages());
  await assert.rejects(sent, (e) => e instanceof StallError && /stalled/.test(e.message));
  const ms = performance.now() - t0;
  assert.ok(ms >= 600 && ms < 600 + STALL_MS + 1500, `failed after ${ms.toFixed(0)} ms (hold 600 ms, stall ${STALL_MS} ms)`);
  sender.close('test over');
  receiver.close('test over');
});
