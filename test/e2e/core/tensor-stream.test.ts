/**
 * Tensor streams: dict ↔ stream round trips with element-aligned pieces, and the
 * safetensors byte codec refusing truncated, overlong and oversized input.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { DTYPES, type DType, allocate, dtypeSize } from '../../../src/core/dtypes.ts';
import { parseHeader, readHeaderLength } from '../../../src/core/safetensors-header.ts';
import {
  type TensorPiece,
  type TensorStream,
  decodeStream,
  dictToStream,
  encodeStream,
  splitTensor,
  streamToDict,
} from '../../../src/core/tensor-stream.ts';
import { type Tensor, type TensorDict, tensorBytes } from '../../../src/core/tensor.ts';

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

const arbTensor = fc
  .record({ dtype: fc.constantFrom(...DTYPES), shape: fc.array(fc.integer({ min: 0, max: 6 }), { maxLength: 3 }), seed: fc.integer() })
  .map(({ dtype, shape, seed }) => fill(dtype, shape, seed));
const arbDict = fc
  .uniqueArray(
    fc.tuple(
      fc.string({ minLength: 1, maxLength: 8 }).filter((s) => s !== '__metadata__'),
      arbTensor,
    ),
    { selector: ([k]) => k, maxLength: 8 },
  )
  .map((e) => new Map(e) as TensorDict);

/** Same names, dtypes, shapes and bytes; data-holding tensors in the same order (see safetensors.test.ts). */
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

async function encode(stream: TensorStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of encodeStream(stream)) parts.push(Buffer.from(b));
  return Buffer.concat(parts);
}

async function* chunks(...parts: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield p;
}

/** Pieces must arrive in header order, contiguous, element-aligned and no larger than the chunk. */
function checkPieces(pieces: readonly TensorPiece[], dict: TensorDict, chunk: number, names: readonly string[] = [...dict.keys()]): void {
  let index = 0;
  let offset = 0;
  for (const p of pieces) {
    if (p.index !== index) {
      assert.equal(offset, byteLen(dict, names[index]!), `"${names[index]}" complete before the next tensor`);
      assert.ok(p.index > index, 'tensors in header order');
      index = p.index;
      offset = 0;
    }
    assert.equal(p.name, names[p.index]);
    assert.equal(p.offset, offset, `"${p.name}" pieces contiguous`);
    const size = dtypeSize(p.dtype);
    assert.equal(p.bytes.byteLength % size, 0, `"${p.name}" piece element-aligned`);
    assert.ok(p.bytes.byteLength <= Math.max(chunk, size), `"${p.name}" piece of ${p.bytes.byteLength} > chunk ${chunk}`);
    assert.equal(p.tensorBytes, byteLen(dict, p.name));
    offset += p.bytes.byteLength;
  }
}
const byteLen = (dict: TensorDict, name: string): number => tensorBytes(dict.get(name)!).byteLength;

test('property: dictToStream → streamToDict is the identity; pieces are aligned, ordered and chunk-sized', async () => {
  await fc.assert(
    fc.asyncProperty(arbDict, fc.integer({ min: 1, max: 80 }), async (dict, chunk) => {
      const pieces: TensorPiece[] = [];
      for await (const p of dictToStream(dict, { chunkBytes: chunk }).pieces()) pieces.push(p);
      checkPieces(pieces, dict, chunk);
      // every tensor, zero-size included, shows up at least once
      assert.deepEqual(
        [...new Set(pieces.map((p) => p.index))],
        [...dict.keys()].map((_, i) => i),
      );
      const back = await streamToDict(dictToStream(dict, { chunkBytes: chunk }));
      assert.deepEqual([...back.keys()], [...dict.keys()], 'no parsing involved: the exact order is kept');
      assertSame(dict, back);
    }),
    { numRuns: 150 },
  );
});

test('property: decodeStream pieces are aligned and chunk-sized whatever the source chunking', async () => {
  await fc.assert(
    fc.asyncProperty(arbDict, fc.integer({ min: 1, max: 80 }), fc.integer({ min: 1, max: 13 }), async (dict, chunk, srcChunk) => {
      const bytes = await encode(dictToStream(dict));
      const src = async function* () {
        for (let o = 0; o < bytes.length; o += srcChunk) yield bytes.subarray(o, o + srcChunk);
      };
      const s = await decodeStream(src(), { chunkBytes: chunk });
      const pieces: TensorPiece[] = [];
      for await (const p of s.pieces()) pieces.push({ ...p, bytes: p.bytes.slice() });
      // the decoded header's order (zero-size tensors may be reordered, see assertSame)
      checkPieces(
        pieces,
        dict,
        chunk,
        s.header.tensors.map((t) => t.name),
      );
    }),
    { numRuns: 100 },
  );
});

test('encodeStream writes a valid safetensors header with the stream metadata, then the data', async () => {
  const dict: TensorDict = new Map([
    ['x', fill('F16', [3], 1)],
    ['y', fill('I32', [2, 2], 2)],
  ]);
  const bytes = await encode(dictToStream(dict, { metadata: { epoch: '3' } }));
  const len = readHeaderLength(bytes, bytes.length);
  const h = parseHeader(bytes.subarray(8, 8 + len), bytes.length);
  assert.deepEqual(h.metadata, { epoch: '3' });
  assert.deepEqual(
    h.tensors.map((t) => [t.name, t.dtype, t.shape, t.begin, t.end]),
    [
      ['x', 'F16', [3], 0, 6],
      ['y', 'I32', [2, 2], 6, 22],
    ],
  );
  assert.deepEqual(bytes.subarray(h.dataStart + 6), Buffer.from(tensorBytes(dict.get('y')!)));
});

