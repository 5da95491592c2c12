/**
 * Per-chunk CPU cost of each layer a 1 MiB payload chunk goes through in
 * bench/streaming (what the Channel and the gRPC wire add on top of TLS).
 * One process, no I/O; prints one JSON object: CPU ms per MiB and GB/s of
 * each step.
 *
 *   node --conditions=flotilla-source --import tsx bench/streaming/layers.ts [--mib 512]
 */
import { crc32 } from 'node:zlib';
import { createCRC32, createXXHash64 } from 'hash-wasm';
import { FEDERATION_CONNECT, decodeGrpcFrame, encodeGrpcFrame } from '../../src/transport/grpc/wire.ts';
import { FrameDecoder, encodeFrame } from '../../src/transport/codec.ts';
import { flags, num } from './common.ts';
import { ModelBytes } from './model.ts';

const f = flags(process.argv.slice(2), { mib: '512' });
const n = num(f.mib, '--mib');
const MIB = 1 << 20;
const buf = new Uint8Array(MIB);
new ModelBytes(1).fill(buf, 0);

const steps: Record<string, { cpuMsPerMiB: number; GBps: number }> = {};
function step(name: string, fn: () => void): void {
  for (let i = 0; i < 8; i++) fn(); // warm up
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) fn();
  const ms = performance.now() - t0;
  const c = process.cpuUsage(c0);
  steps[name] = {
    cpuMsPerMiB: Math.round(((c.user + c.system) / 1e3 / n) * 1000) / 1000,
    GBps: Math.round(((n * MIB) / 1e9 / (ms / 1000)) * 100) / 100,
  };
}

step('crc32 (node:zlib, what the Channel used per chunk before the prefix hash)', () => crc32(buf));
const wcrc = await createCRC32();
step('crc32 (hash-wasm)', () => (wcrc.init(), wcrc.update(buf), wcrc.digest('binary')));
const xx = await createXXHash64();
xx.init();
step('xxhash64 (hash-wasm, running hash)', () => xx.update(buf));
const state = xx.save();
step('xxhash64 prefix hash (Channel per chunk: load, update, save, digest)', () => {
  xx.load(state);
  xx.update(buf);
  xx.save();
  xx.digest('hex');
});
step('new 1 MiB buffer + copy', () => new Uint8Array(MIB).set(buf));
const dst = new Uint8Array(MIB);
step('copy into a reused buffer', () => dst.set(buf));
const frame = { type: 'data' as const, stream: 1, bytes: buf, last: false, offset: 123456789, hash: '0123456789abcdef' };
const wire = encodeGrpcFrame(frame);
step('gRPC Frame message serialize (codec bytes in one buffer: one copy)', () => encodeGrpcFrame(frame));
step('gRPC Frame message deserialize (a view)', () => decodeGrpcFrame(wire));
step('data plane encodeFrame (header only; the chunk is written as is)', () => encodeFrame(frame));
const tlsWire = Buffer.concat(encodeFrame(frame));
const reads = Array.from({ length: Math.ceil(tlsWire.byteLength / 16384) }, (_, i) => tlsWire.subarray(i * 16384, (i + 1) * 16384));
step('data plane FrameDecoder (1 MiB chunk from 16 KiB TLS reads: one copy)', () => {
  const d = new FrameDecoder();
  for (const r of reads) d.push(r);
});
const decoded = decodeGrpcFrame(wire);

console.log(
  JSON.stringify(
    {
      bench: 'streaming-layers',
      chunkBytes: MIB,
      chunks: n,
      method: FEDERATION_CONNECT,
      steps,
      // where a data frame's bytes start inside the received message (typed views align themselves)
      decodedBytesOffsetInMessage: typeof decoded === 'object' && decoded.type === 'data' ? decoded.bytes.byteOffset : null,
      node: process.version,
    },
    null,
    2,
  ),
);
