/**
 * The channel protocol on the wire (docs/channel-protocol.md): its limits and defaults, and the
 * envelope every control frame carries. Application messages travel inside `msg`, untouched;
 * the channel's own data (stream announcement, resume handshake, control acks, goodbye) travel
 * beside them, so no application key is ever reserved or rewritten.
 *
 *   {"msg": {...}}                                        an application message
 *   {"msg": {...}, "stream": {"id", "window", "bytes"?}}  the same, announcing a payload stream
 *   {"channel": {"type": "resume" | "cack" | "close", ...}} the channel's own
 */
import { z } from 'zod';
import { MAX_MESSAGE_BYTES } from '../util/limits.ts';
import { describeZodError } from '../util/zod-error.ts';

export const CHANNEL_DEFAULTS = {
  chunkBytes: 1 << 20,
  windowBytes: 64 << 20,
  stallTimeoutMs: 300_000,
  holdTimeoutMs: 3_600_000,
  maxControlBytes: MAX_MESSAGE_BYTES,
  maxWindowBytes: 1 << 30,
} as const;

export const RESUME_DEFAULTS = { minDelayMs: 100, maxDelayMs: 5_000 } as const;

/** A consumer slower than this between chunks has each chunk acknowledged at once. */
export const ACK_INTERVAL_MS = 1000;
/** Largest piece a sender may put in flight beyond its window (it may always send one piece, whatever its size). */
export const MAX_PIECE_BYTES = MAX_MESSAGE_BYTES;
/** Streams whose end a resumable receiver remembers, so a sender that missed the news learns it on resume. */
export const ENDED_MEMORY = 1024;
/** Unconfirmed control messages a resumable channel keeps at most (and at most 4 × maxControlBytes of them). */
export const MAX_UNCONFIRMED = 100_000;
/** Longest reason (cancel, close) carried in a message. */
export const MAX_REASON = 4096;
/** Progress reports at most this often per transfer. */
export const PROGRESS_INTERVAL_MS = 250;

const StreamId = z.number().int().min(1).max(0xffffffff);
const Count = z.number().int().nonnegative();

/** What a resuming side has of one stream it receives. */
export const StreamState = z.strictObject({
  id: StreamId,
  /** next byte offset expected (bytes received in order) */
  received: Count,
  /** bytes the consumer has taken */
  consumed: Count,
  /** open: more bytes expected; complete: last piece received; done: consumed to the end; cancelled: the receiver gave up */
  state: z.enum(['open', 'complete', 'done', 'cancelled']),
  reason: z.string().max(MAX_REASON).optional(),
});
export type StreamState = z.infer<typeof StreamState>;

/** The channel's own messages. */
export const ChannelMessage = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('resume'), control: Count, streams: z.array(StreamState).max(100_000) }),
  z.strictObject({ type: z.literal('cack'), control: Count }),
  z.strictObject({ type: z.literal('close'), reason: z.string().max(MAX_REASON) }),
]);
export type ChannelMessage = z.infer<typeof ChannelMessage>;
export type ResumeMessage = Extract<ChannelMessage, { type: 'resume' }>;

/** The announcement of the payload stream that follows an application message. */
export const StreamHeader = z.strictObject({
  id: StreamId,
  /** the sender's window: the receiver holds the sender to it */
  window: z.number().int().positive(),
  /** the payload's size, when the sender knows it (progress and ETA on both ends) */
  bytes: Count.optional(),
});
export type StreamHeader = z.infer<typeof StreamHeader>;

/** An application message: a JSON object, opaque to the channel. */
export type Message = Record<string, unknown>;

const AppEnvelope = z.strictObject({ msg: z.record(z.string(), z.unknown()), stream: StreamHeader.optional() });

export type Decoded =
  | { kind: 'channel'; message: ChannelMessage }
  | { kind: 'app'; msg: Message; stream: StreamHeader | null }
  /** not an envelope at all: dropped and reported, the channel carries on */
  | { kind: 'malformed'; detail: string }
  /** an envelope of the channel's own that breaks the protocol: the channel ends */
  | { kind: 'violation'; detail: string };

export function encodeApp(msg: Message, stream?: StreamHeader): string {
  return JSON.stringify(stream ? { msg, stream } : { msg });
}

export function encodeChannel(m: ChannelMessage): string {
  return JSON.stringify({ channel: m });
}

/** Parses one control frame's text. */
export function decodeEnvelope(json: string): Decoded {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch {
    return { kind: 'malformed', detail: 'not JSON' };
  }
  if (typeof raw === 'object' && raw !== null && !Array.isArray(raw) && 'channel' in raw) {
    const c = z.strictObject({ channel: ChannelMessage }).safeParse(raw);
    return c.success ? { kind: 'channel', message: c.data.channel } : { kind: 'violation', detail: describeZodError(c.error) };
  }
  const parsed = AppEnvelope.safeParse(raw);
  if (!parsed.success) return { kind: 'malformed', detail: describeZodError(parsed.error) };
  return { kind: 'app', msg: parsed.data.msg, stream: parsed.data.stream ?? null };
}
