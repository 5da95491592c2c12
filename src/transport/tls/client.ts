/**
 * The data plane's dialling end: a site opens a mutual-TLS connection to the
 * server's data port with its own certificate, says what the connection is for
 * (hello), and gets a Link once the server welcomes it.
 */
import { connect } from 'node:tls';
import type { ConnectInfo, DialOptions } from '../peer.ts';
import { FrameDecoder, writeFrame } from './codec.ts';
import { TlsLink } from './link.ts';
import { DATA_PLANE_PROTOCOL, type Hello } from './server.ts';

export interface TlsDialOptions extends DialOptions {
  /** how long the TLS handshake and the server's answer may take (default 30 s) */
  timeoutMs?: number;
}

/** Dials the data plane and resolves to a Link for `info` (rejects with the server's reason when refused). */
export function dialTls(opts: TlsDialOptions, info: ConnectInfo, peer = 'server'): Promise<TlsLink> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: opts.host, port: opts.port, servername: opts.serverName, ca: opts.caPem, cert: opts.certPem, key: opts.keyPem });
    const decoder = new FrameDecoder();
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const fail = (why: string): void => {
      clearTimeout(timer);
      socket.destroy();
      reject(new Error(`data plane ${opts.host}:${opts.port}: ${why}`));
    };
    const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
    socket.once('error', (e) => fail(e.message));
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
