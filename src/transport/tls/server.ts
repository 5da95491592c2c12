/**
 * The data plane's server end: a mutual-TLS listener (client certificates must be
 * signed by the project CA) whose connections carry one Link each, framed by
 * codec.ts instead of gRPC's HTTP/2 and protobuf. Model payloads are what it is
 * for: the same frames as a Federation.Connect call, at 1.6–1.9× the throughput
 * (docs/benchmarks.md). A connection starts with the dialling side's `hello`
 * (what the connection is for, validated), answered by `welcome` or `refuse`.
 */
import { type Server, type TLSSocket, createServer } from 'node:tls';
import { z } from 'zod';
import { type Logger, silentLogger } from '../../util/log.ts';
import { describeZodError } from '../../util/zod-error.ts';
import { CHANNEL_ID, type ConnectInfo, type PeerIdentity, identityOfCertificate, tlsRefusalReason } from '../peer.ts';
import { FrameDecoder, writeFrame } from '../codec.ts';
import { type ConnectionLimits, DEFAULT_HANDSHAKE_TIMEOUT_MS, guardConnections } from '../guard.ts';
import { TlsLink } from './link.ts';

/** Version of the data plane's handshake; a dialler speaking another is refused with both numbers. */
export const DATA_PLANE_PROTOCOL = 1;

/** The dialling side's first frame. */
export const Hello = z.strictObject({
  protocol: z.number().int(),
  purpose: z.enum(['session', 'job']),
  jobId: z.string().min(1).max(128).nullable(),
  channelId: z.string().regex(CHANNEL_ID, 'must be 8 to 64 letters, digits, "_" or "-"').nullable(),
});
export type Hello = z.infer<typeof Hello>;

export interface TlsDataServerOptions {
  host: string;
  port: number;
  caPem: string;
  certPem: string;
  keyPem: string;
  /** A site connected and said what for. Return a reason to refuse it, or null to keep the link. */
  onConnect(link: TlsLink, peer: PeerIdentity, info: ConnectInfo): string | null;
  /** how long a new connection may take to send its hello (default 10 s) */
  helloTimeoutMs?: number;
  /** handshake timeout and connection limit for connections not yet authenticated (guard.ts) */
  limits?: ConnectionLimits;
  log?: Logger;
}

export class TlsDataServer {
  private readonly server: Server;
  private readonly log: Logger;
  private readonly sockets = new Set<TLSSocket>();

  constructor(private readonly opts: TlsDataServerOptions) {
    this.log = opts.log ?? silentLogger();
    this.server = createServer(
      {
        key: opts.keyPem,
        cert: opts.certPem,
        ca: opts.caPem,
        requestCert: true,
        rejectUnauthorized: true,
        handshakeTimeout: opts.limits?.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
      },
      (s) => this.accept(s),
    );
    guardConnections(this.server, 'data plane', opts.limits ?? {}, this.log);
    this.server.on('tlsClientError', (err: Error, socket: TLSSocket | undefined) => {
      const reason = tlsRefusalReason(err, socket);
      this.log[socket?.authorizationError ? 'warn' : 'info'](
        { remote: socket?.remoteAddress ?? null, reason },
        `data plane: TLS handshake refused: ${reason}`,
      );
    });
  }

  /** Binds and starts serving; resolves to the bound port. */
  start(): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (e: Error): void =>
        reject(new Error(`data plane cannot listen on ${this.opts.host}:${this.opts.port}: ${e.message}`));
      this.server.once('error', onError);
      this.server.listen(this.opts.port, this.opts.host, () => {
        this.server.off('error', onError);
        resolve((this.server.address() as { port: number }).port);
      });
    });
  }

  /** Stops listening and closes every connection (after `graceMs` for those still open). */
  close(graceMs = 2000): Promise<void> {
    return new Promise((resolve) => {
      for (const s of this.sockets) s.end();
      const t = setTimeout(() => {
        for (const s of this.sockets) s.destroy();
      }, graceMs);
      this.server.close(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  private accept(socket: TLSSocket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
    const refuse = (reason: string, level: 'warn' | 'info' = 'warn'): void => {
      this.log[level]({ remote: socket.remoteAddress ?? null, reason }, 'data plane: connection refused');
      writeFrame(socket, { type: 'refuse', reason });
      socket.end();
      setTimeout(() => socket.destroy(), 2000).unref();
    };
    const id = identityOfCertificate(socket.getPeerCertificate());
    if (typeof id === 'string') return refuse(id);
    if (id.kind !== 'client') return refuse(`certificate of ${id.name} is a ${id.kind} certificate, not a client site's`);
    const decoder = new FrameDecoder();
    const timer = setTimeout(() => {
      cleanup();
      refuse(`no hello within ${this.opts.helloTimeoutMs ?? 10_000} ms`, 'info');
    }, this.opts.helloTimeoutMs ?? 10_000);
    const onData = (b: Buffer): void => {
      const got = decoder.push(b);
      if (typeof got === 'string') {
        cleanup();
        return refuse(`protocol error: ${got}`);
      }
      if (got.length === 0) return;
      cleanup();
      const [first, ...rest] = got;
      if (first!.type !== 'hello') return refuse(`expected a hello frame first, got ${first!.type}`);
      let raw: unknown;
      try {
        raw = JSON.parse(first!.json);
      } catch {
        return refuse('hello is not JSON');
      }
      const hello = Hello.safeParse(raw);
      if (!hello.success) return refuse(`malformed hello: ${describeZodError(hello.error)}`);
      const h = hello.data;
      if (h.protocol !== DATA_PLANE_PROTOCOL)
        return refuse(`site speaks data plane protocol ${h.protocol}, server speaks ${DATA_PLANE_PROTOCOL}`);
      if (h.purpose === 'job' && !h.jobId) return refuse('a job connection needs a jobId');
      // welcome first: the handler may send on the link at once, and the dialler takes
      // everything after the welcome as the link's; a refusal then closes the link with its reason
      writeFrame(socket, { type: 'welcome' });
      const link = new TlsLink(id.name, socket, decoder, rest); // frames right behind the hello are the link's
      let refused: string | null;
      try {
        refused = this.opts.onConnect(link, id, {
          purpose: h.purpose,
          jobId: h.purpose === 'job' ? h.jobId : null,
          channelId: h.channelId,
          remote: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`,
        });
      } catch (e) {
        // a handler's bug ends this connection, never the server
        refused = `server error: ${(e as Error).message}`;
      }
      if (refused !== null) {
        this.log.warn({ site: id.name, refused }, 'data plane: connection refused');
        link.refuse(refused);
      }
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.off('data', onData);
    };
    socket.on('data', onData);
    socket.on('close', cleanup);
  }
}
