/**
 * Safetensors files: property round trips for every dtype through the file
 * writer/reader and through the byte-stream codec, byte-exact compatibility
 * with the Hugging Face library, rejection of every malformed case, writer
 * misuse, atomic replacement, backpressure and destination failures.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { DTYPES, type DType, allocate, dtypeSize } from '../../../src/core/dtypes.ts';
import { SafetensorsFile, SafetensorsWriter, readSafetensors, writeSafetensors, writeStreamToFile } from '../../../src/core/safetensors.ts';
import { type TensorInfo, buildHeader } from '../../../src/core/safetensors-header.ts';
import { type TensorStream, decodeStream, dictToStream, encodeStream, streamToDict } from '../../../src/core/tensor-stream.ts';
import { type Tensor, type TensorDict, tensorBytes } from '../../../src/core/tensor.ts';

const root = mkdtempSync(join(tmpdir(), 'flotilla-st-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const tmp = (): string => join(root, `f${n++}.safetensors`);
/** A fresh directory, for tests that list what the writer leaves behind. */
const freshDir = (): string => mkdtempSync(join(root, 'd'));

/** Deterministic pseudo-random bytes: valid storage for every dtype (BOOL gets 0/1). */
function fill(dtype: DType, shape: readonly number[], seed: number): Tensor {
  const data = allocate(
    dtype,
    shape.reduce((a, b) => a * b, 1),
  );
  const bytes = new Uint8Array(data.buffer);
  let s = seed >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    bytes[i] = dtype === 'BOOL' ? (s >>> 24) & 1 : s >>> 24;
  }
  return { dtype, shape, data };
}

/** Scalars (shape []), zero-size dims and ordinary shapes, in every dtype. */
const arbTensor = fc
  .record({ dtype: fc.constantFrom(...DTYPES), shape: fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 3 }), seed: fc.integer() })
  .map(({ dtype, shape, seed }) => fill(dtype, shape, seed));
/** Any unicode name (the header length is in UTF-8 bytes, not characters), often integer-like (JS orders those keys first). */
const arbName = fc
  .oneof(fc.string({ unit: 'binary', minLength: 1, maxLength: 10 }), fc.nat(30).map(String))
  .filter((s) => s !== '__metadata__');
const arbDict = fc.uniqueArray(fc.tuple(arbName, arbTensor), { selector: ([k]) => k, maxLength: 8 }).map((e) => new Map(e) as TensorDict);
const arbMeta = fc.dictionary(fc.string({ unit: 'binary', maxLength: 8 }), fc.string({ unit: 'binary', maxLength: 16 }), {
  maxKeys: 4,
  noNullPrototype: true,
});

/**
 * Same names, dtypes, shapes and bytes; tensors holding data in the same order.
 * Zero-size tensors share an offset with their neighbour, and JSON.parse lists
 * integer-like keys ("0") first, so their relative order is not kept (the
 * format leaves it open: the Rust reader keeps them in a HashMap).
 */
function assertSame(expected: TensorDict, actual: TensorDict): void {
  const withData = (d: TensorDict): string[] => [...d].filter(([, t]) => t.data.length > 0).map(([k]) => k);
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort());
  assert.deepEqual(withData(actual), withData(expected));
  for (const [k, t] of expected) {
    const u = actual.get(k)!;
    assert.equal(u.dtype, t.dtype, k);
    assert.deepEqual([...u.shape], [...t.shape], k);
    assert.deepEqual(Buffer.from(tensorBytes(u)), Buffer.from(tensorBytes(t)), k);
  }
}

async function collect(src: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of src) parts.push(Buffer.from(b));
  return Buffer.concat(parts);
}

/** The bytes as chunks cut at the given positions (duplicates and out-of-range cuts allowed). */
async function* cutAt(bytes: Uint8Array, cuts: readonly number[]): AsyncGenerator<Uint8Array> {
  let prev = 0;
  for (const c of [...new Set(cuts.map((x) => Math.min(x, bytes.length)))].sort((a, b) => a - b)) {
    yield bytes.slice(prev, c);
    prev = c;
  }
  yield bytes.slice(prev);
}

// ---- round trips ---------------------------------------------------------------

