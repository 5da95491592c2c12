import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import fc from 'fast-check';
import { DTYPES, type DType, allocate, bf16ToF32, dtypeSize, f16ToF32, f32ToBf16, f32ToF16 } from '../src/core/dtypes.ts';
import { SafetensorsFile, SafetensorsWriter, readSafetensors, writeSafetensors, writeStreamToFile } from '../src/core/safetensors.ts';
import { buildHeader } from '../src/core/safetensors-header.ts';
import { decodeStream, dictToStream, encodeStream, streamToDict } from '../src/core/tensor-stream.ts';
import { type TensorDict, tensorBytes } from '../src/core/tensor.ts';

const dir = mkdtempSync(join(tmpdir(), 'flotilla-st-'));
let n = 0;
const tmp = (): string => join(dir, `f${n++}.safetensors`);

/** Random tensors of every dtype: random bytes are valid for all of them (BOOL gets 0/1). */
const arbTensor = fc
  .record({
    dtype: fc.constantFrom(...DTYPES),
    shape: fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 0, maxLength: 3 }),
    seed: fc.integer(),
  })
  .map(({ dtype, shape, seed }) => {
    const count = shape.reduce((a, b) => a * b, 1);
    const data = allocate(dtype, count);
    const bytes = new Uint8Array(data.buffer);
    let s = seed >>> 0;
    for (let i = 0; i < bytes.length; i++) {
      s = (s * 1664525 + 1013904223) >>> 0;
      bytes[i] = dtype === 'BOOL' ? s & 1 : s >>> 24;
    }
    return { dtype, shape, data };
  });

const arbDict = fc.uniqueArray(fc.tuple(fc.string({ minLength: 1, maxLength: 12 }).filter((s) => s !== '__metadata__'), arbTensor), { selector: ([k]) => k, maxLength: 8 }).map((e) => new Map(e) as TensorDict);
const arbMeta = fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 16 }), { maxKeys: 4, noNullPrototype: true });

function assertSame(a: TensorDict, b: TensorDict): void {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  for (const [k, t] of a) {
    const u = b.get(k)!;
    assert.equal(u.dtype, t.dtype, k);
    assert.deepEqual([...u.shape], [...t.shape], k);
    assert.deepEqual(Buffer.from(tensorBytes(u)), Buffer.from(tensorBytes(t)), k);
  }
}

async function* splitAt(bytes: Uint8Array, cuts: number[]): AsyncGenerator<Uint8Array> {
  let prev = 0;
  for (const c of [...new Set(cuts.map((x) => Math.min(x, bytes.length)))].sort((a, b) => a - b)) {
    yield bytes.slice(prev, c);
    prev = c;
  }
  yield bytes.slice(prev);
}

test('property: file round trip, every dtype, random shapes (scalars and zero-size too) and metadata', async () => {
  await fc.assert(
    fc.asyncProperty(arbDict, arbMeta, async (dict, meta) => {
      const p = tmp();
      await writeSafetensors(p, dict, meta);
      const r = await readSafetensors(p);
      assertSame(dict, r.tensors);
      assert.deepEqual(r.metadata, meta);
    }),
    { numRuns: 120 },
  );
});

test('property: byte-stream round trip with the bytes cut at arbitrary places (mid-element included)', async () => {
  await fc.assert(
    fc.asyncProperty(arbDict, arbMeta, fc.array(fc.nat(4000), { maxLength: 20 }), fc.integer({ min: 8, max: 64 }), async (dict, meta, cuts, chunk) => {
      const parts: Uint8Array[] = [];
      for await (const b of encodeStream(dictToStream(dict, { metadata: meta }))) parts.push(b.slice());
      const bytes = Buffer.concat(parts);
      const s = await decodeStream(splitAt(bytes, cuts), { chunkBytes: chunk });
      assert.deepEqual(s.header.metadata, meta);
      assertSame(dict, await streamToDict(s));
      // the stream encoding is the file format, byte for byte
      const p = tmp();
      await writeSafetensors(p, dict, meta);
      assert.deepEqual(readFileSync(p), bytes);
    }),
    { numRuns: 120 },
  );
});

