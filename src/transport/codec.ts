/**
 * The one encoding of a transport Frame (docs/channel-protocol.md, "Frames"): the data plane
 * writes it to its mutual-TLS socket, a gRPC call carries it as the opaque bytes of its Frame
 * message (grpc/wire.ts). Adding a frame field touches this file only. A frame is
 *
 *   u32 length (of what follows) · u8 type · fields · [payload bytes]
 *
 * little-endian. Protobuf would cost an encode and a decode copy per 1 MiB chunk
 * (0.22 + 0.25 ms, bench/streaming/layers.ts); here the sender writes a small
 * header and the chunk itself (two plain writes: see writeFrame), and the receiver copies
 * each chunk once out of the socket's reads (or not at all when it arrived in
 * one read). Every frame is checked as it is parsed; a malformed one is a
 * protocol error that ends that connection only.
 */
import type { Writable } from 'node:stream';
import { MAX_FRAME_BYTES } from '../util/limits.ts';
import type { Frame } from './link.ts';

export const FRAME_TYPE = { control: 1, data: 2, ack: 3, resend: 4, cancel: 5, hello: 6, welcome: 7, refuse: 8 } as const;

/** Data frame flags. */
const LAST = 1;
const HAS_OFFSET = 2;
const HAS_HASH = 4;
const HAS_DIGEST = 8;

/** Largest frame accepted: a control message or a data piece of MAX_MESSAGE_BYTES, plus headers. */
export { MAX_FRAME_BYTES };

/** The handshake's frames: the dialling side says what the connection is for; the server accepts or refuses. */
export type HandshakeFrame =
  { readonly type: 'hello'; readonly json: string } | { readonly type: 'welcome' } | { readonly type: 'refuse'; readonly reason: string };
export type WireItem = Frame | HandshakeFrame;

const MAX_U32 = 0xffffffff;

function putU64(b: Buffer, at: number, v: number): void {
  b.writeUInt32LE(v % 0x1_0000_0000, at);
  b.writeUInt32LE(Math.floor(v / 0x1_0000_0000), at + 4);
}

function getU64(b: Buffer, at: number): number {
  return b.readUInt32LE(at) + b.readUInt32LE(at + 4) * 0x1_0000_0000;
}

function textFrame(type: number, text: string): Buffer[] {
  const body = Buffer.from(text, 'utf8');
  const head = Buffer.allocUnsafe(5);
  head.writeUInt32LE(body.byteLength + 1, 0);
  head.writeUInt8(type, 4);
  return [head, body];
}

function streamFrame(type: number, stream: number, extra: number | string): Buffer[] {
  if (typeof extra === 'string') {
    const reason = Buffer.from(extra, 'utf8');
    const head = Buffer.allocUnsafe(9);
    head.writeUInt32LE(5 + reason.byteLength, 0);
    head.writeUInt8(type, 4);
    head.writeUInt32LE(stream, 5);
    return [head, reason];
  }
  const b = Buffer.allocUnsafe(17);
  b.writeUInt32LE(13, 0);
  b.writeUInt8(type, 4);
  b.writeUInt32LE(stream, 5);
  putU64(b, 9, extra);
  return [b];
}

/**
 * A frame as the buffers to write, in order: a small header, then (for data) the chunk
 * itself, never copied.
 */