test('every dtype round-trips through a file, including scalars and zero-size tensors', async () => {
  const dict: TensorDict = new Map();
  DTYPES.forEach((d, i) => {
    dict.set(`${d}.matrix`, fill(d, [3, 5], i));
    dict.set(`${d}.scalar`, fill(d, [], i + 100));
    dict.set(`${d}.empty`, fill(d, [2, 0, 4], i + 200));
  });
  const p = tmp();
  await writeSafetensors(p, dict, { format: 'pt' });
  const r = await readSafetensors(p);
  assertSame(dict, r.tensors);
  assert.deepEqual(r.metadata, { format: 'pt' });
  for (const d of DTYPES) {
    assert.equal(r.tensors.get(`${d}.scalar`)!.data.length, 1);
    assert.equal(r.tensors.get(`${d}.empty`)!.data.length, 0);
  }
});

test('property: file round trip, random dtypes, shapes, unicode names and metadata', async () => {
  await fc.assert(
    fc.asyncProperty(arbDict, arbMeta, async (dict, meta) => {
      const p = tmp();
      await writeSafetensors(p, dict, meta);
      const r = await readSafetensors(p);
      assertSame(dict, r.tensors);
      assert.deepEqual(r.metadata, meta);
      rmSync(p);
    }),
    { numRuns: 100 },
  );
});

test('property: byte-stream round trip with bytes cut anywhere (mid-element too); the stream bytes are the file bytes', async () => {
  await fc.assert(
    fc.asyncProperty(
      arbDict,
      arbMeta,
      fc.array(fc.nat(3000), { maxLength: 30 }),
      fc.integer({ min: 1, max: 64 }),
      async (dict, meta, cuts, chunk) => {
        const bytes = await collect(encodeStream(dictToStream(dict, { metadata: meta, chunkBytes: chunk })));
        const s = await decodeStream(cutAt(bytes, cuts), { chunkBytes: chunk });
        assert.deepEqual(s.header.metadata, meta);
        assertSame(dict, await streamToDict(s));
        const p = tmp();
        await writeSafetensors(p, dict, meta);
        assert.deepEqual(readFileSync(p), bytes);
        rmSync(p);
      },
    ),
    { numRuns: 100 },
  );
});

test('property: a file streamed from disk in random chunk sizes gives element-aligned pieces and the same file again', async () => {
  await fc.assert(
    fc.asyncProperty(arbDict, arbMeta, fc.integer({ min: 1, max: 100 }), async (dict, meta, chunk) => {
      const p = tmp();
      await writeSafetensors(p, dict, meta);
      const f = await SafetensorsFile.open(p);
      const pieces: { name: string; offset: number; length: number; size: number }[] = [];
      const recorded: TensorStream = {
        header: f.stream().header,
        async *pieces() {
          for await (const piece of f.stream({ chunkBytes: chunk }).pieces()) {
            pieces.push({ name: piece.name, offset: piece.offset, length: piece.bytes.byteLength, size: dtypeSize(piece.dtype) });
            yield piece;
          }
        },
      };
      const q = tmp();
      await writeStreamToFile(q, recorded);
      const order = f.names();
      await f.close();
      assertSame(dict, (await readSafetensors(q)).tensors);
      // byte-identical unless parsing reordered tied zero-size tensors (see assertSame)
      if (order.join('\0') === [...dict.keys()].join('\0')) assert.deepEqual(readFileSync(q), readFileSync(p));
      for (const x of pieces) {
        assert.equal(x.offset % x.size, 0, `${x.name} piece offset aligned`);
        assert.equal(x.length % x.size, 0, `${x.name} piece length aligned`);
        assert.ok(x.length <= Math.max(chunk, x.size), `${x.name} piece of ${x.length} bytes exceeds chunk ${chunk}`);
      }
      rmSync(p);
      rmSync(q);
    }),
    { numRuns: 60 },
  );
});

