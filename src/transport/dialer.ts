/**
 * Dialers chosen by address (address.ts): every driver turns a ConnectInfo into a Link the same
 * way, so a site names where its connections go and nothing else. FallbackDialer is the data
 * plane's fallback to gRPC: a data port that cannot be reached at all (a firewall that lets only
 * the gRPC port through) sends the connections over the other dialer; a port that answers and
 * refuses does not (falling back would hide the refusal).
 */
import { type Address, parseAddress } from './address.ts';
import { GrpcClient } from './grpc/client.ts';
import type { Link } from './link.ts';
import { dialMemory } from './memory-listeners.ts';
import type { ConnectInfo, PeerIdentity } from './peer.ts';
import { DataPlaneDialError, dialTls } from './tls/dial.ts';

export interface Dialer {
  readonly address: string;
  dial(info: ConnectInfo): Promise<Link>;
  /** releases what the dialer holds (a gRPC connection it opened); links already dialled stay up */
  close(): void;
}

export interface DialerOptions {
  /** mutual TLS (tls://, grpc://): the name the server certificate must carry, and this side's credentials */
  serverName?: string;
  caPem?: string;
  certPem?: string;
  keyPem?: string;
  /** how long a tls:// dial may take (handshake and the server's answer) */
  timeoutMs?: number;
  /** grpc://: an open client to share (its HTTP/2 connection carries the admin calls too) */
  grpc?: GrpcClient;
  /** mem://: who this side is, as a certificate would say */
  identity?: PeerIdentity;
}

function tlsCredentials(address: string, o: DialerOptions): { serverName: string; caPem: string; certPem: string; keyPem: string } {
  if (o.serverName === undefined || o.caPem === undefined || o.certPem === undefined || o.keyPem === undefined) {
    throw new Error(`dialing ${address} needs serverName, caPem, certPem and keyPem (mutual TLS)`);
  }
  return { serverName: o.serverName, caPem: o.caPem, certPem: o.certPem, keyPem: o.keyPem };
}

/** The dialer for `address` (tls://, grpc:// or mem://). */
export function dialerFor(address: string | Address, o: DialerOptions = {}): Dialer {
  const a = typeof address === 'string' ? parseAddress(address) : address;
  const text = typeof address === 'string' ? address : a.scheme === 'mem' ? `mem://${a.name}` : `${a.scheme}://${a.host}:${a.port}`;
  switch (a.scheme) {
    case 'tls': {
      const creds = tlsCredentials(text, o);
      return {
        address: text,
        dial: (info) =>
          dialTls({ host: a.host, port: a.port, ...creds, ...(o.timeoutMs !== undefined && { timeoutMs: o.timeoutMs }) }, info),
        close: () => undefined,
      };
    }
    case 'grpc': {
      const owned = o.grpc ? null : new GrpcClient({ host: a.host, port: a.port, ...tlsCredentials(text, o) });
      const client = o.grpc ?? owned!;
      return { address: text, dial: async (info) => client.open(info), close: () => owned?.close() };
    }
    case 'mem': {
      const identity = o.identity;
      if (!identity) throw new Error(`dialing ${text} needs an identity (who this side is)`);
      return { address: text, dial: (info) => dialMemory(a.name, identity, info), close: () => undefined };
    }
  }
}

/** Whether a dial failed without ever reaching the port (nothing answered): the case a fallback is for. */
export function isUnreachable(e: unknown): boolean {
  return e instanceof DataPlaneDialError && !e.reachable;
}

/**
 * Dials `primary`; when its first dial finds the port unreachable, `fallback` from then on (the
 * choice made on the first dial is kept, so a resumed channel stays on its transport).
 */
export class FallbackDialer implements Dialer {
  private chosen: 'undecided' | 'primary' | 'fallback' = 'undecided';

  constructor(
    private readonly primary: Dialer,
    private readonly fallback: Dialer,
    private readonly onFallback: (error: Error) => void = () => undefined,
  ) {}

  get address(): string {
    return this.chosen === 'fallback' ? this.fallback.address : this.primary.address;
  }

  /** which dialer the connections go through ('undecided' before the first dial) */
  get using(): 'undecided' | 'primary' | 'fallback' {
    return this.chosen;
  }

  async dial(info: ConnectInfo): Promise<Link> {
    if (this.chosen === 'fallback') return this.fallback.dial(info);
    try {
      const link = await this.primary.dial(info);
      this.chosen = 'primary';
      return link;
    } catch (e) {
      if (this.chosen !== 'undecided' || !isUnreachable(e)) throw e;
      this.chosen = 'fallback';
      this.onFallback(e as Error);
      return this.fallback.dial(info);
    }
  }

  close(): void {
    this.primary.close();
    this.fallback.close();
  }
}
