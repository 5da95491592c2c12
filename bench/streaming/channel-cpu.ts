/**
 * CPU of the Channel alone: one payload of --mib MiB (1 MiB pieces) through a Channel over an
 * in-memory link pair, hashed and checked on both ends, in one process (no sockets, no TLS), so
 * a change to src/streaming can be compared on a busy machine. Prints one JSON object.
 *
 *   node --import tsx bench/streaming/channel-cpu.ts [--mib 512]
 */
import { Channel, type Envelope } from '../../src/streaming/index.ts';
import { linkPair } from '../../src/transport/in-memory.ts';
import { commitFacts } from '../commit.ts';
import { flags, num } from './common.ts';

const f = flags(process.argv.slice(2), { mib: '512' });
const n = num(f.mib, '--mib');
const [a, b] = linkPair('b', 'a');
const tx = new Channel(a);
const rx = new Channel(b);
const piece = new Uint8Array(1 << 20).map((_, i) => i & 255);
const c0 = process.cpuUsage();
const t0 = performance.now();
const sent = tx.send(
  { type: 'model' },
  (async function* () {
    for (let i = 0; i < n; i++) yield piece;
  })(),
  { totalBytes: n << 20 },
);
const first = await rx.messages()[Symbol.asyncIterator]().next();
if (first.done) throw new Error('the channel closed before the payload arrived');
const env: Envelope = first.value;
let bytes = 0;
for await (const c of env.payload!) bytes += c.byteLength;
await sent;
const c = process.cpuUsage(c0);
console.log(
  JSON.stringify({
    bench: 'streaming-channel-cpu',
    ...commitFacts(),
    bytes,
    cpuSeconds: +((c.user + c.system) / 1e6).toFixed(3),
    wallSeconds: +((performance.now() - t0) / 1000).toFixed(3),
    node: process.version,
  }),
);
tx.close('done');
rx.close('done');
