/**
 * The small HTTP(S) plumbing the dashboard and the metrics endpoint share: listen on a host and
 * port (HTTPS with the server's certificate when given one), answer JSON and text, read a bounded
 * body. A handler that throws answers 500 and never takes the server down.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../util/log.ts';

export interface ListenOptions {
  host: string;
  port: number;
  /** HTTPS with this certificate and key; absent: plain HTTP */
  tls?: { certPem: string; keyPem: string };
}

export type Handler = (req: IncomingMessage, res: ServerResponse) => Promise<void> | void;

export interface WebServer {
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/** Headers on every answer: nothing is cached, sniffed, framed or sent a referrer. */
const COMMON_HEADERS = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

export async function listen(opts: ListenOptions, handler: Handler, log: Logger): Promise<WebServer> {
  const wrapped = (req: IncomingMessage, res: ServerResponse): void => {
    for (const [k, v] of Object.entries(COMMON_HEADERS)) res.setHeader(k, v);
    Promise.resolve()
      .then(() => handler(req, res))
      .catch((e: Error) => {
        log.warn({ url: req.url?.slice(0, 200), err: e.message }, 'web request failed');
        if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
        else res.destroy();
      });
  };
  const server: Server = opts.tls
    ? createHttpsServer({ cert: opts.tls.certPem, key: opts.tls.keyPem }, wrapped)
    : createHttpServer(wrapped);
  // a slow or silent client never holds a socket for long; event streams send every few seconds
  server.headersTimeout = 10_000;
  server.requestTimeout = 0;
  server.keepAliveTimeout = 5_000;
  server.on('clientError', (_e, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  return {
    port,
    url: `${opts.tls ? 'https' : 'http'}://${host}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export function sendText(res: ServerResponse, status: number, contentType: string, body: string | Buffer): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** The request body, refused past `limit` bytes. */
export async function readBody(req: IncomingMessage, limit = 64 * 1024): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > limit) throw new Error(`request body over ${limit} bytes`);
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}