test('streaming to a Writable produces the file bytes', async () => {
  const dict: TensorDict = new Map([
    ['a', { dtype: 'F32', shape: [100], data: Float32Array.from({ length: 100 }, (_, i) => i / 3) }],
    ['b', { dtype: 'I64', shape: [3, 3], data: BigInt64Array.from({ length: 9 }, (_, i) => BigInt(i) - 4n) }],
  ]);
  const p = tmp();
  await writeSafetensors(p, dict);
  const sink = new PassThrough();
  const out = collect(sink);
  await writeSafetensors(sink, dict);
  assert.deepEqual(await out, readFileSync(p));
});

test('reading one tensor reads only the header and that tensor', async () => {
  const big = new Float32Array(1 << 18).fill(7);
  const p = tmp();
  await writeSafetensors(
    p,
    new Map<string, Tensor>([
      ['big1', { dtype: 'F32', shape: [big.length], data: big }],
      ['small', { dtype: 'I16', shape: [3], data: Int16Array.from([1, -2, 3]) }],
      ['big2', { dtype: 'F32', shape: [big.length], data: big }],
    ]),
  );
  const f = await SafetensorsFile.open(p);
  const headerBytes = f.bytesRead;
  assert.equal(headerBytes, f.header.dataStart, 'open reads the prefix and the header, nothing more');
  assert.deepEqual(f.names(), ['big1', 'small', 'big2']);
  const t = await f.readTensor('small');
  assert.deepEqual([...(t.data as Int16Array)], [1, -2, 3]);
  assert.equal(f.bytesRead, headerBytes + 6);
  await assert.rejects(f.readTensor('nope'), /no tensor named "nope"/);
  for await (const piece of f.stream({ chunkBytes: 1 << 16 }).pieces()) void piece;
  assert.equal(f.bytesRead, headerBytes + 6 + statSync(p).size - headerBytes, 'a full stream reads each data byte once');
  await f.close();
});

// ---- compatibility with the Hugging Face library ------------------------------------

