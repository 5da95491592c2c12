/**
 * The gRPC client end: dials out to the server (sites accept no inbound
 * connections) with the participant's certificate, and opens Connect calls
 * (each one a Link) or sends admin commands.
 */
import * as grpc from '@grpc/grpc-js';
import type { Frame } from '../link.ts';
import type { ConnectInfo, DialOptions } from '../peer.ts';
import { GrpcLink } from './link.ts';
import {
  ADMIN_DOWNLOAD,
  ADMIN_UPLOAD,
  CONNECT_METADATA,
  type AdminReplyWire,
  type AdminRequestWire,
  CHANNEL_OPTIONS,
  type DownloadPieceWire,
  FEDERATION_SERVICE,
  type UploadPieceWire,
  loadProto,
} from './wire.ts';

export type GrpcClientOptions = DialOptions;

type AdminStub = grpc.Client & {
  Command(
    req: AdminRequestWire,
    md: grpc.Metadata,
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, r?: AdminReplyWire) => void,
  ): grpc.ClientUnaryCall;
};

export class GrpcClient {
  private readonly federation: grpc.Client;
  private readonly adminStub: AdminStub;

  constructor(opts: GrpcClientOptions) {
    const creds = grpc.credentials.createSsl(Buffer.from(opts.caPem), Buffer.from(opts.keyPem), Buffer.from(opts.certPem));
    const options: grpc.ChannelOptions = { ...CHANNEL_OPTIONS };
    if (opts.serverName !== opts.host) options['grpc.ssl_target_name_override'] = opts.serverName;
    const address = `${opts.host}:${opts.port}`;
    const pkg = loadProto();
    this.federation = new pkg.Federation(address, creds, options);
    // share the HTTP/2 connection with the federation calls
    this.adminStub = new pkg.Admin(address, creds, { ...options, channelOverride: this.federation.getChannel() }) as unknown as AdminStub;
  }

  /** Waits until the TLS connection is up; rejects with gRPC's reason otherwise. */
  ready(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.federation.waitForReady(Date.now() + timeoutMs, (e) =>
        e ? reject(new Error(`cannot connect to the server: ${e.message}`)) : resolve(),
      );
    });
  }

  /** Opens one Federation.Connect call for `info` (its purpose, job and channel as call metadata). */
  open(info: ConnectInfo, peer = 'server'): GrpcLink {
    return this.connect(
      {
        [CONNECT_METADATA.purpose]: info.purpose,
        ...(info.jobId !== null && { [CONNECT_METADATA.job]: info.jobId }),
        ...(info.channelId !== null && { [CONNECT_METADATA.channel]: info.channelId }),
      },
      peer,
    );
  }

  /** Opens one Federation.Connect call with raw metadata (tests that speak malformed protocol). */
  connect(metadata: Record<string, string>, peer = 'server'): GrpcLink {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(metadata)) md.set(k, v);
    const def = FEDERATION_SERVICE.Connect!;
    const call = this.federation.makeBidiStreamRequest<Frame, Buffer>(
      def.path,
      def.requestSerialize as (f: Frame) => Buffer,
      def.responseDeserialize as (b: Buffer) => Buffer,
      md,
    );
    return new GrpcLink(peer, call, {
      end: (s) => {
        s.end();
        // if the server does not close its side soon, drop the call
        setTimeout(() => (s as grpc.ClientDuplexStream<Frame, Buffer>).cancel(), 2000).unref();
      },
    });
  }

  /** One admin command. */
  command(req: AdminRequestWire, timeoutMs = 120_000): Promise<AdminReplyWire> {
    return new Promise((resolve, reject) => {
      this.adminStub.Command(req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, r) =>
        err || !r ? reject(new Error(err?.details || err?.message || 'no reply')) : resolve(r),
      );
    });
  }

  /**
   * Admin.Download: the pieces of a streamed download as they arrive. The server waits while
   * the caller is slow to iterate (gRPC flow control), so memory stays at a few pieces.
   */
  download(req: AdminRequestWire): AsyncIterable<DownloadPieceWire> {
    const def = loadProto().Admin.service.Download!;
    const call = this.adminStub.makeServerStreamRequest<AdminRequestWire, DownloadPieceWire>(
      ADMIN_DOWNLOAD,
      def.requestSerialize as (v: AdminRequestWire) => Buffer,
      def.responseDeserialize as (b: Buffer) => DownloadPieceWire,
      req,
      new grpc.Metadata(),
    );
    return {
      async *[Symbol.asyncIterator]() {
        try {
          for await (const p of call as AsyncIterable<DownloadPieceWire>) yield p;
        } catch (e) {
          const err = e as grpc.ServiceError;
          throw new Error(err.details || err.message);
        } finally {
          call.cancel();
        }
      },
    };
  }

  /**
   * Admin.Upload: the request, then `data`'s pieces as the server takes them (gRPC flow control:
   * `data` is read no faster than the server writes, so memory stays at a few pieces). Resolves to
   * the server's reply, which may come before the last piece (a refusal): reading stops there.
   * A failure of `data` itself (a file that changed while being read) cancels the call and rejects
   * with that failure.
   */
  upload(req: AdminRequestWire, data: AsyncIterable<Uint8Array>, timeoutMs = 3_600_000): Promise<AdminReplyWire> {
    const def = loadProto().Admin.service.Upload!;
    return new Promise((resolve, reject) => {
      let settled = false;
      let localError: Error | null = null;
      let wake: (() => void) | null = null;
      const call = this.adminStub.makeClientStreamRequest<UploadPieceWire, AdminReplyWire>(
        ADMIN_UPLOAD,
        def.requestSerialize as (v: UploadPieceWire) => Buffer,
        def.responseDeserialize as (b: Buffer) => AdminReplyWire,
        new grpc.Metadata(),
        { deadline: Date.now() + timeoutMs },
        (err, r) => {
          settled = true;
          wake?.();
          if (localError) reject(localError);
          else if (err || !r) reject(new Error(err?.details || err?.message || 'no reply'));
          else resolve(r);
        },
      );
      const write = async (p: UploadPieceWire): Promise<void> => {
        if (call.write(p)) return;
        await new Promise<void>((res) => {
          wake = res;
          call.once('drain', res);
        });
        call.off('drain', wake!);
        wake = null;
      };
      void (async () => {
        try {
          await write({ request: req });
          for await (const chunk of data) {
            if (settled) break;
            await write({ data: chunk });
          }
          if (!settled) call.end();
        } catch (e) {
          localError = e as Error;
          call.cancel();
        }
      })();
    });
  }

  /** The raw channel, for tests that speak malformed protocol. */
  get rawClient(): grpc.Client {
    return this.federation;
  }

  close(): void {
    this.federation.close();
    this.adminStub.close();
  }
}
