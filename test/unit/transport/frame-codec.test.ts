// The one frame codec (src/transport/codec.ts): it decodes whatever reads cut a byte stream into,
// refuses malformed frames without throwing, and is what a gRPC Frame message carries (its
// protobuf wrapper, written and read by grpc/wire.ts, agrees with protobufjs both ways).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { FrameDecoder, MAX_FRAME_BYTES, type WireItem, decodeFrame, encodeFrame } from '../../../src/transport/codec.ts';
import { decodeGrpcFrame, encodeGrpcFrame, grpcFrameBytes, loadProto } from '../../../src/transport/grpc/wire.ts';
import type { Frame } from '../../../src/transport/link.ts';

const streamId = fc.integer({ min: 1, max: 0xffffffff });
const count = fc.maxSafeInteger().filter((n) => n >= 0);
const hex16 = fc.stringMatching(/^[0-9a-f]{16}$/);
const frameArb: fc.Arbitrary<WireItem> = fc.oneof(
  fc.record({ type: fc.constant('control' as const), json: fc.string({ maxLength: 300 }) }),
  fc.record(
    {
      type: fc.constant('data' as const),
      stream: streamId,
      bytes: fc.uint8Array({ maxLength: 5000 }),
      last: fc.boolean(),
      offset: count,
      hash: hex16,
      digest: hex16,
    },
    { requiredKeys: ['type', 'stream', 'bytes', 'last'] },
  ),
  fc.record({ type: fc.constant('ack' as const), stream: streamId, bytes: count }),
  fc.record({ type: fc.constant('resend' as const), stream: streamId, offset: count }),
  fc.record({ type: fc.constant('cancel' as const), stream: streamId, reason: fc.string({ maxLength: 200 }) }),
  fc.record({ type: fc.constant('hello' as const), json: fc.string({ maxLength: 200 }) }),
  fc.constant({ type: 'welcome' as const }),
  fc.record({ type: fc.constant('refuse' as const), reason: fc.string({ maxLength: 200 }) }),
);

/** Comparable form of a frame (bytes as plain arrays). */
const plain = (f: WireItem): unknown => (f.type === 'data' ? { ...f, bytes: [...f.bytes] } : { ...f });

test('codec: any sequence of frames, cut into reads at any points, decodes to the same frames', () => {
  fc.assert(
    fc.property(
      fc.array(frameArb, { maxLength: 12 }),
      fc.array(fc.integer({ min: 1, max: 7000 }), { minLength: 1, maxLength: 20 }),
      (frames, cuts) => {
        const wire = Buffer.concat(frames.flatMap((f) => encodeFrame(f)));
        const dec = new FrameDecoder();
        const got: WireItem[] = [];
        let at = 0;
        for (let i = 0; at < wire.byteLength; i++) {
          const n = cuts[i % cuts.length]!;
          const r = dec.push(wire.subarray(at, at + n));
          assert.ok(typeof r !== 'string', `decoder refused a valid stream: ${r as string}`);
          got.push(...r);
          at += n;
        }
        assert.deepEqual(got.map(plain), frames.map(plain));
      },
    ),
    { numRuns: 300 },
  );
});

test('codec: arbitrary bytes from a peer never throw: frames or a reason, nothing else', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 8 }), (reads) => {
      const dec = new FrameDecoder();
      for (const r of reads) {
        const got = dec.push(Buffer.from(r));
        if (typeof got === 'string') return;
        assert.ok(Array.isArray(got));
      }
    }),
    { numRuns: 2000 },
  );
  // a valid data header followed by garbage flags/lengths, byte by byte
  const head = Buffer.concat(
    encodeFrame({ type: 'data', stream: 1, bytes: new Uint8Array(3), last: true, offset: 5, hash: 'ffffffffffffffff', digest: 'abc' }),
  );
  for (let i = 4; i < head.byteLength; i++) {
    for (const v of [0, 0x7f, 0xff]) {
      const b = Buffer.from(head);
      b[i] = v;
      const got = new FrameDecoder().push(b);
      assert.ok(typeof got === 'string' || Array.isArray(got));
    }
  }
});

test('codec: a chunk that arrives in pieces is copied once into its own buffer at offset 0 (aligned for typed views)', () => {
  const bytes = new Uint8Array(100_000).map((_, i) => i & 0xff);
  const wire = Buffer.concat(encodeFrame({ type: 'data', stream: 3, bytes, last: false, offset: 12, hash: '0123456789abcdef' }));
  const dec = new FrameDecoder();
  const out: WireItem[] = [];
  for (let at = 0; at < wire.byteLength; at += 16_384) out.push(...(dec.push(wire.subarray(at, at + 16_384)) as WireItem[]));
  const f = out[0] as Extract<Frame, { type: 'data' }>;
  assert.equal(out.length, 1);
  assert.equal(f.bytes.byteOffset, 0);
  assert.deepEqual(Buffer.from(f.bytes), Buffer.from(bytes));
});