test('a file read as a stream in small chunks, and streamed to a Writable, gives the same tensors', async () => {
  const dict: TensorDict = new Map([
    ['a', { dtype: 'F32', shape: [100], data: Float32Array.from({ length: 100 }, (_, i) => i / 3) }],
    ['b', { dtype: 'I64', shape: [3, 3], data: BigInt64Array.from({ length: 9 }, (_, i) => BigInt(i) - 4n) }],
  ]);
  const p = tmp();
  await writeSafetensors(p, dict);
  const f = await SafetensorsFile.open(p);
  const q = tmp();
  await writeStreamToFile(q, f.stream({ chunkBytes: 24 }));
  await f.close();
  assert.deepEqual(readFileSync(q), readFileSync(p));
  const sink = new PassThrough();
  const chunks: Buffer[] = [];
  sink.on('data', (c: Buffer) => chunks.push(c));
  await writeSafetensors(sink, dict);
  assert.deepEqual(Buffer.concat(chunks), readFileSync(p));
});

test('reading one tensor reads only the header and that tensor', async () => {
  const big = new Float32Array(1 << 20).fill(7);
  const p = tmp();
  await writeSafetensors(p, new Map([['big1', { dtype: 'F32', shape: [big.length], data: big }], ['small', { dtype: 'I16', shape: [3], data: Int16Array.from([1, -2, 3]) }], ['big2', { dtype: 'F32', shape: [big.length], data: big }]]));
  const f = await SafetensorsFile.open(p);
  const headerBytes = f.bytesRead;
  const t = await f.readTensor('small');
  assert.deepEqual([...(t.data as Int16Array)], [1, -2, 3]);
  assert.equal(f.bytesRead, headerBytes + 6);
  assert.equal(f.header.dataStart, headerBytes);
  await assert.rejects(f.readTensor('nope'), /no tensor named "nope"/);
  await f.close();
});

test('compatible with Hugging Face files: a file built byte by byte as the Python library writes it', async () => {
  // safetensors.numpy.save({"x": np.array([[1, 2]], dtype=np.float32), "y": np.array([-1], dtype=np.int8)}, metadata={"format": "np"})
  const json = '{"__metadata__":{"format":"np"},"x":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]},"y":{"dtype":"I8","shape":[1],"data_offsets":[8,9]}}';
  const padded = json + ' '.repeat((8 - ((8 + json.length) % 8)) % 8);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(padded.length));
  const data = Buffer.concat([Buffer.from(new Float32Array([1, 2]).buffer), Buffer.from([0xff])]);
  const p = tmp();
  writeFileSync(p, Buffer.concat([head, Buffer.from(padded), data]));
  const r = await readSafetensors(p);
  assert.deepEqual([...(r.tensors.get('x')!.data as Float32Array)], [1, 2]);
  assert.deepEqual([...(r.tensors.get('y')!.data as Int8Array)], [-1]);
  assert.deepEqual(r.metadata, { format: 'np' });
  const q = tmp();
  await writeSafetensors(q, r.tensors, r.metadata);
  assert.deepEqual(readFileSync(q), readFileSync(p), 'our writer produces the same bytes');
  assert.equal((8 + padded.length) % 8, 0, 'data starts 8-byte aligned');
});

function fileWith(header: unknown, dataBytes: number, rawHeader?: string): string {
  const text = rawHeader ?? JSON.stringify(header);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
  const p = tmp();
  writeFileSync(p, Buffer.concat([head, Buffer.from(text), Buffer.alloc(dataBytes)]));
  return p;
}

