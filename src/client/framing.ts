/**
 * Frames of the ex-process Client API (docs/client-protocol.md):
 *
 *   "FLT1" | u32 LE JSON length | u64 LE payload length | JSON | payload
 *
 * The payload is a safetensors byte stream. The writer streams it from the
 * model's tensors (encodeStream) straight to the socket, honouring
 * backpressure, so the sender never holds a second copy of the model; the
 * reader decodes it chunk by chunk into the tensors the receiver needs anyway.
 */
import type { Writable } from 'node:stream';
import { z } from 'zod';
import { FLModelInfoSchema } from '../core/fl-model.ts';
import { type TensorDict, dictBytes } from '../core/tensor.ts';
import { MAX_MESSAGE_BYTES } from '../util/limits.ts';
import { LOG_LIMITS } from './api.ts';
import { decodeStream, dictToStream, encodeStream, streamToDict } from '../core/tensor-stream.ts';

export const PROTOCOL_VERSION = 1;
export const MAGIC = 'FLT1';
export const PREFIX_BYTES = 16;
/** Control parts above this are refused before they are buffered. */
export const MAX_JSON_BYTES = MAX_MESSAGE_BYTES;

// ---- control messages ----------------------------------------------------------
// Objects are not strict: a newer peer may add fields; unknown ones are dropped.

const Hello = z.object({ type: z.literal('hello'), protocol: z.number().int(), language: z.string(), pid: z.number().int() });
const Welcome = z.object({ type: z.literal('welcome'), protocol: z.number().int(), siteName: z.string(), jobId: z.string() });
const ErrorMsg = z.object({ type: z.literal('error'), message: z.string() });
const Receive = z.object({ type: z.literal('receive') });
const Task = z.object({ type: z.literal('task'), taskId: z.string().min(1), taskName: z.string().min(1), model: FLModelInfoSchema });
const Stop = z.object({ type: z.literal('stop'), reason: z.string() });
/** The server no longer wants the pending task: stop working on it and ask for the next one. */
const Cancel = z.object({ type: z.literal('cancel'), taskId: z.string().min(1), reason: z.string() });
const Result = z.object({ type: z.literal('result'), taskId: z.string().min(1), model: FLModelInfoSchema });
const Log = z.object({
  type: z.literal('log'),
  key: z.string().min(1).max(LOG_LIMITS.keyChars),
  /** a number: a scalar; a string: a text */
  value: z.union([z.number(), z.string().max(LOG_LIMITS.textChars)]),
  step: z.number().int().min(0).optional(),
});
const ParamValueSchema = z.union([z.string().max(LOG_LIMITS.paramChars), z.number(), z.boolean()]);
const Params = z.object({
  type: z.literal('params'),
  params: z
    .record(z.string().min(1).max(LOG_LIMITS.keyChars), ParamValueSchema)
    .refine((p) => Object.keys(p).length <= LOG_LIMITS.params, `at most ${LOG_LIMITS.params} params at once`),
});
const Failed = z.object({ type: z.literal('failed'), message: z.string(), traceback: z.string().optional() });

/** What a trainer may send to the client. */
export const TrainerMessageSchema = z.discriminatedUnion('type', [Hello, Receive, Result, Log, Params, Failed]);
/** What the client may send to a trainer. */
export const ClientMessageSchema = z.discriminatedUnion('type', [Welcome, ErrorMsg, Task, Stop, Cancel]);
export const ControlMessageSchema = z.discriminatedUnion('type', [
  Hello,
  Welcome,
  ErrorMsg,
  Receive,
  Task,
  Stop,
  Cancel,
  Result,
  Log,
  Params,
  Failed,
]);

export type TrainerMessage = z.infer<typeof TrainerMessageSchema>;
export type ClientMessage = z.infer<typeof ClientMessageSchema>;
export type ControlMessage = z.infer<typeof ControlMessageSchema>;

/** Only these carry model params; every other frame must have P = 0. */
const PAYLOAD_TYPES: ReadonlySet<string> = new Set(['task', 'result']);
export function carriesParams(type: string): boolean {
  return PAYLOAD_TYPES.has(type);
}

export class FrameError extends Error {
  override readonly name: string = 'FrameError';
}