test('codec: malformed frames are refused with a reason, never thrown', () => {
  const frame = (type: number, body: number[]): Buffer => {
    const b = Buffer.alloc(5 + body.length);
    b.writeUInt32LE(1 + body.length, 0);
    b.writeUInt8(type, 4);
    Buffer.from(body).copy(b, 5);
    return b;
  };
  const huge = Buffer.alloc(4);
  huge.writeUInt32LE(MAX_FRAME_BYTES + 1, 0);
  const cases: [Buffer, RegExp][] = [
    [huge, /frame of \d+ bytes/],
    [Buffer.from([0, 0, 0, 0]), /frame of 0 bytes/],
    [frame(99, []), /unknown type 99/],
    [frame(2, [0, 0, 0, 0, 0]), /invalid stream id/],
    [frame(2, [1, 0, 0, 0, 0x80]), /unknown flags/],
    [frame(2, [1, 0, 0, 0, 2, 1, 2]), /header truncated/],
    [frame(3, [1, 0, 0, 0]), /ack frame of 4 bytes/],
    [frame(5, [1, 0]), /cancel frame too short/],
  ];
  for (const [wire, why] of cases) {
    const r = new FrameDecoder().push(wire);
    assert.equal(typeof r, 'string', `accepted ${wire.toString('hex')}`);
    assert.match(r as string, why);
  }
});

const isLinkFrame = (f: WireItem): f is Frame => f.type !== 'hello' && f.type !== 'welcome' && f.type !== 'refuse';
/** proto-loader's (protobufjs') own serializers for proto/flotilla.proto's Frame message. */
const connect = loadProto().Federation.service.Connect!;
const pbEncode = connect.requestSerialize as (m: { encoded: Uint8Array }) => Buffer;
const pbDecode = connect.requestDeserialize as (b: Buffer) => { encoded?: Uint8Array };

test('gRPC: a Frame message is the codec bytes as protobuf field `encoded`; proto-loader reads and writes the same bytes', () => {
  fc.assert(
    fc.property(frameArb.filter(isLinkFrame), (f) => {
      const codec = Buffer.concat(encodeFrame(f));
      const ours = encodeGrpcFrame(f);
      const theirs = pbDecode(ours);
      assert.ok(theirs.encoded && Buffer.from(theirs.encoded).equals(codec), 'protobufjs reads our Frame message');
      assert.deepEqual(pbEncode({ encoded: codec }), ours, 'byte-identical to protobufjs');
      const back = decodeGrpcFrame(ours);
      assert.ok(typeof back !== 'string', back as string);
      assert.deepEqual(plain(back), plain(f));
    }),
    { numRuns: 300 },
  );
});

test('gRPC: the frame bytes inside a message are a view, not a copy; unknown fields are skipped', () => {
  const bytes = new Uint8Array(200_000).map((_, i) => (i * 7) & 0xff);
  const msg = encodeGrpcFrame({ type: 'data', stream: 2, bytes, last: false, offset: 0 });
  const f = decodeGrpcFrame(msg);
  assert.ok(typeof f !== 'string' && f.type === 'data');
  assert.equal(f.bytes.buffer, msg.buffer, 'a view into the received message');
  assert.deepEqual(Buffer.from(f.bytes), Buffer.from(bytes));
  // a newer peer's extra field (9, a string) beside `encoded`
  const extra = pbEncode({ encoded: Buffer.concat(encodeFrame({ type: 'ack', stream: 1, bytes: 5 })) });
  const withUnknown = Buffer.concat([Buffer.from([(9 << 3) | 2, 3, 0x61, 0x62, 0x63]), extra]);
  assert.deepEqual(decodeGrpcFrame(withUnknown), { type: 'ack', stream: 1, bytes: 5 });
});

test('gRPC: malformed messages are refused with a reason, never thrown', () => {
  assert.match(decodeGrpcFrame(Buffer.alloc(0)) as string, /empty frame/);
  assert.match(decodeGrpcFrame(encodeGrpcFrame({ type: 'welcome' } as unknown as Frame)) as string, /unexpected welcome/);
  assert.equal(grpcFrameBytes(Buffer.from([0x32, 0x05, 1])).byteLength, 0, 'a length past the end');
  assert.match(
    decodeFrame(
      Buffer.concat([...encodeFrame({ type: 'ack', stream: 1, bytes: 1 }), ...encodeFrame({ type: 'ack', stream: 1, bytes: 2 })]),
    ) as string,
    /more than one frame/,
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 80 }), (b) => {
      const r = decodeGrpcFrame(Buffer.from(b));
      assert.ok(typeof r === 'string' || typeof r === 'object');
    }),
    { numRuns: 3000 },
  );
});
