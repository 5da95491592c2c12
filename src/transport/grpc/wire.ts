/**
 * proto/flotilla.proto: the Admin service loaded at run time (proto-loader), and the
 * Federation service whose Frame message carries the frame codec's bytes (codec.ts). Every
 * incoming frame is checked; one that does not decode is a protocol error for that call only.
 */
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { MAX_FRAME_BYTES } from '../../util/limits.ts';
import { type WireItem, decodeFrame, encodeFrame } from '../codec.ts';
import type { Frame } from '../link.ts';

export const PROTO_PATH = fileURLToPath(new URL('../../../proto/flotilla.proto', import.meta.url));

export const FEDERATION_CONNECT = '/flotilla.v1.Federation/Connect';

/** Call metadata that says what a Federation.Connect call is for (ConnectInfo). */
export const CONNECT_METADATA = { purpose: 'x-flotilla-purpose', job: 'x-flotilla-job', channel: 'x-flotilla-channel' } as const;

export interface AdminRequestWire {
  command: string;
  args_json: string;
  blob: Uint8Array;
}
export interface AdminReplyWire {
  ok: boolean;
  json: string;
  blob: Uint8Array;
}

/** Admin.Download's stream element as proto-loader decodes it (oneof named in `kind`). */
export interface DownloadPieceWire {
  kind?: 'manifest' | 'start' | 'data' | 'end';
  manifest?: { files?: { path?: string; size?: number }[] } | null;
  start?: { path?: string; size?: number } | null;
  data?: Uint8Array | null;
  end?: { xxhash64?: string } | null;
}

export const ADMIN_DOWNLOAD = '/flotilla.v1.Admin/Download';
export const ADMIN_UPLOAD = '/flotilla.v1.Admin/Upload';

/** Admin.Upload's stream element: the request first, then the job stream's bytes. */
export interface UploadPieceWire {
  kind?: 'request' | 'data';
  request?: AdminRequestWire | null;
  data?: Uint8Array | null;
}

export interface FlotillaPackage {
  Federation: grpc.ServiceClientConstructor;
  Admin: grpc.ServiceClientConstructor;
}

let loaded: FlotillaPackage | null = null;

export function loadProto(): FlotillaPackage {
  if (loaded) return loaded;
  const def = protoLoader.loadSync(PROTO_PATH, {
    keepCase: true,
    longs: Number,
    enums: String,
    bytes: Buffer,
    defaults: true,
    oneofs: true,
  });
  const root = grpc.loadPackageDefinition(def) as unknown as { flotilla: { v1: FlotillaPackage } };
  loaded = root.flotilla.v1;
  return loaded;
}

/** Field number of Frame.encoded (proto/flotilla.proto), length-delimited. */
const ENCODED_KEY = (6 << 3) | 2;

/**
 * Federation.Connect with the frame codec as its serializer: a Frame message is one field,
 * `encoded` (6), holding the codec's bytes, which this writes and reads as protobuf without
 * a protobuf library (tag, varint length, bytes): one copy of a chunk on the way out, as
 * protobuf's encoder made, and a view on the way in.
 */
export function encodeGrpcFrame(f: WireItem): Buffer {
  const parts = encodeFrame(f);
  let n = 0;
  for (const p of parts) n += p.byteLength;
  const head: number[] = [ENCODED_KEY];
  for (let v = n; ; v = Math.floor(v / 128)) {
    if (v < 128) {
      head.push(v);
      break;
    }
    head.push((v % 128) | 128);
  }
  const out = Buffer.allocUnsafe(head.length + n);
  out.set(head, 0);
  let at = head.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** The codec bytes of a Frame message (empty when there are none: the codec then says what is wrong). */
export function grpcFrameBytes(b: Buffer): Buffer {
  let at = 0;
  let found: Buffer = Buffer.alloc(0);
  while (at < b.byteLength) {
    const key = b[at++]!;
    if ((key & 7) !== 2 || key < 8) return Buffer.alloc(0); // only length-delimited fields are defined
    let len = 0;
    for (let shift = 1; ; shift *= 128) {
      if (at >= b.byteLength || shift > 2 ** 35) return Buffer.alloc(0);
      const byte = b[at++]!;
      len += (byte & 127) * shift;
      if (byte < 128) break;
    }
    if (at + len > b.byteLength) return Buffer.alloc(0);
    // unknown fields (a newer peer) are skipped, as protobuf does
    if (key === ENCODED_KEY) found = b.subarray(at, at + len);
    at += len;
  }
  return found;
}

/** Decodes a Frame message: the frame, or a string saying what is wrong with it. */
export function decodeGrpcFrame(b: Buffer): Frame | string {
  const f = decodeFrame(grpcFrameBytes(b));
  if (typeof f === 'string') return f;
  if (f.type === 'hello' || f.type === 'welcome' || f.type === 'refuse') return `unexpected ${f.type} frame on a gRPC call`;
  return f;
}

/** The Federation service for grpc-js, speaking Frame messages through the codec. */
export const FEDERATION_SERVICE: grpc.ServiceDefinition = {
  Connect: {
    path: FEDERATION_CONNECT,
    requestStream: true,
    responseStream: true,
    requestSerialize: encodeGrpcFrame,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: encodeGrpcFrame,
    responseDeserialize: (b: Buffer) => b,
    originalName: 'Connect',
  },
};

/** Keepalive and size options shared by both ends. */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MAX_FRAME_BYTES,
  'grpc.max_send_message_length': MAX_FRAME_BYTES,
  // detect a dead peer on an idle connection within ~15 s
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
  // HTTP/2 receive window (stream and connection) of 4 MiB instead of 64 KiB: a 1 MiB
  // chunk no longer waits for 16 WINDOW_UPDATE round trips (bench/streaming: ~40% less
  // CPU for the same bytes). grpc-js applies it on the client end only (downloads); the
  // server keeps 64 KiB. Not larger: with 8 MiB windows on both ends a full-duplex call
  // over loopback deadlocked (both ends' socket buffers full, neither reading).
  'grpc-node.flow_control_window': 4 << 20,
};