/** A message refused before any of its bytes were written: the connection is still usable. */
export class InvalidMessageError extends FrameError {
  override readonly name = 'InvalidMessageError';
}

// ---- writing -------------------------------------------------------------------

function closedError(what: string): FrameError {
  return new FrameError(`connection closed while writing ${what}`);
}

/** Resolves on 'drain'; rejects if the stream closes or errors first. */
function drained(out: Writable, what: string): Promise<void> {
  if (out.destroyed) return Promise.reject(closedError(what));
  return new Promise((resolve, reject) => {
    const done = (err?: Error): void => {
      out.off('drain', onDrain);
      out.off('close', onClose);
      out.off('error', onError);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = (): void => done();
    const onClose = (): void => done(closedError(what));
    const onError = (e: Error): void => done(e);
    out.on('drain', onDrain);
    out.on('close', onClose);
    out.on('error', onError);
  });
}

/** Writes chunks one by one, waiting for 'drain' whenever the stream's buffer is full. */
class ChunkWriter {
  private last: Promise<void> = Promise.resolve();
  constructor(
    private readonly out: Writable,
    private readonly what: string,
  ) {}

  async write(chunk: Uint8Array): Promise<void> {
    if (this.out.destroyed || this.out.writableEnded) throw closedError(this.what);
    let ok = true;
    const p = new Promise<void>((resolve, reject) => {
      ok = this.out.write(chunk, (err) => (err ? reject(err) : resolve()));
    });
    p.catch(() => {}); // surfaced through drained() or flushed()
    this.last = p;
    if (!ok) await drained(this.out, this.what);
  }

  /**
   * Resolves once the last chunk has been handed to the OS: after that the
   * caller may reuse or mutate the tensors it sent.
   */
  async flushed(): Promise<void> {
    if (this.out.destroyed) throw closedError(this.what);
    let onClose = (): void => {};
    const closed = new Promise<never>((_, reject) => {
      onClose = () => reject(closedError(this.what));
      this.out.once('close', onClose);
    });
    try {
      await Promise.race([this.last, closed]);
    } finally {
      this.out.off('close', onClose);
    }
  }
}

function describe(msg: { type: string }): string {
  return `a "${msg.type}" frame`;
}

/**
 * Writes one frame. `params` is required for task/result and forbidden
 * otherwise. Validates the message first, so a bad message (NaN metric,
 * extra model field) fails here, before any byte is written. A failure after
 * that (I/O) leaves the stream mid-frame: the caller must drop the connection.
 */
export async function writeFrame(
  out: Writable,
  msg: ControlMessage,
  params?: TensorDict,
  opts: { chunkBytes?: number } = {},
): Promise<void> {
  const parsed = ControlMessageSchema.safeParse(msg);
  if (!parsed.success)
    throw new InvalidMessageError(`refusing to send an invalid "${String(msg.type)}" message:\n${z.prettifyError(parsed.error)}`);
  if (carriesParams(msg.type) && params === undefined) throw new InvalidMessageError(`${describe(msg)} needs model params`);
  if (!carriesParams(msg.type) && params !== undefined) throw new InvalidMessageError(`${describe(msg)} carries no params`);
  const json = Buffer.from(JSON.stringify(parsed.data), 'utf8');
  if (json.byteLength > MAX_JSON_BYTES)
    throw new InvalidMessageError(`${describe(msg)}: control part is ${json.byteLength} bytes, over the limit of ${MAX_JSON_BYTES}`);

  let body: AsyncIterator<Uint8Array> | undefined;
  let first: Uint8Array = new Uint8Array(0);
  let payloadBytes = 0;
  if (params !== undefined) {
    // The payload length goes in the prefix, so it must be known up front:
    // the safetensors header (first chunk of encodeStream) plus the tensor data.
    body = encodeStream(dictToStream(params, opts.chunkBytes === undefined ? {} : { chunkBytes: opts.chunkBytes }))[Symbol.asyncIterator]();
    const r = await body.next();
    if (r.done) throw new FrameError('encodeStream produced no header');
    first = r.value;
    payloadBytes = first.byteLength + dictBytes(params);
  }

  const prefix = Buffer.alloc(PREFIX_BYTES);
  prefix.write(MAGIC, 0, 'ascii');
  prefix.writeUInt32LE(json.byteLength, 4);
  prefix.writeBigUInt64LE(BigInt(payloadBytes), 8);

  const w = new ChunkWriter(out, describe(msg));
  // prefix + JSON + safetensors header are small: one write
  await w.write(Buffer.concat([prefix, json, first]));
  let sent = first.byteLength;
  if (body) {
    for (let r = await body.next(); !r.done; r = await body.next()) {
      sent += r.value.byteLength;
      if (sent > payloadBytes)
        throw new FrameError(`payload grew past its declared ${payloadBytes} bytes (tensor modified while sending?)`);
      await w.write(r.value);
    }
  }
  if (sent !== payloadBytes) throw new FrameError(`payload is ${sent} bytes, declared ${payloadBytes}`);
  await w.flushed();
}

/**
 * Serializes frames on one connection: a `log` sent while a `result` is
 * still streaming waits for it instead of interleaving with its bytes.
 */
export class FrameWriter {
  private tail: Promise<void> = Promise.resolve();
  constructor(
    private readonly out: Writable,
    private readonly opts: { chunkBytes?: number } = {},
  ) {}

  send(msg: ControlMessage, params?: TensorDict): Promise<void> {
    const p = this.tail.then(() =>
      writeFrame(this.out, msg, params, this.opts).catch((e: unknown) => {
        // anything but a refused message may have left half a frame on the wire
        if (!(e instanceof InvalidMessageError)) this.out.destroy();
        throw e;
      }),
    );
    this.tail = p.catch(() => {});
    return p;
  }
}

// ---- reading -------------------------------------------------------------------

export interface Frame<T> {
  msg: T;
  /** present for task/result frames */
  params?: TensorDict;
  /** P from the prefix */
  payloadBytes: number;
}

export interface FrameReaderOptions {
  maxJsonBytes?: number;
  /** refuse payloads above this (default: no limit beyond 2^53) */
  maxPayloadBytes?: number;
}

function printable(bytes: Uint8Array): string {
  const hex = Buffer.from(bytes).toString('hex').replace(/(..)/g, '$1 ').trim();
  const text = Buffer.from(bytes)
    .toString('latin1')
    .replace(/[^\x20-\x7e]/g, '.');
  return `${hex} ("${text}")`;
}

/**
 * Re-cuts chunks so that every boundary falls on a multiple of `align` bytes
 * from the start. Socket reads end anywhere; a boundary inside an element
 * makes decodeStream copy the whole piece to complete it. Here only the few
 * bytes around each boundary are copied (into one small bridging chunk).
 */
export async function* aligned(src: AsyncIterable<Uint8Array>, align = 8): AsyncGenerator<Uint8Array> {
  let carry: Uint8Array = new Uint8Array(0); // always shorter than align
  for await (const c of src) {
    let chunk = c;
    if (carry.byteLength > 0) {
      const need = align - carry.byteLength;
      if (chunk.byteLength < need) {
        carry = Buffer.concat([carry, chunk]);
        continue;
      }
      yield Buffer.concat([carry, chunk.subarray(0, need)]);
      chunk = chunk.subarray(need);
    }
    const whole = chunk.byteLength - (chunk.byteLength % align);
    if (whole > 0) yield chunk.subarray(0, whole);
    carry = chunk.subarray(whole);
  }
  if (carry.byteLength > 0) yield carry;
}

/**
 * Reads frames from a byte source (a socket is one). next() returns null on a
 * clean end between frames and throws FrameError on a malformed or truncated one.
 */
export class FrameReader<T extends ControlMessage> {
  private buf: Uint8Array = new Uint8Array(0);
  private readonly it: AsyncIterator<Uint8Array>;
  private readonly maxJson: number;
  private readonly maxPayload: number;

  constructor(
    src: AsyncIterable<Uint8Array>,
    private readonly schema: z.ZodType<T>,
    opts: FrameReaderOptions = {},
  ) {
    this.it = src[Symbol.asyncIterator]();
    this.maxJson = opts.maxJsonBytes ?? MAX_JSON_BYTES;
    this.maxPayload = opts.maxPayloadBytes ?? Number.MAX_SAFE_INTEGER;
  }

  /** Pulls one more source chunk into buf; false at end of input. */
  private async pull(): Promise<boolean> {
    for (;;) {
      const r = await this.it.next();
      if (r.done) return false;
      if (r.value.byteLength === 0) continue;
      this.buf = this.buf.byteLength === 0 ? r.value : Buffer.concat([this.buf, r.value]);
      return true;
    }
  }

  private async take(n: number, what: string): Promise<Uint8Array> {
    while (this.buf.byteLength < n) {
      if (!(await this.pull())) throw new FrameError(`connection closed after ${this.buf.byteLength} of ${n} bytes of ${what}`);
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Up to max bytes, without copying source chunks. */
  private async takeSome(max: number, what: string): Promise<Uint8Array> {
    if (this.buf.byteLength === 0 && !(await this.pull())) throw new FrameError(`connection closed in the middle of ${what}`);
    const out = this.buf.subarray(0, Math.min(max, this.buf.byteLength));
    this.buf = this.buf.subarray(out.byteLength);
    return out;
  }

  async next(): Promise<Frame<T> | null> {
    if (this.buf.byteLength === 0 && !(await this.pull())) return null;
    const prefix = await this.take(PREFIX_BYTES, 'a frame prefix');
    const magic = prefix.subarray(0, 4);
    if (Buffer.from(magic).toString('latin1') !== MAGIC) {
      throw new FrameError(
        `bad frame magic: expected "${MAGIC}", got ${printable(magic)}; is the peer speaking the Flotilla client protocol?`,
      );
    }
    const view = Buffer.from(prefix.buffer, prefix.byteOffset, PREFIX_BYTES);
    const jsonLen = view.readUInt32LE(4);
    const payload64 = view.readBigUInt64LE(8);
    if (jsonLen > this.maxJson) throw new FrameError(`control part is ${jsonLen} bytes, over the limit of ${this.maxJson}`);
    if (payload64 > BigInt(this.maxPayload)) throw new FrameError(`payload of ${payload64} bytes is over the limit of ${this.maxPayload}`);
    const payloadBytes = Number(payload64);

    const jsonBytes = await this.take(jsonLen, 'a control message');
    let raw: unknown;
    try {
      raw = JSON.parse(Buffer.from(jsonBytes.buffer, jsonBytes.byteOffset, jsonBytes.byteLength).toString('utf8'));
    } catch (e) {
      throw new FrameError(`control message is not valid JSON: ${(e as Error).message}`);
    }
    const parsed = this.schema.safeParse(raw);
    if (!parsed.success) {
      const type = typeof raw === 'object' && raw !== null && 'type' in raw ? JSON.stringify(raw.type) : '(none)';
      throw new FrameError(`invalid control message (type ${type}):\n${z.prettifyError(parsed.error)}`);
    }
    const msg = parsed.data;
    if (!carriesParams(msg.type)) {
      if (payloadBytes > 0) throw new FrameError(`a "${msg.type}" frame carries no payload, but its prefix declares ${payloadBytes} bytes`);
      return { msg, payloadBytes };
    }
    // P = 0 on a task/result is read as "no tensors" (an empty safetensors stream is 16 bytes).
    const params = payloadBytes === 0 ? new Map() : await this.readPayload(payloadBytes, msg.type);
    return { msg, params, payloadBytes };
  }

  private async readPayload(total: number, type: string): Promise<TensorDict> {
    let remaining = total;
    const what = `the payload of a "${type}" frame`;
    const chunks = async function* (this: FrameReader<T>): AsyncGenerator<Uint8Array> {
      while (remaining > 0) {
        const c = await this.takeSome(remaining, what);
        remaining -= c.byteLength;
        yield c;
      }
    }.call(this);
    try {
      const stream = await decodeStream(aligned(chunks));
      const declared = stream.layout.dataStart + stream.layout.dataBytes;
      // check before streamToDict allocates what the header declares
      if (declared !== total) throw new FrameError(`${what} is ${total} bytes, but its safetensors header declares ${declared}`);
      return await streamToDict(stream);
    } catch (e) {
      // a malformed payload is a malformed frame: callers handle one error class
      if (e instanceof FrameError) throw e;
      throw new FrameError(`${what}: ${(e as Error).message}`);
    }
  }
}
