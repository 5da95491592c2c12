/**
 * Size limits shared by every protocol: one copy of each, imported wherever a message or a
 * frame is bounded (the channel, both transports, the ex-process Client API).
 */

/** Largest control message (JSON text) and largest payload piece any peer may send. */
export const MAX_MESSAGE_BYTES = 16 << 20;

/** Room for a frame's own header around a message or a piece of MAX_MESSAGE_BYTES. */
export const FRAME_HEADROOM = 64 << 10;

/** Largest encoded frame a transport accepts. */
export const MAX_FRAME_BYTES = MAX_MESSAGE_BYTES + FRAME_HEADROOM;
