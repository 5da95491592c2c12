// The quantization codecs, property-tested: every format round-trips within its error bound, for
// any values, block sizes and chunkings of the stream, and integer tensors pass unchanged.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { f16ToF32, bf16ToF32, f32ToF16, f32ToBf16 } from '../../../src/core/dtypes.ts';
import { type Tensor, type TensorDict, tensor } from '../../../src/core/tensor.ts';
import { dictToStream, streamToDict } from '../../../src/core/tensor-stream.ts';
import {
  type BlockFormat,
  QUANTIZED_KEY,
  dequantizeStream,
  encodedSize,
  f16ToF32Array,
  f32ToBf16Array,
  f32ToF16Array,
  maxRelativeError,
  quantizeStream,
} from '../../../src/filters/index.ts';

const floats = fc.float({ noNaN: true, noDefaultInfinity: true, min: Math.fround(-1e30), max: Math.fround(1e30) });
const runs = { numRuns: 150 };

async function roundTrip(dict: TensorDict, format: Parameters<typeof quantizeStream>[1]['format'], blockSize: number, chunk: number) {
  const q = quantizeStream(dictToStream(dict, { chunkBytes: chunk }), { format, blockSize });
  // the wire: what the quantized stream would be materialized as, then re-chunked
  const wire = await streamToDict(q);
  const back = await streamToDict(
    dequantizeStream(dictToStream(wire, { chunkBytes: Math.max(1, chunk >> 1), metadata: { ...q.header.metadata } })),
  );
  return { wire, back, header: q.header };
}

for (const format of ['int8', 'nf4', 'fp4'] as BlockFormat[]) {
  test(`${format}: every element within ${format === 'int8' ? 'absmax/254' : 'half the widest level gap × absmax'} of its block, any chunking`, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(floats, { minLength: 1, maxLength: 700 }),
        fc.constantFrom(16, 32, 64, 256),
        fc.integer({ min: 1, max: 300 }),
        async (values, blockSize, chunkElems) => {
          const x = Float32Array.from(values);
          const { wire, back } = await roundTrip(new Map([['w', tensor('F32', [x.length], x)]]), format, blockSize, chunkElems * 4);
          assert.equal(wire.get('w')!.dtype, 'U8');
          assert.equal(wire.get('w')!.data.length, encodedSize(format, x.length, blockSize));
          const y = back.get('w')!;
          assert.equal(y.dtype, 'F32');
          assert.deepEqual(y.shape, [x.length]);
          const bound = maxRelativeError(format);
          for (let b = 0; b < x.length; b += blockSize) {
            let absmax = 0;
            for (let i = b; i < Math.min(b + blockSize, x.length); i++) absmax = Math.max(absmax, Math.abs(x[i]!));
            for (let i = b; i < Math.min(b + blockSize, x.length); i++) {
              const err = Math.abs(x[i]! - (y.data as Float32Array)[i]!);
              assert.ok(err <= absmax * bound * (1 + 1e-6) + 1e-37, `${format} element ${i}: ${x[i]} → ${y.data[i]} (absmax ${absmax})`);
            }
          }
        },
      ),
      runs,
    );
  });
}

test('float16 and bfloat16: round to nearest like the scalar conversions, restored to the original dtype', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(floats, { minLength: 1, maxLength: 300 }), fc.integer({ min: 1, max: 100 }), async (values, chunkElems) => {
      const x = Float32Array.from(values);
      for (const format of ['float16', 'bfloat16'] as const) {
        const { wire, back } = await roundTrip(
          new Map([['w', tensor('F32', [2, x.length], Float32Array.from([...x, ...x]))]]),
          format,
          0,
          chunkElems * 4,
        );
        const w = wire.get('w')!;
        assert.equal(w.dtype, format === 'float16' ? 'F16' : 'BF16');
        const y = back.get('w')!;
        assert.equal(y.dtype, 'F32');
        assert.deepEqual(y.shape, [2, x.length]);
        for (let i = 0; i < x.length; i++) {
          const want = format === 'float16' ? f16ToF32(f32ToF16(x[i]!)) : bf16ToF32(f32ToBf16(x[i]!));
          assert.ok(Object.is(y.data[i], Math.fround(want)), `${format} ${x[i]} → ${y.data[i]}, want ${want}`);
        }
      }
    }),
    runs,
  );
});

