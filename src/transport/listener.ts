/**
 * Listeners chosen by address (address.ts), the accepting side of dialer.ts: each hands every
 * authenticated connection to `onConnect` with who it is (from its certificate, or the mem://
 * dialler's identity) and what it is for; returning a reason refuses it.
 */
import { type Logger } from '../util/log.ts';
import { type Address, formatAddress, parseAddress } from './address.ts';
import { GrpcServer, type GrpcServerHandlers } from './grpc/server.ts';
import { type OnConnect, listenMemory } from './memory-listeners.ts';
import { TlsDataServer } from './tls/server.ts';

export type { OnConnect };

export interface Listener {
  /** Starts accepting; resolves to the address bound (a port of 0 replaced by the one chosen). */
  start(): Promise<string>;
  close(graceMs?: number): Promise<void>;
}

export interface ListenerOptions {
  onConnect: OnConnect;
  /** mutual TLS (tls://, grpc://): the project CA that signs every client, and this server's credentials */
  caPem?: string;
  certPem?: string;
  keyPem?: string;
  /** grpc://: the admin service on the same port (without it admin calls are refused) */
  admin?: Omit<GrpcServerHandlers, 'onConnect'>;
  log?: Logger;
}

function credentials(address: string, o: ListenerOptions): { caPem: string; certPem: string; keyPem: string } {
  if (o.caPem === undefined || o.certPem === undefined || o.keyPem === undefined)
    throw new Error(`listening on ${address} needs caPem, certPem and keyPem (mutual TLS)`);
  return { caPem: o.caPem, certPem: o.certPem, keyPem: o.keyPem };
}

/** The listener for `address` (tls://, grpc:// or mem://). */
export function listenerFor(address: string | Address, o: ListenerOptions): Listener {
  const a = typeof address === 'string' ? parseAddress(address) : address;
  const text = formatAddress(a);
  const log = o.log ? { log: o.log } : {};
  switch (a.scheme) {
    case 'tls': {
      const server = new TlsDataServer({ host: a.host, port: a.port, ...credentials(text, o), onConnect: o.onConnect, ...log });
      return { start: async () => formatAddress({ ...a, port: await server.start() }), close: (g) => server.close(g) };
    }
    case 'grpc': {
      const refuse = async (): Promise<never> => {
        throw new Error('this server takes no admin commands');
      };
      const handlers: GrpcServerHandlers = {
        onConnect: o.onConnect,
        onAdmin: o.admin?.onAdmin ?? refuse,
        ...(o.admin?.onDownload && { onDownload: o.admin.onDownload }),
      };
      const server = new GrpcServer({ host: a.host, port: a.port, ...credentials(text, o), handlers, ...log });
      return { start: async () => formatAddress({ ...a, port: await server.start() }), close: (g) => server.close(g) };
    }
    case 'mem': {
      let handle: { close(): void } | null = null;
      return {
        start: async () => {
          handle = listenMemory(a.name, o.onConnect);
          return text;
        },
        close: async () => handle?.close(),
      };
    }
  }
}
