/**
 * The project's certificate authority: an ECDSA P-256 root and the
 * participant certificates it signs. Identity lives in the subject:
 * CN = participant name, O = organisation, OU = kind (`server`, `client`) or,
 * for admins, their role — the kit is signed, so the server can trust these.
 */
import { webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
// @peculiar/x509 resolves its services through tsyringe, which needs the Reflect metadata API
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

type CryptoKeyPair = webcrypto.CryptoKeyPair;
type CryptoKey = webcrypto.CryptoKey;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;

export interface CertAuthority {
  certPem: string;
  keyPem: string;
}

export interface IssuedCert {
  certPem: string;
  keyPem: string;
}

export interface SubjectFields {
  cn: string;
  org: string;
  /** `server`, `client` or an admin role */
  ou: string;
}

function toPem(der: ArrayBuffer, label: string): string {
  const b64 = Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN ${label}-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END ${label}-----\n`;
}

function fromPem(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

function serial(): string {
  // positive, 16 random bytes
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] = b[0]! & 0x7f;
  return Buffer.from(b).toString('hex');
}

function name(s: SubjectFields): x509.JsonName {
  return [{ CN: [s.cn] }, { O: [s.org] }, { OU: [s.ou] }];
}

async function newKeys(): Promise<CryptoKeyPair> {
  return await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
}

async function exportKey(k: CryptoKey): Promise<string> {
  return toPem(await webcrypto.subtle.exportKey('pkcs8', k), 'PRIVATE KEY');
}

export async function createCA(project: string, validityDays: number, now = new Date()): Promise<CertAuthority> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: [{ CN: [`${project} root CA`] }, { O: [project] }],
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + validityDays * 86_400_000),
    signingAlgorithm: SIGN,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem') + '\n', keyPem: await exportKey(keys.privateKey) };
}

export interface IssueOptions {
  subject: SubjectFields;
  /** DNS names / IP addresses for a server certificate */
  hosts?: string[];
  notBefore?: Date;
  notAfter: Date;
}

/** Issues a certificate signed by the CA, with a fresh key pair that only the caller (the kit) gets. */
export async function issueCert(ca: CertAuthority, o: IssueOptions): Promise<IssuedCert> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKey = await webcrypto.subtle.importKey('pkcs8', fromPem(ca.keyPem), ALG, false, ['sign']);
  const keys = await newKeys();
  const server = o.hosts !== undefined;
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
    new x509.ExtendedKeyUsageExtension(
      server ? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth] : [x509.ExtendedKeyUsage.clientAuth],
    ),
    await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
  ];
  if (server) {
    extensions.push(
      new x509.SubjectAlternativeNameExtension(
        o.hosts!.map((h) => (isIP(h) ? { type: 'ip' as const, value: h } : { type: 'dns' as const, value: h })),
      ),
    );
  }
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: name(o.subject),
    issuer: caCert.subject,
    notBefore: o.notBefore ?? new Date(Date.now() - 60_000),
    notAfter: o.notAfter,
    signingAlgorithm: SIGN,
    publicKey: keys.publicKey,
    signingKey: caKey,
    extensions,
  });
  return { certPem: cert.toString('pem') + '\n', keyPem: await exportKey(keys.privateKey) };
}

/** Subject fields of a PEM certificate (for tests and `flotilla` diagnostics). */
export function describeCert(pem: string): { subject: string; notBefore: Date; notAfter: Date } {
  const c = new x509.X509Certificate(pem);
  return { subject: c.subject, notBefore: c.notBefore, notAfter: c.notAfter };
}