test('streamToDict rejects out-of-order and incomplete streams', async () => {
  const header = { tensors: [{ name: 'a', dtype: 'U8' as const, shape: [4] }], metadata: {} };
  const piece = (offset: number, len: number): TensorPiece => ({
    index: 0,
    name: 'a',
    dtype: 'U8',
    shape: [4],
    offset,
    bytes: new Uint8Array(len),
    tensorBytes: 4,
  });
  const of = (...ps: TensorPiece[]): TensorStream => ({ header, pieces: () => chunks2(ps) });
  async function* chunks2(ps: TensorPiece[]): AsyncGenerator<TensorPiece> {
    yield* ps;
  }
  await assert.rejects(streamToDict(of(piece(2, 2), piece(0, 2))), /tensor stream out of order at "a" offset 2/);
  await assert.rejects(streamToDict(of(piece(0, 3))), /tensor "a" incomplete: 3 of 4 bytes/);
  await assert.rejects(streamToDict(of()), /tensor "a" incomplete: 0 of 4 bytes/);
  assert.equal((await streamToDict(of(piece(0, 1), piece(1, 3)))).get('a')!.data.length, 4);
});

test('decodeStream rejects a stream truncated at any byte', async () => {
  const dict: TensorDict = new Map([
    ['a', fill('F32', [4], 1)],
    ['b', fill('I16', [3], 2)],
  ]);
  const bytes = await encode(dictToStream(dict, { metadata: { m: 'x' } }));
  const headerEnd = 8 + readHeaderLength(bytes);
  for (let cut = 0; cut < bytes.length; cut++) {
    const re = cut < headerEnd ? /stream ended early: needed \d+ bytes, had \d+/ : /stream ended (early|before all tensor data arrived)/;
    await assert.rejects(
      async () => streamToDict(await decodeStream(chunks(bytes.subarray(0, cut)), { chunkBytes: 4 })),
      (e: Error) => re.test(e.message) && e.name === 'SafetensorsError',
      `cut at ${cut}`,
    );
  }
  assertSame(dict, await streamToDict(await decodeStream(chunks(bytes))));
});

test('decodeStream rejects bytes after the last tensor, in the same chunk or a later one', async () => {
  const dict: TensorDict = new Map([['a', fill('F32', [16], 1)]]);
  const bytes = await encode(dictToStream(dict));
  await assert.rejects(
    async () => streamToDict(await decodeStream(chunks(Buffer.concat([bytes, Buffer.from([1])])))),
    /1 unexpected bytes after the last tensor/,
  );
  await assert.rejects(
    async () => streamToDict(await decodeStream(chunks(bytes, new Uint8Array(0), Buffer.from([1, 2])))),
    /unexpected bytes after the last tensor/,
  );
  // empty chunks at the end are not data
  assertSame(dict, await streamToDict(await decodeStream(chunks(bytes, new Uint8Array(0), new Uint8Array(0)))));
});

test('decodeStream respects maxBytes before reading any data, and rejects malformed headers', async () => {
  const dict: TensorDict = new Map([['a', fill('F32', [16], 1)]]);
  const bytes = await encode(dictToStream(dict));
  let pulled = 0;
  async function* counting(): AsyncGenerator<Uint8Array> {
    const headerEnd = 8 + readHeaderLength(bytes);
    for (const part of [bytes.subarray(0, headerEnd), bytes.subarray(headerEnd)]) {
      pulled++;
      yield part;
    }
  }
  await assert.rejects(decodeStream(counting(), { maxBytes: 63 }), /stream declares 64 data bytes, over the limit of 63/);
  assert.equal(pulled, 1, 'the data chunk was never pulled');
  assertSame(dict, await streamToDict(await decodeStream(chunks(bytes), { maxBytes: 64 })));
  const bad = Buffer.from(bytes);
  bad.write('[', 8); // header no longer an object
  await assert.rejects(decodeStream(chunks(bad)), /header is not valid JSON|header must be a JSON object/);
});

test('a decoded stream can be read only once', async () => {
  const bytes = await encode(dictToStream(new Map([['a', fill('U8', [3], 1)]])));
  const s = await decodeStream(chunks(bytes));
  await streamToDict(s);
  await assert.rejects(streamToDict(s), /can be read only once/);
});

test('splitTensor: element-aligned pieces covering the bytes, one empty piece for a zero-size tensor', () => {
  const t = fill('F64', [5], 3);
  const pieces = [...splitTensor(2, 't', t, tensorBytes(t), 20)];
  assert.deepEqual(
    pieces.map((p) => [p.index, p.offset, p.bytes.byteLength]),
    [
      [2, 0, 16],
      [2, 16, 16],
      [2, 32, 8],
    ],
  );
  assert.deepEqual(Buffer.concat(pieces.map((p) => p.bytes)), Buffer.from(tensorBytes(t)));
  const e = [...splitTensor(0, 'e', { dtype: 'I8', shape: [0] }, new Uint8Array(0), 8)];
  assert.deepEqual(
    e.map((p) => [p.offset, p.bytes.byteLength, p.tensorBytes]),
    [[0, 0, 0]],
  );
  // a chunk smaller than one element still yields whole elements
  assert.deepEqual(
    [...splitTensor(0, 't', t, tensorBytes(t), 1)].map((p) => p.bytes.byteLength),
    [8, 8, 8, 8, 8],
  );
});
