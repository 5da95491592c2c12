/** The streaming package: a Channel over any Link (docs/channel-protocol.md). */
export { Channel, type ChannelOptions, type Envelope, type ResumeOptions } from './channel.ts';
export { ChannelClosedError, ChannelError, CorruptStreamError, MalformedMessageError, StallError, StreamCancelledError } from './errors.ts';
export type { Payload } from './incoming.ts';
export { type TransferProgress, etaSeconds } from './progress.ts';
export { CHANNEL_DEFAULTS, type Message } from './protocol.ts';
