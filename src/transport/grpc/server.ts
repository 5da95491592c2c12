/**
 * The gRPC server end: one port, mutual TLS always (client certificates must
 * be signed by the project CA), the Federation.Connect bidi call for sites
 * and the Admin.Command call for admins. The caller's identity is read from
 * its verified certificate (CN, O, OU), never from a message.
 */
import * as grpc from '@grpc/grpc-js';
import { Socket } from 'node:net';
import { type PeerCertificate, Server as TlsServer, type TLSSocket } from 'node:tls';
import { type Logger, silentLogger } from '../../util/log.ts';
import type { Frame } from '../link.ts';
import { CHANNEL_ID, type ConnectInfo, type PeerIdentity, identityOfCertificate, tlsRefusalReason } from '../peer.ts';
import { type ConnectionLimits, guardConnections } from '../guard.ts';
import { GrpcLink } from './link.ts';
import {
  type AdminReplyWire,
  type AdminRequestWire,
  CHANNEL_OPTIONS,
  CONNECT_METADATA,
  type DownloadPieceWire,
  FEDERATION_SERVICE,
  type UploadPieceWire,
  loadProto,
} from './wire.ts';

export interface GrpcServerHandlers {
  /** A site opened a Connect call. Return a reason to refuse it, or null to keep the link. */
  onConnect(link: GrpcLink, peer: PeerIdentity, info: ConnectInfo): string | null;
  onAdmin(peer: PeerIdentity, req: AdminRequestWire): Promise<AdminReplyWire>;
  /**
   * An admin asked for a streamed download: `write` resolves when the call can take the next
   * piece (gRPC backpressure). Throw to end the call with that message. Optional: without it
   * the call is refused as unimplemented.
   */
  onDownload?: (peer: PeerIdentity, req: AdminRequestWire, write: (p: DownloadPieceWire) => Promise<void>) => Promise<void>;
  /**
   * An admin's streamed upload: the request, and the bytes that follow it as they arrive (read
   * under gRPC flow control: the admin waits while the handler is busy). The reply may come
   * before the last byte (a refusal). Optional: without it the call is refused as unimplemented.
   */
  onUpload?: (peer: PeerIdentity, req: AdminRequestWire, data: AsyncIterable<Uint8Array>) => Promise<AdminReplyWire>;
}

export interface GrpcServerOptions {
  host: string;
  port: number;
  caPem: string;
  certPem: string;
  keyPem: string;
  handlers: GrpcServerHandlers;
  /** handshake timeout and connection limit for connections not yet authenticated (guard.ts) */
  limits?: ConnectionLimits;
  log?: Logger;
}

/** Identity from the verified client certificate of a gRPC call, or why there is none. */
export function identityOf(call: {
  getAuthContext(): { transportSecurityType?: string; sslPeerCertificate?: PeerCertificate } | null;
}): PeerIdentity | string {
  const ctx = call.getAuthContext();
  if (ctx?.transportSecurityType !== 'ssl' || !ctx.sslPeerCertificate) return 'no verified client certificate';
  return identityOfCertificate(ctx.sslPeerCertificate);
}

function metaString(md: grpc.Metadata, key: string): string | null {
  const v = md.get(key)[0];
  return typeof v === 'string' ? v : null;
}

export class GrpcServer {
  private readonly server: grpc.Server;
  private readonly log: Logger;
  /** grpc-js's http2 servers whose refused handshakes we already log */
  private readonly watched = new WeakSet<TlsServer>();

  constructor(private readonly opts: GrpcServerOptions) {
    this.log = opts.log ?? silentLogger();
    this.server = new grpc.Server(CHANNEL_OPTIONS);
    const pkg = loadProto();
    this.server.addService(FEDERATION_SERVICE, { Connect: (call: grpc.ServerDuplexStream<Buffer, Frame>) => this.connect(call) });
    this.server.addService(pkg.Admin.service, {
      Command: (call: grpc.ServerUnaryCall<AdminRequestWire, AdminReplyWire>, cb: grpc.sendUnaryData<AdminReplyWire>) =>
        void this.admin(call, cb),
      Download: (call: grpc.ServerWritableStream<AdminRequestWire, DownloadPieceWire>) => void this.download(call),
      Upload: (call: grpc.ServerReadableStream<UploadPieceWire, AdminReplyWire>, cb: grpc.sendUnaryData<AdminReplyWire>) =>
        void this.upload(call, cb),
    });
  }

