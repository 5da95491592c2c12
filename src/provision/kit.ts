/**
 * Startup kits: the folder a participant receives. Layout:
 *   <participant>/startup/rootCA.pem, <name>.crt, <name>.key,
 *                         fed_server.json | fed_client.json | fed_admin.json,
 *                         start.sh, signature.json
 * signature.json holds an ECDSA signature, made with the project CA's key,
 * over every other file of startup/. loadKit() refuses a kit in which any file
 * was changed, added or removed, naming the file, and a kit whose certificate
 * is outside its validity period or was not issued by the kit's rootCA.pem
 * (so the problem shows at start, not as an anonymous TLS handshake failure).
 */
import { X509Certificate, createPrivateKey, sign, verify } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { z } from 'zod';
import { describeCert } from './ca.ts';
import { ADMIN_ROLES } from './project.ts';
import { describeZodError } from '../util/zod-error.ts';
import { PrivacyPolicySchema } from '../filters/policy.ts';

export const SIGNATURE_FILE = 'signature.json';

const Endpoint = z.strictObject({ host: z.string().min(1), port: z.number().int().min(1).max(65535) });

export const ServerConfigSchema = z.strictObject({
  kind: z.literal('server'),
  project: z.string(),
  name: z.string(),
  org: z.string(),
  /** address the server listens on */
  listen: Endpoint,
  /** port of the data plane (jobs' payloads over mutual TLS, src/transport/tls), on listen.host; null: over gRPC */
  dataPort: z.number().int().min(1).max(65535).nullable().default(null),
  /** seconds without a heartbeat before a site counts as gone */
  heartbeatTimeoutSeconds: z
    .number()
    .positive()
    .max(86_400, 'must be at most 86400 seconds (a day): a longer silence is not a heartbeat')
    .default(30),
  /** largest job folder accepted from an admin */
  maxJobBytes: z
    .number()
    .int()
    .positive()
    .default(64 << 20),
});
export const ClientConfigSchema = z.strictObject({
  kind: z.literal('client'),
  project: z.string(),
  name: z.string(),
  org: z.string(),
  server: Endpoint,
  /** the name in the server certificate (its CN is not used by TLS; the SAN is) */
  serverName: z.string(),
  heartbeatSeconds: z.number().positive().max(3600, 'must be at most 3600 seconds').default(5),
  /** this site's Python interpreter: what `{python}` in a job's script executor runs (FLOTILLA_PYTHON overrides it) */
  python: z.string().min(1).optional(),
  /** this site's privacy policy: filters applied to every result it sends, whatever the job says (docs/filters.md) */
  privacy: PrivacyPolicySchema.optional(),
  /** largest job folder this site accepts from the server (provision writes the server's maxJobBytes) */
  maxJobBytes: z.number().int().positive().optional(),
});
export const AdminConfigSchema = z.strictObject({
  kind: z.literal('admin'),
  project: z.string(),
  name: z.string(),
  org: z.string(),
  role: z.enum(ADMIN_ROLES),
  server: Endpoint,
  serverName: z.string(),
});
export type ServerConfig = z.infer<typeof ServerConfigSchema>;
export type ClientConfig = z.infer<typeof ClientConfigSchema>;
export type AdminConfig = z.infer<typeof AdminConfigSchema>;
type KitConfig = ServerConfig | ClientConfig | AdminConfig;

export const CONFIG_FILES = { server: 'fed_server.json', client: 'fed_client.json', admin: 'fed_admin.json' } as const;

const SignatureSchema = z.strictObject({
  algorithm: z.literal('ecdsa-p256-sha256'),
  files: z.record(z.string(), z.string()),
});

export class KitError extends Error {
  override readonly name = 'KitError';
}

function canonical(name: string, bytes: Buffer): Buffer {
  // bind the file name into what is signed, so files cannot be swapped
  return Buffer.concat([Buffer.from(`flotilla-kit-file\0${name}\0`), bytes]);
}

/** Signs every file of a startup folder with the CA key and writes signature.json. */
export function signKit(startupDir: string, caKeyPem: string): void {
  const key = createPrivateKey(caKeyPem);
  const files: Record<string, string> = {};
  for (const f of readdirSync(startupDir).sort()) {
    if (f === SIGNATURE_FILE) continue;
    files[f] = sign('sha256', canonical(f, readFileSync(join(startupDir, f))), key).toString('base64');
  }
  const body = { algorithm: 'ecdsa-p256-sha256', files };
  writeFileSync(join(startupDir, SIGNATURE_FILE), `${JSON.stringify(body, null, 2)}\n`);
}

/** Checks signature.json against the kit's rootCA.pem. Throws a KitError naming the offending file. */
export function verifyKit(startupDir: string): void {
  const sigPath = join(startupDir, SIGNATURE_FILE);
  if (!existsSync(sigPath)) throw new KitError(`startup kit ${startupDir} is not signed: ${SIGNATURE_FILE} is missing`);
  let sig: z.infer<typeof SignatureSchema>;
  try {
    sig = SignatureSchema.parse(JSON.parse(readFileSync(sigPath, 'utf8')));
  } catch (e) {
    throw new KitError(`${sigPath}: unreadable signature file: ${(e as Error).message.split('\n')[0]}`);
  }
  const caPath = join(startupDir, 'rootCA.pem');
  if (!existsSync(caPath)) throw new KitError(`startup kit ${startupDir} is missing rootCA.pem`);
  const caKey = new X509Certificate(readFileSync(caPath)).publicKey;
  const present = readdirSync(startupDir).filter((f) => f !== SIGNATURE_FILE && statSync(join(startupDir, f)).isFile());
  for (const f of present) {
    const s = sig.files[f];
    if (s === undefined) throw new KitError(`startup kit ${startupDir} was tampered with: ${f} is not part of the signed kit`);
    if (!verify('sha256', canonical(f, readFileSync(join(startupDir, f))), caKey, Buffer.from(s, 'base64'))) {
      throw new KitError(`startup kit ${startupDir} was tampered with: ${f} does not match its signature`);
    }
  }
  for (const f of Object.keys(sig.files)) {
    if (!present.includes(f)) throw new KitError(`startup kit ${startupDir} was tampered with: signed file ${f} is missing`);
  }
}

