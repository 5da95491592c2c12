// A peer that announces a stream id again while that stream is open (a protocol violation: an honest
// sender numbers its streams afresh) fails the first stream at once, naming the reason, instead of
// leaving its consumer to wait out the stall timeout; the id's frames then go to the new stream.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Frame } from '../../../src/transport/link.ts';
import { StreamTable } from '../../../src/streaming/streams.ts';

test('a stream id announced again fails the open stream at once; the id then names the new one', async () => {
  const posted: Frame[] = [];
  const table = new StreamTable(
    {
      peer: 'rogue',
      resumable: false,
      closedReason: () => null,
      attached: () => true,
      interrupted: () => false,
      send: async (f) => void posted.push(f),
      post: (f) => void posted.push(f),
    },
    { chunkBytes: 1024, windowBytes: 1 << 20, maxWindowBytes: 1 << 20, stallTimeoutMs: 300_000, holdTimeoutMs: 3_600_000 },
  );
  const first = table.openIncoming({ id: 7, window: 1 << 20 });
  const firstRead = (async () => {
    for await (const _ of first) {
      /* nothing arrives */
    }
  })();
  const t0 = performance.now();
  const second = table.openIncoming({ id: 7, window: 1 << 20 });
  await assert.rejects(firstRead, /announced stream 7 again while it was open/);
  assert.ok(performance.now() - t0 < 1000, 'failed at once, not after the 300 s stall timeout');
  assert.notEqual(second, first);
  // the id's frames now go to the second stream: the peer's cancel ends it with the peer's reason
  const secondRead = (async () => {
    for await (const _ of second) {
      /* nothing arrives */
    }
  })();
  table.onFrame({ type: 'cancel', stream: 7, reason: 'sender gave up' });
  await assert.rejects(secondRead, /sender gave up/);
  table.closeAll('test over');
});