  /** Binds and starts serving; resolves to the bound port. */
  async start(): Promise<number> {
    const creds = grpc.ServerCredentials.createSsl(
      Buffer.from(this.opts.caPem),
      [{ private_key: Buffer.from(this.opts.keyPem), cert_chain: Buffer.from(this.opts.certPem) }],
      true,
    );
    const port = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(`${this.opts.host}:${this.opts.port}`, creds, (err, p) =>
        err ? reject(new Error(`cannot listen on ${this.opts.host}:${this.opts.port}: ${err.message}`)) : resolve(p),
      );
    });
    this.logTlsRefusals();
    return port;
  }

  /**
   * A refused client certificate never reaches a handler: Node's TLS server drops the socket
   * and emits `tlsClientError` on the http2 server, which grpc-js keeps private (`http2Servers`,
   * grpc-js ≥ 1.10). We listen there, so the server log says why (expired, unknown CA); with a
   * grpc-js that no longer has the field, handshakes are still refused, only without a log line.
   */
  private logTlsRefusals(): void {
    const servers: unknown = Reflect.get(this.server, 'http2Servers');
    if (!(servers instanceof Map)) {
      this.log.warn('this grpc-js does not expose its listeners: refused TLS handshakes will not be logged');
      return;
    }
    for (const s of servers.keys()) {
      if (!(s instanceof TlsServer) || this.watched.has(s)) continue;
      this.watched.add(s);
      guardConnections(s, 'gRPC port', this.opts.limits ?? {}, this.log);
      // the TLS socket is closed by the time of the event: read the address (node caches it) while it is open
      s.on('connection', (raw: Socket) => void raw.remoteAddress);
      s.on('tlsClientError', (err: Error, socket: TLSSocket | undefined) => {
        const reason = tlsRefusalReason(err, socket);
        const parent: unknown = socket ? Reflect.get(socket, '_parent') : undefined;
        const remote = socket?.remoteAddress ?? (parent instanceof Socket ? parent.remoteAddress : undefined) ?? null;
        // a certificate that failed verification is worth a warning; a peer hanging up mid-handshake is routine
        const level = socket?.authorizationError ? 'warn' : 'info';
        this.log[level]({ remote, reason }, `TLS handshake refused: ${reason}`);
      });
    }
  }

  close(graceMs = 2000): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  private connect(call: grpc.ServerDuplexStream<Buffer, Frame>): void {
    const refuse = (code: grpc.status, details: string): void => {
      this.log.warn({ peer: call.getPeer(), details }, 'connection refused');
      call.emit('error', { code, details });
    };
    const id = identityOf(call);
    if (typeof id === 'string') return refuse(grpc.status.UNAUTHENTICATED, id);
    if (id.kind !== 'client')
      return refuse(grpc.status.PERMISSION_DENIED, `certificate of ${id.name} is a ${id.kind} certificate, not a client site's`);
    const purpose = metaString(call.metadata, CONNECT_METADATA.purpose);
    if (purpose !== 'session' && purpose !== 'job')
      return refuse(grpc.status.INVALID_ARGUMENT, 'metadata x-flotilla-purpose must be "session" or "job"');
    const jobId = metaString(call.metadata, CONNECT_METADATA.job);
    if (purpose === 'job' && !jobId) return refuse(grpc.status.INVALID_ARGUMENT, 'a job call needs metadata x-flotilla-job');
    const link = new GrpcLink(id.name, call, {
      end: (s, reason, error) => {
        if (error) s.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: error });
        else s.end();
        void reason;
      },
    });
    const channelId = metaString(call.metadata, CONNECT_METADATA.channel);
    if (channelId !== null && !CHANNEL_ID.test(channelId))
      return refuse(grpc.status.INVALID_ARGUMENT, 'metadata x-flotilla-channel must be 8 to 64 letters, digits, "_" or "-"');
    const remote = call.getPeer().replace(/^ipv[46]:/, '');
    const refused = this.opts.handlers.onConnect(link, id, { purpose, jobId: purpose === 'job' ? jobId : null, channelId, remote });
    if (refused !== null) {
      link.close(refused, refused);
      this.log.warn({ site: id.name, refused }, 'connection refused');
    }
  }

  private async admin(call: grpc.ServerUnaryCall<AdminRequestWire, AdminReplyWire>, cb: grpc.sendUnaryData<AdminReplyWire>): Promise<void> {
    const id = identityOf(call);
    if (typeof id === 'string') return cb({ code: grpc.status.UNAUTHENTICATED, details: id });
    try {
      cb(null, await this.opts.handlers.onAdmin(id, call.request));
    } catch (e) {
      cb({ code: grpc.status.INTERNAL, details: (e as Error).message });
    }
  }

  private async download(call: grpc.ServerWritableStream<AdminRequestWire, DownloadPieceWire>): Promise<void> {
    const id = identityOf(call);
    const fail = (code: grpc.status, details: string): void => void call.emit('error', { code, details });
    if (typeof id === 'string') return fail(grpc.status.UNAUTHENTICATED, id);
    const handler = this.opts.handlers.onDownload;
    if (!handler) return fail(grpc.status.UNIMPLEMENTED, 'this server does not serve downloads');
    let gone: string | null = null;
    call.on('cancelled', () => (gone = 'the admin cancelled the download'));
    const write = async (p: DownloadPieceWire): Promise<void> => {
      if (gone) throw new Error(gone);
      if (call.write(p)) return;
      // wait for room (or the admin going away); drop both listeners either way, or a long
      // download would pile up one 'cancelled' listener per full buffer
      await new Promise<void>((resolve) => {
        const done = (): void => {
          call.off('drain', done);
          call.off('cancelled', done);
          resolve();
        };
        call.on('drain', done);
        call.on('cancelled', done);
      });
    };
    try {
      await handler(id, call.request, write);
      call.end();
    } catch (e) {
      if (!gone) fail(grpc.status.FAILED_PRECONDITION, (e as Error).message);
    }
  }

  private async upload(
    call: grpc.ServerReadableStream<UploadPieceWire, AdminReplyWire>,
    cb: grpc.sendUnaryData<AdminReplyWire>,
  ): Promise<void> {
    const id = identityOf(call);
    if (typeof id === 'string') return cb({ code: grpc.status.UNAUTHENTICATED, details: id });
    const handler = this.opts.handlers.onUpload;
    if (!handler) return cb({ code: grpc.status.UNIMPLEMENTED, details: 'this server does not take uploads' });
    const it = (call as AsyncIterable<UploadPieceWire>)[Symbol.asyncIterator]();
    try {
      const first = await it.next();
      if (first.done || first.value.kind !== 'request' || !first.value.request)
        return cb({ code: grpc.status.INVALID_ARGUMENT, details: 'an upload starts with its request' });
      // the rest of the call is read only as the handler asks for it; a handler that stops early
      // (a refusal) leaves the admin's remaining pieces unread, and the reply ends the call
      const data = (async function* (): AsyncGenerator<Uint8Array> {
        for (;;) {
          const r = await it.next();
          if (r.done) return;
          if (r.value.kind !== 'data' || !(r.value.data instanceof Uint8Array))
            throw new Error('an upload piece after the request is not data');
          yield r.value.data;
        }
      })();
      cb(null, await handler(id, first.value.request, data));
    } catch (e) {
      cb({ code: grpc.status.INTERNAL, details: (e as Error).message });
    }
  }
}