export function encodeFrame(f: WireItem): Buffer[] {
  switch (f.type) {
    case 'control':
      return textFrame(FRAME_TYPE.control, f.json);
    case 'hello':
      return textFrame(FRAME_TYPE.hello, f.json);
    case 'welcome':
      return textFrame(FRAME_TYPE.welcome, '');
    case 'refuse':
      return textFrame(FRAME_TYPE.refuse, f.reason);
    case 'ack':
      return streamFrame(FRAME_TYPE.ack, f.stream, f.bytes);
    case 'resend':
      return streamFrame(FRAME_TYPE.resend, f.stream, f.offset);
    case 'cancel':
      return streamFrame(FRAME_TYPE.cancel, f.stream, f.reason);
    case 'data': {
      const digest = f.digest === undefined ? null : Buffer.from(f.digest, 'latin1');
      const flags =
        (f.last ? LAST : 0) | (f.offset !== undefined ? HAS_OFFSET : 0) | (f.hash !== undefined ? HAS_HASH : 0) | (digest ? HAS_DIGEST : 0);
      const headLen =
        4 + 1 + 4 + 1 + (f.offset !== undefined ? 8 : 0) + (f.hash !== undefined ? 8 : 0) + (digest ? 1 + digest.byteLength : 0);
      const head = Buffer.allocUnsafe(headLen);
      head.writeUInt32LE(headLen - 4 + f.bytes.byteLength, 0);
      head.writeUInt8(FRAME_TYPE.data, 4);
      head.writeUInt32LE(f.stream, 5);
      head.writeUInt8(flags, 9);
      let at = 10;
      if (f.offset !== undefined) {
        putU64(head, at, f.offset);
        at += 8;
      }
      if (f.hash !== undefined) {
        head.write(f.hash, at, 8, 'hex');
        at += 8;
      }
      if (digest) {
        head.writeUInt8(digest.byteLength, at);
        digest.copy(head, at + 1);
      }
      if (f.bytes.byteLength === 0) return [head];
      const bytes = Buffer.isBuffer(f.bytes) ? f.bytes : Buffer.from(f.bytes.buffer, f.bytes.byteOffset, f.bytes.byteLength);
      return [head, bytes];
    }
  }
}

/**
 * Writes a frame to a socket; returns false when the socket wants 'drain' first. Plain writes, not
 * cork() + writev: Node's TLS copies a writev's buffers into one before encrypting (a copy of every
 * chunk), while a separate header costs one small TLS record.
 */
export function writeFrame(socket: Writable, f: WireItem): boolean {
  let ok = true;
  for (const b of encodeFrame(f)) ok = socket.write(b);
  return ok;
}

/** Longest header before a data frame's bytes: length, type, stream, flags, offset, hash, digest (≤ 128 chars). */
const MAX_DATA_HEAD = 4 + 1 + 4 + 1 + 8 + 8 + 1 + 128;

const isStream = (n: number): boolean => n >= 1 && n <= MAX_U32;

/**
 * Parses frames out of the socket's reads as they come. Holds at most one frame's bytes
 * (plus what arrived behind it in the same read), so memory is bounded by MAX_FRAME_BYTES.
 */
export class FrameDecoder {
  private readonly pending: Buffer[] = [];
  private pendingBytes = 0;

  /** Feeds one read; returns the frames it completed, or a string saying what is wrong (the connection must end). */
  push(chunk: Buffer): WireItem[] | string {
    this.pending.push(chunk);
    this.pendingBytes += chunk.byteLength;
    const out: WireItem[] = [];
    for (;;) {
      if (this.pendingBytes < 4) return out;
      const len = this.peekU32();
      if (len < 1 || len > MAX_FRAME_BYTES) return `frame of ${len} bytes (at most ${MAX_FRAME_BYTES})`;
      if (this.pendingBytes < 4 + len) return out;
      const f = this.parse(len);
      if (typeof f === 'string') return f;
      out.push(f);
    }
  }

  /** bytes received that do not yet make a whole frame */
  get buffered(): number {
    return this.pendingBytes;
  }

  private peekU32(): number {
    const first = this.pending[0]!;
    if (first.byteLength >= 4) return first.readUInt32LE(0);
    return this.take(4, true).readUInt32LE(0);
  }

