/**
 * The safetensors header: 8-byte little-endian length N, then N bytes of JSON
 * `{ name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {k: v} }`,
 * then the tightly packed data. Offsets are relative to the start of the data.
 * This module builds and validates headers; readers and writers sit on top.
 */
import { type DType, dtypeSize, isDType } from './dtypes.ts';
import { byteLengthOf } from './tensor.ts';

export interface TensorInfo {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
}

/** A tensor's place in the data section, as the header declares it. */
export interface TensorEntry extends TensorInfo {
  /** byte offset from the start of the data section */
  readonly begin: number;
  readonly end: number;
}

export interface SafetensorsHeader {
  /** tensors sorted by their data offset, which is also the order of the data */
  readonly tensors: readonly TensorEntry[];
  readonly metadata: Readonly<Record<string, string>>;
  /** 8 + header JSON length: where data begins in the file */
  readonly dataStart: number;
  /** total size of the data section */
  readonly dataBytes: number;
}

/** Refuse absurd headers before allocating for them (the Rust implementation uses 100 MB). */
export const MAX_HEADER_BYTES = 100_000_000;

export class SafetensorsError extends Error {
  override readonly name = 'SafetensorsError';
}

/** Lays tensors out in the given order and returns the header bytes and layout. */
export function buildHeader(
  tensors: readonly TensorInfo[],
  metadata: Readonly<Record<string, string>> = {},
): { bytes: Uint8Array; header: SafetensorsHeader } {
  // null prototypes: a tensor or metadata key named "__proto__" must stay an ordinary key
  const json: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  if (Object.keys(metadata).length > 0) json.__metadata__ = Object.assign(Object.create(null) as Record<string, string>, metadata);
  const entries: TensorEntry[] = [];
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__') throw new SafetensorsError('a tensor may not be named "__metadata__"');
    if (t.name in json) throw new SafetensorsError(`duplicate tensor name "${t.name}"`);
    validateShape(t.name, t.shape);
    const len = byteLengthOf(t.dtype, t.shape);
    json[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + len] };
    entries.push({ name: t.name, dtype: t.dtype, shape: [...t.shape], begin: offset, end: offset + len });
    offset += len;
  }
  let text = JSON.stringify(json);
  // Pad with spaces to a multiple of 8 so that data starts aligned (allowed by the format, done by HF).
  const raw = Buffer.byteLength(text, 'utf8');
  text += ' '.repeat((8 - ((8 + raw) % 8)) % 8);
  const body = Buffer.from(text, 'utf8');
  const bytes = new Uint8Array(8 + body.byteLength);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(body.byteLength), true);
  bytes.set(body, 8);
  return { bytes, header: { tensors: entries, metadata: { ...metadata }, dataStart: bytes.byteLength, dataBytes: offset } };
}

function validateShape(name: string, shape: unknown): asserts shape is number[] {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new SafetensorsError(`tensor "${name}": shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`);
  }
}

/** Reads the 8-byte length prefix; checks it against the file size when known. */
export function readHeaderLength(prefix: Uint8Array, totalBytes?: number): number {
  if (prefix.byteLength < 8) throw new SafetensorsError(`file too short: ${prefix.byteLength} bytes, need at least 8 for the header size`);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) throw new SafetensorsError(`header size ${n} exceeds the limit of ${MAX_HEADER_BYTES} bytes`);
  const len = Number(n);
  if (totalBytes !== undefined && 8 + len > totalBytes) {
    throw new SafetensorsError(`header size ${len} points past the end of the file (${totalBytes} bytes)`);
  }
  return len;
}

/**
 * Parses and validates the JSON header. `totalBytes` (file size), when known,
 * must equal dataStart + the data the header declares.
 */
export function parseHeader(json: Uint8Array, totalBytes?: number): SafetensorsHeader {
  let obj: unknown;
  try {
    // fatal: invalid UTF-8 is an error, as in the reference implementation, not silently replaced
    obj = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(json));
  } catch (e) {
    throw new SafetensorsError(`header is not valid JSON (UTF-8): ${(e as Error).message}`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new SafetensorsError('header must be a JSON object');
  const metadata: Record<string, string> = {};
  const entries: TensorEntry[] = [];
  for (const [name, v] of Object.entries(obj as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new SafetensorsError('__metadata__ must be an object of strings');
      for (const [k, s] of Object.entries(v)) {
        if (typeof s !== 'string') throw new SafetensorsError(`__metadata__.${k} must be a string, got ${typeof s}`);
        Object.defineProperty(metadata, k, { value: s, enumerable: true, writable: true, configurable: true });
      }
      continue;
    }
    if (typeof v !== 'object' || v === null) throw new SafetensorsError(`tensor "${name}": entry must be an object`);
    const e = v as Record<string, unknown>;
    for (const key of Object.keys(e)) {
      if (key !== 'dtype' && key !== 'shape' && key !== 'data_offsets')
        throw new SafetensorsError(`tensor "${name}": unknown field "${key}"`);
    }
    if (typeof e.dtype !== 'string' || !isDType(e.dtype))
      throw new SafetensorsError(`tensor "${name}": unknown dtype ${JSON.stringify(e.dtype)}`);
    validateShape(name, e.shape);
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((x) => Number.isSafeInteger(x) && x >= 0)) {
      throw new SafetensorsError(`tensor "${name}": data_offsets must be [begin, end] non-negative integers, got ${JSON.stringify(off)}`);
    }
    const [begin, end] = off as [number, number];
    if (end < begin) throw new SafetensorsError(`tensor "${name}": data_offsets end ${end} is before begin ${begin}`);
    const want = byteLengthOf(e.dtype, e.shape);
    if (end - begin !== want) {
      throw new SafetensorsError(
        `tensor "${name}": data_offsets span ${end - begin} bytes but shape [${e.shape.join(', ')}] × ${e.dtype} (${dtypeSize(e.dtype)} B) needs ${want}`,
      );
    }
    entries.push({ name, dtype: e.dtype, shape: e.shape, begin, end });
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const t of entries) {
    if (t.begin < cursor)
      throw new SafetensorsError(`tensor "${t.name}": data_offsets [${t.begin}, ${t.end}] overlap the previous tensor (ends at ${cursor})`);
    if (t.begin > cursor)
      throw new SafetensorsError(
        `tensor "${t.name}": gap in data before offset ${t.begin} (previous tensor ends at ${cursor}); data must be tightly packed`,
      );
    cursor = t.end;
  }
  const dataStart = 8 + json.byteLength;
  if (totalBytes !== undefined && dataStart + cursor !== totalBytes) {
    const where =
      dataStart + cursor > totalBytes ? 'out of range: past the end of the file' : 'short of the end of the file (trailing bytes)';
    throw new SafetensorsError(`data_offsets ${where}: header declares ${cursor} data bytes, file has ${totalBytes - dataStart}`);
  }
  return { tensors: entries, metadata, dataStart, dataBytes: cursor };
}
