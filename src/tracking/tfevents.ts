/**
 * TensorBoard's event file format, written by hand (three small protobuf messages): a file is a
 * sequence of TFRecords — u64 LE length, u32 LE masked CRC-32C of the length, the bytes, u32 LE
 * masked CRC-32C of the bytes — each an `Event` protobuf (tensorflow/core/util/event.proto):
 *   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
 *   Summary { repeated Value value = 1; }
 *   Value   { string tag = 1; float simple_value = 2; SummaryMetadata metadata = 9; TensorProto tensor = 8; }
 * Scalars are `simple_value`s; texts are string tensors with the "text" plugin's metadata, what
 * `tf.summary.text` writes. Tested with TensorBoard's own reader (test/tracking-tensorboard.test.ts).
 */

// ---- CRC-32C (Castagnoli), masked as TFRecord wants ----------------------------

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

export function crc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

export function maskedCrc32c(data: Uint8Array): number {
  const c = crc32c(data);
  return (((c >>> 15) | (c << 17)) + 0xa282ead8) >>> 0;
}

/** One TFRecord around `data`. */
export function tfRecord(data: Uint8Array): Buffer {
  const head = Buffer.alloc(12);
  head.writeBigUInt64LE(BigInt(data.length), 0);
  head.writeUInt32LE(maskedCrc32c(head.subarray(0, 8)), 8);
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(maskedCrc32c(data), 0);
  return Buffer.concat([head, data, tail]);
}

// ---- protobuf encoding (the few wire types these messages use) ------------------

function varint(n: bigint): number[] {
  const out: number[] = [];
  let v = BigInt.asUintN(64, n);
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

const key = (field: number, wire: number): number[] => varint(BigInt((field << 3) | wire));

function bytesField(field: number, data: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([...key(field, 2), ...varint(BigInt(data.length))]), data]);
}

const stringField = (field: number, s: string): Buffer => bytesField(field, Buffer.from(s, 'utf8'));

function doubleField(field: number, v: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeDoubleLE(v);
  return Buffer.concat([Buffer.from(key(field, 1)), b]);
}

function floatField(field: number, v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeFloatLE(v);
  return Buffer.concat([Buffer.from(key(field, 5)), b]);
}

const int64Field = (field: number, v: number): Buffer => Buffer.from([...key(field, 0), ...varint(BigInt(Math.trunc(v)))]);

// ---- the messages --------------------------------------------------------------

/** DataType.DT_STRING in tensorflow/core/framework/types.proto */
const DT_STRING = 7;

export type SummaryValue = { tag: string; scalar: number } | { tag: string; text: string };

function summaryValue(v: SummaryValue): Buffer {
  if ('scalar' in v) return Buffer.concat([stringField(1, v.tag), floatField(2, v.scalar)]);
  // SummaryMetadata { PluginData plugin_data = 1 { string plugin_name = 1; } }
  const metadata = bytesField(1, stringField(1, 'text'));
  // TensorProto { DataType dtype = 1; TensorShapeProto tensor_shape = 2 (empty: a scalar); repeated bytes string_val = 8; }
  const tensor = Buffer.concat([int64Field(1, DT_STRING), bytesField(2, Buffer.alloc(0)), stringField(8, v.text)]);
  return Buffer.concat([stringField(1, v.tag), bytesField(9, metadata), bytesField(8, tensor)]);
}

/** An Event holding one summary value (wall time in seconds). */
export function summaryEvent(wallTime: number, step: number, value: SummaryValue): Buffer {
  return Buffer.concat([doubleField(1, wallTime), int64Field(2, step), bytesField(5, bytesField(1, summaryValue(value)))]);
}

/** The first event of every file: its version. */
export function fileVersionEvent(wallTime: number): Buffer {
  return Buffer.concat([doubleField(1, wallTime), stringField(3, 'brain.Event:2')]);
}
