/**
 * The data plane's dialling end: a site opens a mutual-TLS connection to the
 * server's data port with its own certificate, says what the connection is for
 * (hello), and gets a Link once the server welcomes it.
 */
import { connect } from 'node:tls';
import type { ConnectInfo, DialOptions } from '../peer.ts';
import { FrameDecoder, writeFrame } from '../codec.ts';
import { TlsLink } from './link.ts';
import { DATA_PLANE_PROTOCOL, type Hello } from './server.ts';

export interface TlsDialOptions extends DialOptions {
  /** how long the TLS handshake and the server's answer may take (default 30 s) */
  timeoutMs?: number;
}

/**
 * A dial that failed. `reachable` is false when no TCP connection to the port was ever made
 * (refused, unroutable, timed out): a firewall that lets only the gRPC port through looks like
 * this, and the caller may carry the job over gRPC instead. A refusal by the server, a failed
 * TLS handshake or a protocol error is `reachable`: the port answered, and falling back would hide it.
 */
export class DataPlaneDialError extends Error {
  override readonly name = 'DataPlaneDialError';
  constructor(
    message: string,
    readonly reachable: boolean,
  ) {
    super(message);
  }
}

/** Dials the data plane and resolves to a Link for `info` (rejects with a DataPlaneDialError naming the server's reason when refused). */
export function dialTls(opts: TlsDialOptions, info: ConnectInfo, peer = 'server'): Promise<TlsLink> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: opts.host,
      port: opts.port,
      servername: opts.serverName,
      ca: opts.caPem,
      cert: opts.certPem,
      key: opts.keyPem,
    });
    const decoder = new FrameDecoder();
    const timeoutMs = opts.timeoutMs ?? 30_000;
    let connected = false;
    socket.once('connect', () => (connected = true));
    const fail = (why: string): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(new DataPlaneDialError(`data plane ${opts.host}:${opts.port}: ${why}`, connected));
    };
    const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
    socket.once('error', (e: Error) => fail(e.message));
    socket.once('close', () => fail('connection closed before the server answered'));
    socket.once('secureConnect', () => {
      const hello: Hello = { protocol: DATA_PLANE_PROTOCOL, purpose: info.purpose, jobId: info.jobId, channelId: info.channelId };
      writeFrame(socket, { type: 'hello', json: JSON.stringify(hello) });
    });
    const onData = (b: Buffer): void => {
      const got = decoder.push(b);
      if (typeof got === 'string') return fail(`protocol error: ${got}`);
      if (got.length === 0) return;
      socket.off('data', onData);
      const [first, ...rest] = got;
      if (first!.type === 'refuse') return fail(`refused: ${first!.reason}`);
      if (first!.type !== 'welcome') return fail(`expected welcome, got ${first!.type}`);
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.removeAllListeners('close');
      resolve(new TlsLink(peer, socket, decoder, rest));
    };
    socket.on('data', onData);
  });
}