test('the array conversions agree with the scalar ones bit for bit (all halves, random floats)', () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const f = new Float32Array(65536);
  f16ToF32Array(all, f);
  for (let h = 0; h < 65536; h++) assert.ok(Object.is(f[h], Math.fround(f16ToF32(h))) || (Number.isNaN(f[h]) && Number.isNaN(f16ToF32(h))));
  fc.assert(
    fc.property(fc.float32Array({ minLength: 1, maxLength: 64 }), (x) => {
      const h = new Uint16Array(x.length);
      const b = new Uint16Array(x.length);
      f32ToF16Array(x, h);
      f32ToBf16Array(x, b);
      for (let i = 0; i < x.length; i++) {
        assert.equal(h[i], f32ToF16(x[i]!));
        assert.equal(b[i], f32ToBf16(x[i]!));
      }
    }),
    { numRuns: 300 },
  );
});

test('integer, bool, empty and excluded tensors pass unchanged; metadata of the model is kept', async () => {
  const dict: TensorDict = new Map<string, Tensor>([
    ['steps', tensor('I64', [2], BigInt64Array.from([3n, -4n]))],
    ['mask', tensor('BOOL', [3], Uint8Array.from([1, 0, 1]))],
    ['empty', tensor('F32', [0])],
    ['keep', tensor('F32', [3], Float32Array.from([0.1, 0.2, 0.3]))],
    [
      'w',
      tensor(
        'F64',
        [300],
        Float64Array.from({ length: 300 }, (_, i) => Math.sin(i)),
      ),
    ],
  ]);
  for (const format of ['int8', 'nf4', 'fp4', 'float16', 'bfloat16'] as const) {
    const q = quantizeStream(dictToStream(dict, { metadata: { format: 'pt' } }), { format, blockSize: 64, skip: (n) => n === 'keep' });
    assert.deepEqual(Object.keys(JSON.parse(q.header.metadata[QUANTIZED_KEY]!) as object), ['w']);
    assert.equal(q.header.metadata.format, 'pt');
    const back = await streamToDict(dequantizeStream(q));
    for (const name of ['steps', 'mask', 'empty', 'keep']) assert.deepEqual(back.get(name), dict.get(name), `${format} ${name}`);
    assert.equal(back.get('w')!.dtype, 'F64');
    const tol = format === 'int8' ? 1 / 254 : format === 'float16' ? 1e-3 : format === 'bfloat16' ? 4e-3 : 0.17;
    const w = back.get('w')!.data as Float64Array;
    for (let i = 0; i < 300; i++) assert.ok(Math.abs(w[i]! - Math.sin(i)) <= tol + 1e-7, `${format} ${i}`);
  }
});

test('wire size: 16-bit is half of float32, 8-bit (block 256) ≤ 26 %, 4-bit (block 64) ≤ 15 %, scales included', () => {
  const n = 1 << 20;
  assert.ok(encodedSize('int8', n, 256) / (4 * n) <= 0.26);
  assert.ok(encodedSize('nf4', n, 64) / (4 * n) <= 0.15);
  assert.equal(encodedSize('fp4', 5, 64), 4 + 3);
});

test('a non-finite value fails the tensor with its name; a malformed quantized stream fails before any piece', async () => {
  const bad = new Map([['w', tensor('F32', [3], Float32Array.from([1, NaN, 2]))]]);
  await assert.rejects(
    streamToDict(quantizeStream(dictToStream(bad), { format: 'int8', blockSize: 16 })),
    /tensor "w": a non-finite value/,
  );
  const q = quantizeStream(dictToStream(new Map([['w', tensor('F32', [100], new Float32Array(100))]])), { format: 'nf4', blockSize: 64 });
  const wire = await streamToDict(q);
  const lying = JSON.stringify({ w: { f: 'nf4', d: 'F32', s: [10000], b: 64 } });
  assert.throws(
    () => dequantizeStream(dictToStream(wire, { metadata: { [QUANTIZED_KEY]: lying } })),
    /nf4 of 10000 elements is \d+ U8 bytes/,
  );
  assert.throws(() => dequantizeStream(dictToStream(wire, { metadata: { [QUANTIZED_KEY]: '{"x":1}' } })), /flotilla.quantized: x/);
});