  /**
   * The next `n` bytes: a view when they lie in the first buffer, else one copy into a
   * fresh buffer (so a chunk's bytes start at offset 0, aligned for any typed view).
   */
  private take(n: number, peek = false): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.pending[0]!;
    if (first.byteLength >= n) {
      const v = first.subarray(0, n);
      if (!peek) this.consume(n);
      return v;
    }
    const out = Buffer.allocUnsafeSlow(n);
    let at = 0;
    for (const b of this.pending) {
      const k = Math.min(b.byteLength, n - at);
      b.copy(out, at, 0, k);
      at += k;
      if (at === n) break;
    }
    if (!peek) this.consume(n);
    return out;
  }

  private consume(n: number): void {
    this.pendingBytes -= n;
    while (n > 0) {
      const first = this.pending[0]!;
      if (first.byteLength <= n) {
        n -= first.byteLength;
        this.pending.shift();
      } else {
        this.pending[0] = first.subarray(n);
        n = 0;
      }
    }
  }

  private parse(len: number): WireItem | string {
    const type = this.take(5, true).readUInt8(4);
    if (type === FRAME_TYPE.data) {
      // the header alone first (it is short), then the chunk as a buffer of its own
      const head = this.take(Math.min(4 + len, MAX_DATA_HEAD), true);
      if (len - 1 < 5) return 'data frame too short';
      const stream = head.readUInt32LE(5);
      const flags = head.readUInt8(9);
      if (!isStream(stream)) return 'data frame with an invalid stream id';
      if (flags & ~(LAST | HAS_OFFSET | HAS_HASH | HAS_DIGEST)) return 'data frame with unknown flags';
      let at = 10;
      const need = at + (flags & HAS_OFFSET ? 8 : 0) + (flags & HAS_HASH ? 8 : 0) + (flags & HAS_DIGEST ? 1 : 0);
      if (need > 4 + len) return 'data frame header truncated';
      let offset: number | undefined;
      let hash: string | undefined;
      let digest: string | undefined;
      if (flags & HAS_OFFSET) {
        offset = getU64(head, at);
        if (!Number.isSafeInteger(offset)) return 'data frame with an invalid offset';
        at += 8;
      }
      if (flags & HAS_HASH) {
        hash = head.toString('hex', at, at + 8);
        at += 8;
      }
      if (flags & HAS_DIGEST) {
        const n = head.readUInt8(at);
        if (n > 128 || at + 1 + n > 4 + len) return 'data frame with an invalid digest';
        digest = head.toString('latin1', at + 1, at + 1 + n);
        at += 1 + n;
      }
      this.consume(at);
      const bytes = this.take(4 + len - at);
      return {
        type: 'data',
        stream,
        bytes,
        last: (flags & LAST) !== 0,
        ...(offset !== undefined && { offset }),
        ...(hash !== undefined && { hash }),
        ...(digest !== undefined && { digest }),
      };
    }
    const body = this.take(4 + len).subarray(5);
    switch (type) {
      case FRAME_TYPE.control:
        return { type: 'control', json: body.toString('utf8') };
      case FRAME_TYPE.hello:
        return { type: 'hello', json: body.toString('utf8') };
      case FRAME_TYPE.welcome:
        return { type: 'welcome' };
      case FRAME_TYPE.refuse:
        return { type: 'refuse', reason: body.toString('utf8', 0, Math.min(body.byteLength, 4096)) };
      case FRAME_TYPE.ack:
      case FRAME_TYPE.resend: {
        if (body.byteLength !== 12) return `${type === FRAME_TYPE.ack ? 'ack' : 'resend'} frame of ${body.byteLength} bytes, 12 expected`;
        const stream = body.readUInt32LE(0);
        const n = getU64(body, 4);
        if (!isStream(stream) || !Number.isSafeInteger(n))
          return `${type === FRAME_TYPE.ack ? 'ack' : 'resend'} frame with an invalid stream id or count`;
        return type === FRAME_TYPE.ack ? { type: 'ack', stream, bytes: n } : { type: 'resend', stream, offset: n };
      }
      case FRAME_TYPE.cancel: {
        if (body.byteLength < 4) return 'cancel frame too short';
        const stream = body.readUInt32LE(0);
        if (!isStream(stream)) return 'cancel frame with an invalid stream id';
        return { type: 'cancel', stream, reason: body.toString('utf8', 4, Math.min(body.byteLength, 4 + 4096)) };
      }
      default:
        return `frame of unknown type ${type}`;
    }
  }
}

/** Decodes one whole frame held in one buffer (a gRPC message): a view, no copy. */
export function decodeFrame(b: Buffer): WireItem | string {
  if (b.byteLength === 0) return 'empty frame';
  const d = new FrameDecoder();
  const got = d.push(b);
  if (typeof got === 'string') return got;
  if (got.length !== 1 || d.buffered !== 0) return got.length === 0 ? 'truncated frame' : 'more than one frame in a message';
  return got[0]!;
}
