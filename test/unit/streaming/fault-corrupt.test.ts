// Corruption beneath the channel. Over mutual TLS a flipped byte never reaches the channel (TLS
// refuses the record and the connection drops: that is the cut case), so the bytes are flipped
// on the link itself, below the channel: every k-th data frame gets one bit flipped, at a random
// offset. Checked: the received payload equals the sent one byte for byte (0 corrupted bytes
// accepted: each piece is checked against its prefix hash before the consumer sees it, and a bad
// one is asked for again), and the corruptions really happened. A slow link (every frame delayed)
// still delivers exactly.
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { test } from 'node:test';
import { Channel } from '../../../src/streaming/index.ts';
import { linkPair } from '../../../src/transport/in-memory.ts';
import type { Frame, Link } from '../../../src/transport/link.ts';
import { nextValue } from '../../helpers/next.ts';

async function* once(b: Uint8Array): AsyncGenerator<Uint8Array> {
  yield b;
}

/** A link that alters data frames on their way out: `mangle` returns the frame to send (or the same one). */
function mangled(a: Link, mangle: (f: Frame) => Frame | Promise<Frame>): Link {
  return {
    peer: a.peer,
    closed: a.closed,
    send: async (f: Frame) => a.send(await mangle(f)),
    frames: () => a.frames(),
    close: (r?: string) => a.close(r),
  };
}

async function receiveAll(rx: Channel): Promise<Buffer> {
  const env = await nextValue(rx.messages());
  const got: Uint8Array[] = [];
  for await (const c of env.payload!) got.push(c.slice());
  return Buffer.concat(got);
}

test('every 7th data frame corrupted on the link: the payload arrives exactly, 0 corrupted bytes accepted', async (t) => {
  const [a, b] = linkPair('rx', 'tx');
  let dataFrames = 0;
  let flipped = 0;
  const bad = mangled(a, (f) => {
    if (f.type !== 'data' || f.bytes.byteLength === 0 || ++dataFrames % 7 !== 0) return f;
    const copy = new Uint8Array(f.bytes); // a copy: the sender keeps the original for a resend
    copy[randomInt(copy.byteLength)]! ^= 1 << randomInt(8);
    flipped++;
    return { ...f, bytes: copy };
  });
  const tx = new Channel(bad, { chunkBytes: 1000, windowBytes: 8000 });
  const rx = new Channel(b, {});
  const data = randomBytes(300_000);
  const sending = tx.send({ type: 'x' }, once(data));
  const got = await receiveAll(rx);
  await sending;
  t.diagnostic(
    JSON.stringify({ bytes: data.byteLength, dataFrames, corruptedFrames: flipped, corruptedBytesAccepted: got.equals(data) ? 0 : -1 }),
  );
  assert.ok(flipped >= 30, `only ${flipped} frames corrupted`);
  assert.equal(got.byteLength, data.byteLength);
  assert.ok(got.equals(data), 'corrupted bytes reached the consumer');
  tx.close('done');
  rx.close('done');
});

test('a slow link (every frame delayed 2 ms) delivers the payload exactly', async () => {
  const [a, b] = linkPair('rx', 'tx');
  const slow = mangled(a, async (f) => {
    await new Promise((r) => setTimeout(r, 2));
    return f;
  });
  const tx = new Channel(slow, { chunkBytes: 4000, windowBytes: 16000 });
  const rx = new Channel(b, {});
  const data = randomBytes(200_000);
  const sending = tx.send({ type: 'x' }, once(data));
  assert.ok((await receiveAll(rx)).equals(data));
  await sending;
  tx.close('done');
  rx.close('done');
});
