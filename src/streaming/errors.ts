/**
 * The channel's failures as types: callers tell them apart with instanceof, never by their text.
 * Every one names the peer, so a log line says which connection failed.
 */

/** Base of every channel error. */
export class ChannelError extends Error {
  constructor(
    message: string,
    readonly peer: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** The channel is closed (locally, by the peer, a dropped link or a protocol violation); `reason` says which. */
export class ChannelClosedError extends ChannelError {
  constructor(
    peer: string,
    readonly reason: string,
  ) {
    super(`channel to ${peer} closed: ${reason}`, peer);
  }
}

/** One payload stream was given up by either end; the channel itself carries on. */
export class StreamCancelledError extends ChannelError {
  constructor(
    peer: string,
    readonly stream: number,
    readonly reason: string,
    /** who gave up: this side's consumer or flow-control check ('local'), or the other end ('peer') */
    readonly by: 'local' | 'peer',
  ) {
    super(by === 'peer' ? `${peer} cancelled the payload: ${reason}` : `payload cancelled: ${reason}`, peer);
  }
}

/** A transfer made no progress for the stall timeout. */
export class StallError extends ChannelError {
  constructor(
    peer: string,
    message: string,
    readonly timeoutMs: number,
  ) {
    super(message, peer);
  }
}

/** A payload stream whose bytes do not hash to the sender's digest: never delivered as good data. */
export class CorruptStreamError extends ChannelError {
  constructor(
    peer: string,
    readonly stream: number,
    readonly bytes: number,
  ) {
    super(`payload stream ${stream} from ${peer} is corrupt: xxhash64 of the ${bytes} bytes received does not match the sender's`, peer);
  }
}

/** A control frame that is not a valid envelope: dropped, reported to `onMalformed`, never fatal. */
export class MalformedMessageError extends ChannelError {
  constructor(
    peer: string,
    readonly detail: string,
    readonly raw: string,
  ) {
    super(`malformed control message from ${peer}: ${detail}`, peer);
  }
}
