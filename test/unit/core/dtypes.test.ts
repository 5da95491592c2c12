/**
 * 16-bit float conversions (f16 and bf16 are stored as raw bits): known bit
 * patterns, subnormals, round-to-nearest-even, NaN/Inf, exhaustive round trips
 * and a nearest-value property; plus the dtype table and typed-array views.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  DTYPES,
  allocate,
  bf16ToF32,
  dtypeSize,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  floatReader,
  floatWriter,
  isDType,
  isFloatDType,
  viewAs,
} from '../../../src/core/dtypes.ts';

const hex = (h: number): string => `0x${h.toString(16).padStart(4, '0')}`;

test('f16: known bit patterns both ways', () => {
  const known: [number, number][] = [
    [1, 0x3c00],
    [-2, 0xc000],
    [0.5, 0x3800],
    [0.333251953125, 0x3555], // nearest f16 to 1/3
    [65504, 0x7bff], // largest finite
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [0, 0x0000],
    [-0, 0x8000],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
  ];
  for (const [v, h] of known) {
    assert.equal(hex(f32ToF16(v)), hex(h), `f32ToF16(${v})`);
    assert.ok(Object.is(f16ToF32(h), v), `f16ToF32(${hex(h)}) = ${f16ToF32(h)}, want ${v}`);
  }
  assert.equal(f32ToF16(1 / 3), 0x3555);
});

test('f16: round to nearest, ties to even, overflow to infinity, underflow to signed zero', () => {
  assert.equal(f32ToF16(1 + 2 ** -11), 0x3c00, 'tie between 0x3c00 and 0x3c01 → even 0x3c00');
  assert.equal(f32ToF16(1 + 3 * 2 ** -11), 0x3c02, 'tie between 0x3c01 and 0x3c02 → even 0x3c02');
  assert.equal(f32ToF16(1 + 2 ** -11 + 2 ** -20), 0x3c01, 'just above the tie rounds up');
  assert.equal(f32ToF16(65519), 0x7bff, 'below the overflow tie stays finite');
  assert.equal(f32ToF16(65520), 0x7c00, 'the tie between 65504 and 2^16 rounds (to even) to infinity');
  assert.equal(f32ToF16(-1e6), 0xfc00);
  assert.equal(f32ToF16(2 ** -25), 0x0000, 'half the smallest subnormal: tie → even 0');
  assert.equal(f32ToF16(2 ** -25 + 2 ** -35), 0x0001, 'just above that rounds up');
  assert.equal(f32ToF16(3 * 2 ** -25), 0x0002, 'subnormal tie 1.5 ulp → even 2');
  assert.equal(f32ToF16(-(2 ** -30)), 0x8000, 'underflow keeps the sign');
  assert.equal(f32ToF16(2 ** -14 - 2 ** -25), 0x0400, 'rounding up out of the subnormals gives the smallest normal');
  assert.equal(f32ToF16(2 - 2 ** -12), 0x4000, 'mantissa carry bumps the exponent');
});

test('f16: NaN stays NaN (quiet), both ways', () => {
  const h = f32ToF16(Number.NaN);
  assert.equal(h & 0x7c00, 0x7c00);
  assert.notEqual(h & 0x3ff, 0);
  assert.ok(Number.isNaN(f16ToF32(h)));
  for (const p of [0x7c01, 0x7e00, 0xfc01, 0xffff]) assert.ok(Number.isNaN(f16ToF32(p)), hex(p));
});

test('bf16: known bit patterns, ties to even, overflow, NaN', () => {
  const known: [number, number][] = [
    [1, 0x3f80],
    [-2, 0xc000],
    [-3, 0xc040],
    [0.5, 0x3f00],
    [0, 0x0000],
    [-0, 0x8000],
    [Infinity, 0x7f80],
    [-Infinity, 0xff80],
    [3.3895313892515355e38, 0x7f7f], // largest finite
    [2 ** -126, 0x0080], // smallest normal (same exponent range as f32)
    [2 ** -133, 0x0001], // smallest subnormal
  ];
  for (const [v, h] of known) {
    assert.equal(hex(f32ToBf16(v)), hex(h), `f32ToBf16(${v})`);
    assert.ok(Object.is(bf16ToF32(h), v), `bf16ToF32(${hex(h)}) = ${bf16ToF32(h)}, want ${v}`);
  }
  assert.equal(f32ToBf16(Math.PI), 0x4049, 'pi (f32 0x40490fdb) rounds down');
  assert.equal(f32ToBf16(1 + 2 ** -8), 0x3f80, 'tie → even (down)');
  assert.equal(f32ToBf16(1 + 3 * 2 ** -8), 0x3f82, 'tie → even (up)');
  assert.equal(f32ToBf16(1 + 2 ** -8 + 2 ** -16), 0x3f81, 'above the tie rounds up');
  assert.equal(f32ToBf16(3.4028234663852886e38), 0x7f80, 'f32 max rounds up to infinity');
  const nan = f32ToBf16(Number.NaN);
  assert.equal(nan & 0x7f80, 0x7f80);
  assert.notEqual(nan & 0x7f, 0);
  assert.ok(Number.isNaN(bf16ToF32(nan)));
  // a NaN whose payload sits only in the bits bf16 drops must not truncate to infinity
  const f = new Float32Array(new Uint32Array([0x7f800001]).buffer)[0]!;
  assert.ok(Number.isNaN(f) && Number.isNaN(bf16ToF32(f32ToBf16(f))));
});

test('exhaustive: f16 → f32 → f16 and bf16 → f32 → bf16 are the identity on all 65536 non-NaN patterns', () => {
  let nonNaN = 0;
  for (let h = 0; h < 0x10000; h++) {
    const v = f16ToF32(h);
    if (!Number.isNaN(v)) {
      nonNaN++;
      if (f32ToF16(v) !== h) assert.fail(`f16 pattern ${hex(h)} → ${v} → ${hex(f32ToF16(v))}`);
      if (Math.fround(v) !== v) assert.fail(`f16 ${hex(h)} is not exact in f32`);
    }
    const b = bf16ToF32(h);
    if (Number.isNaN(b)) {
      if (!Number.isNaN(bf16ToF32(f32ToBf16(b)))) assert.fail(`bf16 NaN ${hex(h)} lost`);
    } else if (f32ToBf16(b) !== h) assert.fail(`bf16 pattern ${hex(h)} → ${b} → ${hex(f32ToBf16(b))}`);
  }
  assert.equal(nonNaN, 65536 - 2 * 1023, 'f16 has 2×1023 NaN patterns');
});

/** `h` is the representable value nearest to v, and on a tie the one with an even mantissa. */
function assertNearest(v: number, h: number, toNum: (h: number) => number, what: string): void {
  const m = h & 0x7fff;
  const a = Math.abs(v);
  assert.equal(h & 0x8000, v < 0 || Object.is(v, -0) ? 0x8000 : 0, `${what}(${v}) sign`);
  const d = Math.abs(toNum(m) - a);
  for (const nb of [m - 1, m + 1]) {
    if (nb < 0 || !Number.isFinite(toNum(nb))) continue;
    const dn = Math.abs(toNum(nb) - a);
    assert.ok(d <= dn, `${what}(${v}) = ${hex(h)} but ${hex(nb)} is nearer`);
    if (d === dn) assert.equal(m & 1, 0, `${what}(${v}) tie must go to even`);
  }
}