const malformed: [string, () => string, RegExp][] = [
  ['file shorter than 8 bytes', () => { const p = tmp(); writeFileSync(p, Buffer.from([1, 2, 3])); return p; }, /too short.*3 bytes/],
  ['header size past the end of the file', () => { const p = tmp(); const b = Buffer.alloc(20); b.writeBigUInt64LE(1000n); writeFileSync(p, b); return p; }, /header size 1000 points past the end of the file \(20 bytes\)/],
  ['header not JSON', () => fileWith(null, 0, '{"a": '), /header is not valid JSON/],
  ['header not an object', () => fileWith([1, 2], 0), /header must be a JSON object/],
  ['unknown dtype', () => fileWith({ a: { dtype: 'F8', shape: [1], data_offsets: [0, 1] } }, 1), /tensor "a": unknown dtype "F8"/],
  ['offsets overlapping', () => fileWith({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, 8), /overlap/],
  ['offsets out of range', () => fileWith({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 8), /out of range: past the end of the file/],
  ['trailing bytes', () => fileWith({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, 12), /trailing bytes/],
  ['offsets not matching shape × dtype', () => fileWith({ a: { dtype: 'F64', shape: [2], data_offsets: [0, 8] } }, 8), /span 8 bytes but shape \[2\] × F64 .* needs 16/],
  ['bad shape', () => fileWith({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 0] } }, 0), /shape must be a list of non-negative integers/],
  ['gap in the data', () => fileWith({ a: { dtype: 'U8', shape: [1], data_offsets: [1, 2] } }, 2), /gap in data/],
  ['end before begin', () => fileWith({ a: { dtype: 'U8', shape: [1], data_offsets: [2, 1] } }, 2), /end 1 is before begin 2/],
  ['unknown field', () => fileWith({ a: { dtype: 'U8', shape: [1], data_offsets: [0, 1], extra: 1 } }, 1), /unknown field "extra"/],
  ['non-string metadata', () => fileWith({ __metadata__: { a: 1 } }, 0), /__metadata__\.a must be a string/],
];
for (const [what, make, re] of malformed) {
  test(`malformed file rejected, naming the problem: ${what}`, async () => {
    const p = make();
    await assert.rejects(SafetensorsFile.open(p), (e: Error) => e.name === 'SafetensorsError' && re.test(e.message) && e.message.includes(p));
  });
}

test('decodeStream rejects truncated streams, trailing bytes and streams over the size limit', async () => {
  const dict: TensorDict = new Map([['a', { dtype: 'F32', shape: [16], data: new Float32Array(16) }]]);
  const parts: Uint8Array[] = [];
  for await (const b of encodeStream(dictToStream(dict))) parts.push(b.slice());
  const bytes = Buffer.concat(parts);
  await assert.rejects(async () => streamToDict(await decodeStream(splitAt(bytes.subarray(0, bytes.length - 3), [])) ), /ended/);
  await assert.rejects(async () => streamToDict(await decodeStream(splitAt(Buffer.concat([bytes, Buffer.from([1])]), [])) ), /unexpected bytes after the last tensor/);
  await assert.rejects(decodeStream(splitAt(bytes, []), { maxBytes: 32 }), /declares 64 data bytes, over the limit of 32/);
});

test('writer: out of order, too many bytes, incomplete tensor and duplicate names are refused; no file is left behind', async () => {
  const infos = [{ name: 'a', dtype: 'U8' as DType, shape: [2] }, { name: 'b', dtype: 'U8' as DType, shape: [2] }];
  const p = tmp();
  const w = await SafetensorsWriter.open(p, infos);
  await assert.rejects(w.write('b', new Uint8Array(2)), /"b" written out of order: expected "a" next/);
  await assert.rejects(w.write('a', new Uint8Array(3)), /3 bytes written, header declares 2/);
  await w.write('a', new Uint8Array(2));
  await w.write('b', new Uint8Array(1));
  await assert.rejects(w.close(), /tensor "b" incomplete at close: 1 of 2 bytes/);
  assert.throws(() => readFileSync(p), /ENOENT/);
  assert.throws(() => buildHeader([infos[0]!, infos[0]!]), /duplicate tensor name "a"/);
});

test('f16 and bf16 conversions: known bit patterns, rounding, specials; f16 → f32 → f16 is the identity', () => {
  assert.equal(f32ToF16(1), 0x3c00);
  assert.equal(f32ToF16(-2), 0xc000);
  assert.equal(f32ToF16(65504), 0x7bff);
  assert.equal(f32ToF16(65520), 0x7c00, 'rounds to infinity past the max');
  assert.equal(f32ToF16(2 ** -24), 0x0001, 'smallest subnormal');
  assert.equal(f32ToF16(2 ** -25), 0x0000, 'ties to even → 0');
  assert.equal(f32ToF16(1 + 2 ** -11), 0x3c00, 'tie rounds to even');
  assert.equal(f32ToF16(1 + 3 * 2 ** -11), 0x3c02, 'tie rounds to even (up)');
  assert.ok(Number.isNaN(f16ToF32(f32ToF16(Number.NaN))));
  assert.equal(f16ToF32(0x7c00), Infinity);
  assert.equal(f32ToBf16(1), 0x3f80);
  assert.equal(bf16ToF32(0x3f80), 1);
  assert.equal(bf16ToF32(0xc040), -3);
  assert.equal(f32ToBf16(1 + 2 ** -8), 0x3f80, 'bf16 tie to even');
  assert.ok(Number.isNaN(bf16ToF32(f32ToBf16(Number.NaN))));
  for (let h = 0; h < 0x10000; h++) {
    const v = f16ToF32(h);
    if (Number.isNaN(v)) continue;
    assert.equal(f32ToF16(v), h, `f16 pattern ${h.toString(16)}`);
    assert.equal(f32ToBf16(bf16ToF32(h)), h, `bf16 pattern ${h.toString(16)}`);
  }
  assert.equal(dtypeSize('BF16'), 2);
});