/** Whose kit it is, for the "what to do next" part of a message. */
const OWNER = { server: "the server's", client: "this site's", admin: "this admin's" } as const;

function isoSeconds(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * Checks that the participant certificate `certFile` is valid at `now` and was
 * issued (subject/issuer match and signature) by the kit's root CA. The signature
 * is checked with node:crypto because it is synchronous, like the rest of
 * loadKit; the dates come from @peculiar/x509 (describeCert).
 */
export function checkKitCertificate(
  kind: keyof typeof CONFIG_FILES,
  certFile: string,
  certPem: string,
  caPem: string,
  now = new Date(),
): void {
  const redo = `re-provision ${OWNER[kind]} startup kit (flotilla provision project.yml)`;
  const validity = (file: string, pem: string, what: string): void => {
    let d: ReturnType<typeof describeCert>;
    try {
      d = describeCert(pem);
    } catch (e) {
      throw new KitError(`${file} is not a readable certificate (${(e as Error).message}): ${redo}`);
    }
    if (now < d.notBefore)
      throw new KitError(`${file} is not valid until ${isoSeconds(d.notBefore)}: check this machine's clock, or ${redo}`);
    if (now > d.notAfter) throw new KitError(`${file} expired on ${isoSeconds(d.notAfter)}: ${what}`);
  };
  validity(
    'rootCA.pem',
    caPem,
    `the project CA has expired; create a new CA (move <workspace>/<project>/state away) and re-provision every kit (flotilla provision project.yml)`,
  );
  validity(certFile, certPem, redo);
  const ca = new X509Certificate(caPem);
  const cert = new X509Certificate(certPem);
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    throw new KitError(
      `${certFile} was not issued by this kit's rootCA.pem (certificate issuer: ${cert.issuer.replaceAll('\n', ', ')}; kit CA: ${ca.subject.replaceAll('\n', ', ')}): the kit mixes files from different provisioning runs or projects; ${redo}`,
    );
  }
}

export interface Kit<C extends KitConfig = KitConfig> {
  /** the participant folder (parent of startup/) */
  root: string;
  startup: string;
  config: C;
  caPem: string;
  certPem: string;
  keyPem: string;
}

/** Accepts the participant folder or its startup/ folder. */
export function resolveStartup(dir: string): string {
  const d = resolve(dir);
  if (basename(d) === 'startup') return d;
  const s = join(d, 'startup');
  if (existsSync(s)) return s;
  throw new KitError(`${d} is not a startup kit: it has no startup/ folder`);
}

export function loadKit(dir: string, kind: 'server'): Kit<ServerConfig>;
export function loadKit(dir: string, kind: 'client'): Kit<ClientConfig>;
export function loadKit(dir: string, kind: 'admin'): Kit<AdminConfig>;
export function loadKit(dir: string, kind: keyof typeof CONFIG_FILES): Kit {
  const startup = resolveStartup(dir);
  verifyKit(startup);
  const file = join(startup, CONFIG_FILES[kind]);
  if (!existsSync(file)) throw new KitError(`${startup} is not a ${kind} kit: ${CONFIG_FILES[kind]} is missing`);
  const schema = kind === 'server' ? ServerConfigSchema : kind === 'client' ? ClientConfigSchema : AdminConfigSchema;
  let config: KitConfig;
  try {
    const r = schema.safeParse(JSON.parse(readFileSync(file, 'utf8')));
    if (!r.success) throw new Error(describeZodError(r.error));
    config = r.data;
  } catch (e) {
    throw new KitError(`${file}: ${(e as Error).message}`);
  }
  const read = (f: string): string => {
    const p = join(startup, f);
    if (!existsSync(p)) throw new KitError(`startup kit ${startup} is missing ${f}`);
    return readFileSync(p, 'utf8');
  };
  const kit = {
    root: resolve(startup, '..'),
    startup,
    config,
    caPem: read('rootCA.pem'),
    certPem: read(`${config.name}.crt`),
    keyPem: read(`${config.name}.key`),
  };
  checkKitCertificate(kind, `${config.name}.crt`, kit.certPem, kit.caPem);
  let key: ReturnType<typeof createPrivateKey>;
  try {
    key = createPrivateKey(kit.keyPem);
  } catch (e) {
    throw new KitError(
      `${config.name}.key is not a readable private key (${(e as Error).message}): re-provision ${OWNER[kind]} startup kit (flotilla provision project.yml)`,
    );
  }
  // a key that does not parse or does not belong to the certificate fails here, not in the TLS handshake
  if (!new X509Certificate(kit.certPem).checkPrivateKey(key))
    throw new KitError(
      `${config.name}.key does not belong to ${config.name}.crt: re-provision ${OWNER[kind]} startup kit (flotilla provision project.yml)`,
    );
  return kit;
}
