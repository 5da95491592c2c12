/**
 * The transport contract. A transport moves frames between the server and one
 * client and knows nothing of models, tasks or jobs: the simulator's
 * in-memory/worker links and the gRPC link implement the same interface, so the
 * runtime and workflows above never change with the transport.
 */

/** What crosses a link. Control bodies are opaque JSON text to the transport. */
export type Frame =
  | { readonly type: 'control'; readonly json: string }
  /**
   * a piece of payload stream `stream`, starting at byte `offset` of the stream; `last` closes it.
   * `hash` (xxhash64 of the stream from its start to the end of this piece, 16 hex digits) and,
   * on the last piece, `digest` (xxhash64 of the whole stream) let the receiver check integrity;
   * transports that cannot carry them leave them out.
   */
  | {
      readonly type: 'data';
      readonly stream: number;
      readonly bytes: Uint8Array;
      readonly last: boolean;
      readonly offset?: number;
      readonly hash?: string;
      readonly digest?: string;
    }
  /** the receiver consumed `bytes` more of stream `stream` (flow control) */
  | { readonly type: 'ack'; readonly stream: number; readonly bytes: number }
  /** the receiver got a corrupted piece: send stream `stream` again from byte `offset` */
  | { readonly type: 'resend'; readonly stream: number; readonly offset: number }
  /** either side gives up on a stream */
  | { readonly type: 'cancel'; readonly stream: number; readonly reason: string };

export interface Link {
  /** Authenticated name of the other side (a site name, or "server"). */
  readonly peer: string;
  /** Resolves once the transport has taken the frame (its own buffers are bounded). */
  send(frame: Frame): Promise<void>;
  /** Incoming frames in order; ends when the link closes. Iterate once. */
  frames(): AsyncIterable<Frame>;
  close(reason?: string): void;
  readonly closed: Promise<string>;
  /**
   * Set on an accepted link when the dialling side named a resumable channel:
   * a later link with the same id continues that channel (Channel.attach) instead of starting a new one.
   */
  readonly resumeId?: string | null;
}

/** Server side: links from clients as they connect. */
export interface ServerTransport {
  accept(): AsyncIterable<Link>;
  close(): Promise<void>;
}