test('property: f32ToF16 and f32ToBf16 return the nearest value, ties to even', () => {
  fc.assert(
    fc.property(fc.float({ noNaN: true, min: Math.fround(-65519.99), max: Math.fround(65519.99) }), (v) =>
      assertNearest(v, f32ToF16(v), f16ToF32, 'f32ToF16'),
    ),
    { numRuns: 5000 },
  );
  fc.assert(
    fc.property(fc.float({ noNaN: true, min: Math.fround(-3.39e38), max: Math.fround(3.39e38) }), (v) =>
      assertNearest(v, f32ToBf16(v), bf16ToF32, 'f32ToBf16'),
    ),
    { numRuns: 5000 },
  );
});

test('dtype table, typed-array views and float readers/writers', () => {
  assert.deepEqual(DTYPES.map(dtypeSize), [8, 4, 2, 2, 8, 4, 2, 1, 1, 1]);
  assert.ok(isDType('BF16') && !isDType('bf16') && !isDType('F8_E4M3'));
  assert.deepEqual(DTYPES.filter(isFloatDType), ['F64', 'F32', 'F16', 'BF16']);
  // aligned views share memory; misaligned bytes are copied so the view is legal
  const buf = new Uint8Array(12);
  const aligned = viewAs('F32', buf.subarray(4));
  aligned[0] = 1;
  assert.equal(new Float32Array(buf.buffer, 4, 1)[0], 1);
  const mis = viewAs('I16', buf.subarray(1, 5));
  assert.equal(mis.length, 2);
  // a Node Buffer at an odd offset (as protobuf decodes a gRPC data frame): Buffer#slice is a view, the copy must not be
  const wire = Buffer.alloc(13);
  wire.writeFloatLE(2.5, 1);
  const fromWire = viewAs('F32', wire.subarray(1, 13));
  assert.equal(fromWire[0], 2.5);
  assert.equal(fromWire.byteOffset % 4, 0);
  assert.throws(() => viewAs('F64', new Uint8Array(12)), /byte length 12 is not a multiple of F64 element size 8/);
  for (const d of ['F16', 'BF16', 'F32', 'F64', 'I64'] as const) {
    const data = allocate(d, 3);
    const w = floatWriter(d, data);
    const r = floatReader(d, data);
    [1.5, -2, 0.25].forEach((v, i) => w(i, v));
    assert.deepEqual([0, 1, 2].map(r), d === 'I64' ? [2, -2, 0] : [1.5, -2, 0.25], d);
  }
});
