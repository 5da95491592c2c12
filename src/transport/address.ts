/**
 * Where a link goes, as one string: `tls://host:port` (the data plane), `grpc://host:port`
 * (a Federation.Connect call) or `mem://name` (a listener in this process). The scheme picks
 * the driver (dialer.ts, listener.ts); nothing above the transport names a driver.
 */

export type Scheme = 'tls' | 'grpc' | 'mem';
export type Address =
  { readonly scheme: 'tls' | 'grpc'; readonly host: string; readonly port: number } | { readonly scheme: 'mem'; readonly name: string };

export class AddressError extends Error {
  override readonly name = 'AddressError';
}

const SCHEMES: readonly Scheme[] = ['tls', 'grpc', 'mem'];

/** Parses an address; the error says what is wrong and what a good one looks like. */
export function parseAddress(text: string): Address {
  const m = /^([a-z]+):\/\/(.+)$/.exec(text);
  const scheme = m?.[1] as Scheme | undefined;
  if (!m || !scheme || !SCHEMES.includes(scheme))
    throw new AddressError(`address "${text}": expected tls://host:port, grpc://host:port or mem://name`);
  const rest = m[2]!;
  if (scheme === 'mem') {
    if (!/^[A-Za-z0-9._-]{1,128}$/.test(rest))
      throw new AddressError(`address "${text}": a mem:// name is 1 to 128 letters, digits, ".", "_" or "-"`);
    return { scheme, name: rest };
  }
  const hp = /^(\[[0-9A-Fa-f:.]+\]|[^:/[\]]+):(\d{1,5})$/.exec(rest);
  const port = hp ? Number(hp[2]) : NaN;
  if (!hp || port > 65535) throw new AddressError(`address "${text}": expected ${scheme}://host:port with a port of 0 to 65535`);
  return { scheme, host: hp[1]!.replace(/^\[(.*)\]$/, '$1'), port };
}

export function formatAddress(a: Address): string {
  if (a.scheme === 'mem') return `mem://${a.name}`;
  return `${a.scheme}://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
}
