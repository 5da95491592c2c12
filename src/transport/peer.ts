/**
 * Who is on the other end of a connection, and what the connection is for:
 * shared by the gRPC control plane and the TLS data plane. The identity is
 * read from the peer's verified certificate, never from a message.
 */
import type { PeerCertificate, TLSSocket } from 'node:tls';

export interface PeerIdentity {
  /** certificate CN: site name, admin email, server name */
  name: string;
  org: string;
  /** certificate OU: `client`, `server` or an admin role */
  kind: string;
}

export interface ConnectInfo {
  purpose: 'session' | 'job';
  jobId: string | null;
  /**
   * the dialling side's name for the channel this connection carries (gRPC metadata
   * x-flotilla-channel, or the data plane's hello), the same on every reconnection, so a
   * resumable channel can be handed its new link
   */
  channelId: string | null;
  /** where the connection comes from (host:port), for messages that name it; absent in memory */
  remote?: string;
}

/** How a site (or admin) reaches the server: its address and the credentials of mutual TLS. */
export interface DialOptions {
  host: string;
  port: number;
  /** name the server certificate must carry (subjectAltName) */
  serverName: string;
  caPem: string;
  certPem: string;
  keyPem: string;
}

export const CHANNEL_ID = /^[A-Za-z0-9_-]{8,64}$/;

function field(v: string | string[] | undefined): string | null {
  return typeof v === 'string' && v.length > 0 ? v : null;
}

/** Identity from a verified client certificate, or why it does not name one. */
export function identityOfCertificate(cert: PeerCertificate): PeerIdentity | string {
  const name = field(cert.subject?.CN);
  const org = field(cert.subject?.O);
  const kind = field(cert.subject?.OU);
  if (!name || !org || !kind) return 'client certificate lacks a single CN, O and OU';
  return { name, org, kind };
}

/** OpenSSL's wording for the verify errors a refused client certificate usually has (Node keeps only the code). */
const VERIFY_ERRORS: Record<string, string> = {
  CERT_HAS_EXPIRED: 'certificate has expired',
  CERT_NOT_YET_VALID: 'certificate is not yet valid',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'unable to verify the first certificate',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'unable to get local issuer certificate',
  SELF_SIGNED_CERT_IN_CHAIN: 'self-signed certificate in certificate chain',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'self-signed certificate',
  CERT_SIGNATURE_FAILURE: 'certificate signature failure',
  CERT_REVOKED: 'certificate revoked',
};

/** Why a TLS handshake was refused: the client certificate's verify error if it had one, else the TLS error. */
export function tlsRefusalReason(err: Error, socket: Pick<TLSSocket, 'authorizationError'> | undefined): string {
  const code = socket?.authorizationError;
  if (code !== undefined && code !== null) {
    const c = String(code);
    return VERIFY_ERRORS[c] ? `${VERIFY_ERRORS[c]} (${c})` : c;
  }
  return err.message;
}