/** The bytes the Rust/Python library writes: u64 LE header length, JSON padded with spaces to 8, data. */
function hfBytes(json: string, data: readonly number[]): Buffer {
  const header = Buffer.from(json + ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  return Buffer.concat([len, header, Buffer.from(data)]);
}

async function written(dict: TensorDict, metadata?: Record<string, string>): Promise<Buffer> {
  const p = tmp();
  await writeSafetensors(p, dict, metadata);
  return readFileSync(p);
}

test('HF compatibility: the byte vectors of the upstream serializer tests are reproduced exactly', async () => {
  const f32s = [0, 1, 2, 3, 4, 5];
  const data = [...Buffer.from(new Float32Array(f32s).buffer)];
  // 64-byte header: no padding needed
  const a = hfBytes('{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}', data);
  assert.deepEqual([...a.subarray(0, 8)], [64, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(await written(new Map([['attn.0', { dtype: 'F32', shape: [1, 2, 3], data: new Float32Array(f32s) }]])), a);
  // a shorter name forces 7 spaces of padding so that the data starts 8-byte aligned
  const b = hfBytes('{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}', data);
  assert.deepEqual([...b.subarray(0, 8)], [72, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(b.subarray(8 + 65, 8 + 72).toString(), '       ');
  assert.deepEqual(await written(new Map([['attn0', { dtype: 'F32', shape: [1, 1, 2, 3], data: new Float32Array(f32s) }]])), b);
  // empty files, with and without metadata
  assert.deepEqual(await written(new Map()), Buffer.from([8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]));
  const c = await written(new Map(), { framework: 'pt' });
  assert.deepEqual(c, hfBytes('{"__metadata__":{"framework":"pt"}}', []));
  assert.equal(c.readBigUInt64LE(0), 40n);
  for (const bytes of [a, b, c]) {
    const p = tmp();
    writeFileSync(p, bytes);
    const r = await readSafetensors(p);
    assert.equal(r.tensors.size, bytes === c ? 0 : 1);
  }
});

test('HF compatibility: a mixed-dtype file as safetensors.torch.save_file writes it is read and rewritten byte for byte', async () => {
  // save_file({"weight": torch.ones(2, 2, dtype=torch.float16), "bias": torch.tensor([0.5, -1.5]),
  //            "step": torch.tensor(7), "mask": torch.tensor([True, False, True])}, path, metadata={"format": "pt"})
  // The library lays tensors out by descending dtype (I64 > F32 > F16 > BOOL), then by name; __metadata__ first.
  const json =
    '{"__metadata__":{"format":"pt"},' +
    '"step":{"dtype":"I64","shape":[],"data_offsets":[0,8]},' +
    '"bias":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},' +
    '"weight":{"dtype":"F16","shape":[2,2],"data_offsets":[16,24]},' +
    '"mask":{"dtype":"BOOL","shape":[3],"data_offsets":[24,27]}}';
  const data = [
    ...[7, 0, 0, 0, 0, 0, 0, 0], // 7 as int64 LE
    ...[0, 0, 0, 0x3f, 0, 0, 0xc0, 0xbf], // 0.5f = 0x3f000000, -1.5f = 0xbfc00000
    ...[0, 0x3c, 0, 0x3c, 0, 0x3c, 0, 0x3c], // 1.0 in f16 = 0x3c00
    ...[1, 0, 1],
  ];
  const bytes = hfBytes(json, data);
  assert.equal((bytes.readBigUInt64LE(0) + 8n) % 8n, 0n, 'data starts 8-byte aligned');
  const p = tmp();
  writeFileSync(p, bytes);
  const f = await SafetensorsFile.open(p);
  assert.deepEqual(f.names(), ['step', 'bias', 'weight', 'mask']);
  assert.equal(f.header.dataStart, 8 + Buffer.byteLength(json) + ((8 - (Buffer.byteLength(json) % 8)) % 8));
  await f.close();
  const r = await readSafetensors(p);
  assert.deepEqual(r.metadata, { format: 'pt' });
  assert.deepEqual([...(r.tensors.get('step')!.data as BigInt64Array)], [7n]);
  assert.deepEqual(r.tensors.get('step')!.shape, []);
  assert.deepEqual([...(r.tensors.get('bias')!.data as Float32Array)], [0.5, -1.5]);
  assert.deepEqual([...(r.tensors.get('weight')!.data as Uint16Array)], [0x3c00, 0x3c00, 0x3c00, 0x3c00]);
  assert.deepEqual([...(r.tensors.get('mask')!.data as Uint8Array)], [1, 0, 1]);
  assert.deepEqual(await written(r.tensors, r.metadata), bytes, 'our writer produces the same bytes');
  const viaStream = await decodeStream(cutAt(bytes, [3, 50, 121, bytes.length - 2]), { chunkBytes: 3 });
  assertSame(r.tensors, await streamToDict(viaStream));
});

test('HF compatibility: header entries listed out of offset order (older writers sorted by name) are read by offset', async () => {
  const bytes = hfBytes(
    '{"a":{"dtype":"I8","shape":[1],"data_offsets":[2,3]},"b":{"dtype":"I16","shape":[1],"data_offsets":[0,2]}}',
    [0xfe, 0xff, 0x05],
  );
  const p = tmp();
  writeFileSync(p, bytes);
  const f = await SafetensorsFile.open(p);
  assert.deepEqual(f.names(), ['b', 'a']);
  assert.deepEqual([...((await f.readTensor('a')).data as Int8Array)], [5]);
  assert.deepEqual([...((await f.readTensor('b')).data as Int16Array)], [-2]);
  await f.close();
});

// ---- malformed files -------------------------------------------------------------------

function rawFile(bytes: Uint8Array): string {
  const p = tmp();
  writeFileSync(p, bytes);
  return p;
}
function withPrefix(headerLen: bigint, total: number): string {
  const b = Buffer.alloc(total);
  b.writeBigUInt64LE(headerLen);
  return rawFile(b);
}
function fileWith(header: unknown, dataBytes: number, rawHeader?: string): string {
  const text = rawHeader ?? JSON.stringify(header);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
  return rawFile(Buffer.concat([head, Buffer.from(text), Buffer.alloc(dataBytes)]));
}

const malformed: [string, () => string, RegExp][] = [
  ['empty file', () => rawFile(new Uint8Array(0)), /file too short: 0 bytes, need at least 8/],
  ['file shorter than 8 bytes', () => rawFile(new Uint8Array([1, 2, 3])), /file too short: 3 bytes/],
  ['header size past the end of the file', () => withPrefix(1000n, 20), /header size 1000 points past the end of the file \(20 bytes\)/],
  ['header size over the 100 MB limit', () => withPrefix(1n << 40n, 16), /header size 1099511627776 exceeds the limit of 100000000 bytes/],
  ['header size u64 max', () => withPrefix(0xffffffffffffffffn, 16), /header size 18446744073709551615 exceeds the limit/],
  ['empty header', () => fileWith(null, 0, ''), /header is not valid JSON/],
  ['bad JSON', () => fileWith(null, 0, '{"a": '), /header is not valid JSON/],
  ['header an array', () => fileWith([1, 2], 0), /header must be a JSON object/],
  ['header a string', () => fileWith('hi', 0), /header must be a JSON object/],
  ['tensor entry not an object', () => fileWith({ a: 3 }, 0), /tensor "a": entry must be an object/],
  ['unknown dtype', () => fileWith({ a: { dtype: 'F8', shape: [1], data_offsets: [0, 1] } }, 1), /tensor "a": unknown dtype "F8"/],
  ['missing dtype', () => fileWith({ a: { shape: [1], data_offsets: [0, 1] } }, 1), /tensor "a": unknown dtype undefined/],
  [
    'offsets overlapping',
    () => fileWith({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, 8),
    /tensor "b": data_offsets \[4, 8\] overlap the previous tensor \(ends at 8\)/,
  ],
  [
    'offsets past the end of the file',
    () => fileWith({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 8),
    /out of range: past the end of the file: header declares 16 data bytes, file has 8/,
  ],
  [
    'trailing bytes',
    () => fileWith({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, 12),
    /trailing bytes.*declares 4 data bytes, file has 12/,
  ],
  [
    'offsets not matching shape × dtype size',
    () => fileWith({ a: { dtype: 'F64', shape: [2], data_offsets: [0, 8] } }, 8),
    /tensor "a": data_offsets span 8 bytes but shape \[2\] × F64 \(8 B\) needs 16/,
  ],
  [
    'negative shape',
    () => fileWith({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 0] } }, 0),
    /tensor "a": shape must be a list of non-negative integers, got \[-1\]/,
  ],
  [
    'non-integer shape',
    () => fileWith({ a: { dtype: 'U8', shape: [1.5], data_offsets: [0, 1] } }, 1),
    /tensor "a": shape must be a list of non-negative integers, got \[1.5\]/,
  ],
  ['shape not a list', () => fileWith({ a: { dtype: 'U8', shape: 4, data_offsets: [0, 4] } }, 4), /tensor "a": shape must be a list/],
  [
    'offsets not integers',
    () => fileWith({ a: { dtype: 'U8', shape: [1], data_offsets: ['0', '1'] } }, 1),
    /tensor "a": data_offsets must be \[begin, end\] non-negative integers/,
  ],
  [
    'offsets of the wrong arity',
    () => fileWith({ a: { dtype: 'U8', shape: [1], data_offsets: [0] } }, 1),
    /tensor "a": data_offsets must be \[begin, end\]/,
  ],
  [
    'gap in the data',
    () => fileWith({ a: { dtype: 'U8', shape: [1], data_offsets: [1, 2] } }, 2),
    /tensor "a": gap in data before offset 1/,
  ],
  [
    'gap between tensors',
    () => fileWith({ a: { dtype: 'U8', shape: [1], data_offsets: [0, 1] }, b: { dtype: 'U8', shape: [1], data_offsets: [2, 3] } }, 3),
    /tensor "b": gap in data before offset 2 \(previous tensor ends at 1\)/,
  ],
  [
    'end before begin',
    () => fileWith({ a: { dtype: 'U8', shape: [1], data_offsets: [2, 1] } }, 2),
    /tensor "a": data_offsets end 1 is before begin 2/,
  ],
  [
    'unknown field',
    () => fileWith({ a: { dtype: 'U8', shape: [1], data_offsets: [0, 1], extra: 1 } }, 1),
    /tensor "a": unknown field "extra"/,
  ],
  ['metadata not an object', () => fileWith({ __metadata__: ['x'] }, 0), /__metadata__ must be an object of strings/],
  ['non-string metadata', () => fileWith({ __metadata__: { a: 1 } }, 0), /__metadata__\.a must be a string, got number/],
];
for (const [what, make, re] of malformed) {
  test(`malformed file rejected at open, naming the problem and the file: ${what}`, async () => {
    const p = make();
    await assert.rejects(SafetensorsFile.open(p), (e: Error) => {
      assert.equal(e.name, 'SafetensorsError');
      assert.match(e.message, re);
      assert.ok(e.message.startsWith(`${p}: `), `message names the file: ${e.message}`);
      return true;
    });
    await assert.rejects(readSafetensors(p), re);
  });
}

// ---- writer misuse -------------------------------------------------------------------

const u8 = (name: string, len: number): TensorInfo => ({ name, dtype: 'U8', shape: [len] });

test('writer: out of order, unknown name, too many bytes, incomplete tensor are refused, and no file is left behind', async () => {
  const dir = freshDir();
  const p = join(dir, 'm.safetensors');
  const w = await SafetensorsWriter.open(p, [u8('a', 2), u8('b', 2)]);
  await assert.rejects(w.write('b', new Uint8Array(2)), /tensor "b" written out of order: expected "a" next/);
  await assert.rejects(w.write('zz', new Uint8Array(2)), /tensor "zz" is not in the header \(expected "a" next\)/);
  await assert.rejects(w.write('a', new Uint8Array(3)), /tensor "a": 3 bytes written, header declares 2/);
  await w.write('a', new Uint8Array([1]));
  await assert.rejects(w.write('a', new Uint8Array(2)), /tensor "a": 3 bytes written, header declares 2/);
  await w.write('a', new Uint8Array([2]));
  await assert.rejects(w.write('a', new Uint8Array(1)), /tensor "a" written out of order: expected "b" next/);
  await w.write('b', new Uint8Array(1));
  await assert.rejects(w.close(), /tensor "b" incomplete at close: 1 of 2 bytes written/);
  assert.deepEqual(readdirSync(dir), [], 'neither the file nor its temp exists');
  await assert.rejects(w.write('b', new Uint8Array(1)), /after the writer was aborted/);
});

test('writer: a tensor never written at all is reported incomplete; writes past the last tensor are refused', async () => {
  const dir = freshDir();
  const w = await SafetensorsWriter.open(join(dir, 'x.safetensors'), [u8('a', 1), u8('b', 4)]);
  await w.write('a', new Uint8Array(1));
  await assert.rejects(w.close(), /tensor "b" incomplete at close: 0 of 4 bytes written/);
  assert.deepEqual(readdirSync(dir), []);
  const w2 = await SafetensorsWriter.open(join(dir, 'y.safetensors'), [u8('a', 1)]);
  await w2.write('a', new Uint8Array(1));
  await assert.rejects(w2.write('c', new Uint8Array(1)), /tensor "c" written after all declared tensors/);
  await w2.close();
  assert.deepEqual(readdirSync(dir), ['y.safetensors']);
});

test('writer: duplicate or reserved names are refused before any file is created', async () => {
  const dir = freshDir();
  const p = join(dir, 'dup.safetensors');
  await assert.rejects(SafetensorsWriter.open(p, [u8('a', 1), u8('b', 1), u8('a', 1)]), /duplicate tensor name "a"/);
  await assert.rejects(SafetensorsWriter.open(p, [u8('__metadata__', 1)]), /may not be named "__metadata__"/);
  await assert.rejects(
    SafetensorsWriter.open(p, [{ name: 'neg', dtype: 'F32', shape: [2, -1] }]),
    /tensor "neg": shape must be a list of non-negative integers/,
  );
  assert.deepEqual(readdirSync(dir), []);
});

test('writer: zero-size tensors need no write, but may be written explicitly; pieces may be any size', async () => {
  const infos: TensorInfo[] = [
    { name: 'e1', dtype: 'F32', shape: [0] },
    u8('a', 5),
    { name: 'e2', dtype: 'I64', shape: [3, 0] },
    { name: 'e3', dtype: 'F16', shape: [0] },
    u8('b', 2),
    { name: 'e4', dtype: 'U8', shape: [0] },
  ];
  const p1 = tmp();
  const w = await SafetensorsWriter.open(p1, infos, { k: 'v' });
  assert.deepEqual(w.position, { name: 'a', offset: 0 });
  await w.write('a', new Uint8Array([1, 2]));
  assert.deepEqual(w.position, { name: 'a', offset: 2 });
  await w.write('a', new Uint8Array([]));
  await w.write('a', new Uint8Array([3, 4, 5]));
  await w.write('b', new Uint8Array([6, 7]));
  assert.equal(w.position, undefined);
  await w.close();
  await w.close(); // idempotent once closed
  const p2 = tmp();
  const w2 = await SafetensorsWriter.open(p2, infos, { k: 'v' });
  await w2.write('e1', new Uint8Array(0));
  await w2.write('a', new Uint8Array([1, 2, 3, 4, 5]));
  await w2.write('e2', new Uint8Array(0));
  await w2.write('e3', new Uint8Array(0));
  await w2.write('b', new Uint8Array([6, 7]));
  await w2.write('e4', new Uint8Array(0));
  await w2.close();
  assert.equal(w2.bytesWritten, statSync(p2).size);
  assert.deepEqual(readFileSync(p1), readFileSync(p2));
  const r = await readSafetensors(p1);
  assert.deepEqual([...r.tensors.keys()], ['e1', 'a', 'e2', 'e3', 'b', 'e4']);
  assert.deepEqual([...(r.tensors.get('a')!.data as Uint8Array)], [1, 2, 3, 4, 5]);
});

test('writer: a write issued before the previous one resolved is refused', async () => {
  const w = await SafetensorsWriter.open(tmp(), [u8('a', 1 << 20)]);
  const first = w.write('a', new Uint8Array(1 << 19));
  await assert.rejects(w.write('a', new Uint8Array(1)), /previous write is still pending/);
  await first;
  await w.write('a', new Uint8Array(1 << 19));
  await w.close();
});

// ---- atomic replacement ------------------------------------------------------------------

test('file writer: data goes to path.tmp-<random> and replaces the old file only at close', async () => {
  const dir = freshDir();
  const p = join(dir, 'model.safetensors');
  writeFileSync(p, 'old model');
  const w = await SafetensorsWriter.open(p, [u8('a', 4)]);
  await w.write('a', new Uint8Array([1, 2]));
  const during = readdirSync(dir).sort();
  assert.equal(during.length, 2);
  assert.match(during[1]!, /^model\.safetensors\.tmp-[0-9a-f]{12}$/);
  assert.equal(readFileSync(p, 'utf8'), 'old model', 'a crash now would leave the old file intact');
  await w.write('a', new Uint8Array([3, 4]));
  await w.close();
  assert.deepEqual(readdirSync(dir), ['model.safetensors']);
  assert.deepEqual([...((await readSafetensors(p)).tensors.get('a')!.data as Uint8Array)], [1, 2, 3, 4]);
});

test('file writer: abort() removes the temp file and keeps the old one; close after abort fails', async () => {
  const dir = freshDir();
  const p = join(dir, 'model.safetensors');
  writeFileSync(p, 'old model');
  const w = await SafetensorsWriter.open(p, [u8('a', 4)]);
  await w.write('a', new Uint8Array([1, 2]));
  await w.abort();
  await w.abort(); // idempotent
  assert.deepEqual(readdirSync(dir), ['model.safetensors']);
  assert.equal(readFileSync(p, 'utf8'), 'old model');
  await assert.rejects(w.close(), /close after abort/);
  await assert.rejects(w.write('a', new Uint8Array(2)), /after the writer was aborted/);
});

test('writeStreamToFile: a stream failing midway leaves no file and no temp file', async () => {
  const dir = freshDir();
  const inner = dictToStream(
    new Map([
      ['a', fill('F32', [64], 1)],
      ['b', fill('F32', [64], 2)],
    ]),
    { chunkBytes: 32 },
  );
  const failing: TensorStream = {
    header: inner.header,
    async *pieces() {
      let k = 0;
      for await (const piece of inner.pieces()) {
        if (k++ === 5) throw new Error('producer crashed');
        yield piece;
      }
    },
  };
  await assert.rejects(writeStreamToFile(join(dir, 'x.safetensors'), failing), /producer crashed/);
  assert.deepEqual(readdirSync(dir), []);
});

test('writeStreamToFile: a piece at the wrong offset is refused', async () => {
  const dir = freshDir();
  const t = fill('F32', [8], 3);
  const bytes = tensorBytes(t);
  const header = { tensors: [{ name: 'a', dtype: 'F32' as const, shape: [8] }], metadata: {} };
  const piece = (offset: number, b: Uint8Array) => ({
    index: 0,
    name: 'a',
    dtype: 'F32' as const,
    shape: [8],
    offset,
    bytes: b,
    tensorBytes: 32,
  });
  const swapped: TensorStream = {
    header,
    async *pieces() {
      yield piece(16, bytes.subarray(16));
      yield piece(0, bytes.subarray(0, 16));
    },
  };
  await assert.rejects(
    writeStreamToFile(join(dir, 'x.safetensors'), swapped),
    /tensor "a": piece at offset 16 arrived when 0 bytes were written/,
  );
  assert.deepEqual(readdirSync(dir), []);
});

// ---- Writable destinations ------------------------------------------------------------------

/** A slow destination that records how much data was ever queued in it. */
class SlowSink extends Writable {
  maxQueued = 0;
  readonly chunks: Buffer[] = [];
  constructor(private readonly failAt = -1) {
    super({ highWaterMark: 64 });
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.maxQueued = Math.max(this.maxQueued, this.writableLength);
    if (this.chunks.length === this.failAt) return void setImmediate(() => cb(new Error('disk on fire')));
    this.chunks.push(chunk);
    setImmediate(cb);
  }
}

test('Writable destination: the writer waits for drain, so at most one piece is queued', async () => {
  const dict: TensorDict = new Map([['w', fill('F32', [1 << 16], 9)]]); // 256 KiB
  const sink = new SlowSink();
  await writeStreamToFile(sink, dictToStream(dict, { chunkBytes: 1024 }));
  assert.ok(sink.writableFinished, 'the Writable was ended');
  const p = tmp();
  await writeSafetensors(p, dict);
  assert.deepEqual(Buffer.concat(sink.chunks), readFileSync(p));
  assert.ok(sink.chunks.length > 256);
  assert.ok(sink.maxQueued <= 64 + 1024, `queued up to ${sink.maxQueued} bytes; without backpressure it would be ~256 KiB`);
});

test('Writable destination: a write error rejects the write (no uncaught error event)', async () => {
  const dict: TensorDict = new Map([['w', fill('F32', [4096], 9)]]);
  const sink = new SlowSink(3);
  await assert.rejects(writeStreamToFile(sink, dictToStream(dict, { chunkBytes: 256 })), /disk on fire/);
  assert.ok(sink.destroyed);
});

test('Writable destination: a consumer that goes away mid-file makes the writer fail instead of hanging', async () => {
  const sink = new PassThrough({ highWaterMark: 16 });
  let got = 0;
  sink.on('data', (c: Buffer) => {
    got += c.length;
    if (got > 100) sink.destroy();
  });
  const dict: TensorDict = new Map([['w', fill('U8', [10_000], 1)]]);
  await assert.rejects(
    writeStreamToFile(sink, dictToStream(dict, { chunkBytes: 50 })),
    /closed before the safetensors data was complete|destroyed/i,
  );
});

test('Writable destination: an already-ended stream is refused at open', async () => {
  const sink = new PassThrough();
  sink.end();
  await assert.rejects(SafetensorsWriter.open(sink, [u8('a', 1)]), /closed before the safetensors data was complete/);
});

test('buildHeader layout matches what the writer puts on disk', async () => {
  const infos = [u8('a', 3), { name: 'b', dtype: 'F64' as const, shape: [2] }];
  const { bytes, header } = buildHeader(infos, { x: 'y' });
  const w = await SafetensorsWriter.open(tmp(), infos, { x: 'y' });
  assert.deepEqual(w.header, header);
  assert.equal(w.bytesWritten, bytes.byteLength);
  await w.abort();
});
