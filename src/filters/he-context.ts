/**
 * Homomorphic encryption (CKKS, Microsoft SEAL through node-seal's WebAssembly build) for
 * FedAvg: the sites encrypt their updates, the server adds the ciphertexts (each multiplied by
 * its plain weight) without being able to decrypt, the sites decrypt the aggregate.
 *
 * Keys come from provisioning (src/provision): every site's kit holds the whole context, secret
 * key included (`he_context.json`); the server's kit holds the parameters and the public key
 * only, so the server process never has what decrypts. The public key's SHA-256 is the context's
 * fingerprint: every encrypted stream names it, and a ciphertext of another context (same
 * parameters, other keys: SEAL itself would take it and decrypt garbage) is refused by name.
 *
 * Parameters (fixed, as NVFlare's TenSEAL default): polynomial degree 8192 (4096 slots per
 * ciphertext), coefficient moduli 60-40-40-60 bits (128-bit security), scale 2^40. One level
 * goes to the server's multiplication by the weight, one to its division by the total weight.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { describeZodError } from '../util/zod-error.ts';

export const HE_CONTEXT_FILE = 'he_context.json';

export const HE_POLY_DEGREE = 8192;
export const HE_COEFF_BITS = [60, 40, 40, 60] as const;
export const HE_SCALE = 2 ** 40;
/** values per ciphertext */
export const HE_SLOTS = HE_POLY_DEGREE / 2;

/** Serialized size (SEAL, no compression) of a ciphertext with `primes` coefficient moduli left: headers + 2 polynomials. */
export function ciphertextBytes(primes: number): number {
  return 113 + 2 * HE_POLY_DEGREE * primes * 8;
}
/** a fresh ciphertext (every modulus but the special one), and after one and two rescalings */
export const HE_FRESH_PRIMES = HE_COEFF_BITS.length - 1;

const B64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64');

/** A kit's he_context.json. */
export const HeKeyFileSchema = z.strictObject({
  scheme: z.literal('ckks'),
  polyModulusDegree: z.literal(HE_POLY_DEGREE),
  coeffModulusBits: z.tuple([z.literal(60), z.literal(40), z.literal(40), z.literal(60)]),
  scaleBits: z.literal(40),
  /** SEAL's EncryptionParameters */
  parameters: B64,
  publicKey: B64,
  /** sites only: the server's file has none */
  secretKey: B64.optional(),
  /** hex SHA-256 of the public key */
  fingerprint: z.string().regex(/^[0-9a-f]{64}$/),
});
export type HeKeyFile = z.infer<typeof HeKeyFileSchema>;

export class HeError extends Error {
  override readonly name = 'HeError';
}

/**
 * The part of node-seal 6's API used here. Its bundled declarations describe the browser build
 * (an ES default export) while Node loads the UMD build, so the factory is typed here.
 */
interface Deletable {
  delete(): void;
}
interface Savable extends Deletable {
  saveArray(compression: number): Uint8Array;
}
type ParmsId = object;
interface SealParameters extends Savable {
  setPolyModulusDegree(n: number): void;
  setCoeffModulus(v: unknown): void;
  loadArray(a: Uint8Array): void;
}
interface SealContext extends Deletable {
  parametersSet(): boolean;
}
interface SealKey extends Savable {
  loadArray(ctx: SealContext, a: Uint8Array): void;
}
export interface Ciphertext extends SealKey {
  readonly parmsId: ParmsId;
}
type Plaintext = Deletable;
interface SealLibrary {
  SchemeType: { ckks: unknown };
  SecurityLevel: { tc128: unknown };
  ComprModeType: { none: number; zlib: number; zstd: number };
  CoeffModulus: { Create(n: number, bits: Int32Array): unknown };
  EncryptionParameters(scheme: unknown): SealParameters;
  Context(parms: SealParameters, expand: boolean, level: unknown): SealContext;
  KeyGenerator(ctx: SealContext): Deletable & { secretKey(): SealKey; createPublicKey(): SealKey };
  PublicKey(): SealKey;
  SecretKey(): SealKey;
  CipherText(): Ciphertext;
  CKKSEncoder(ctx: SealContext): { encode(v: Float64Array, scale: number): Plaintext; decode(p: Plaintext): Float64Array };
  Evaluator(ctx: SealContext): {
    plainModSwitchTo(p: Plaintext, id: ParmsId, out: Plaintext): void;
    multiplyPlain(c: Ciphertext, p: Plaintext, out: Ciphertext): void;
    rescaleToNext(c: Ciphertext, out: Ciphertext): void;
    add(a: Ciphertext, b: Ciphertext, out: Ciphertext): void;
  };
  Encryptor(ctx: SealContext, pk: SealKey): { encrypt(p: Plaintext): Ciphertext };
  Decryptor(ctx: SealContext, sk: SealKey): { decrypt(c: Ciphertext): Plaintext };
}

/** What a deployment without node-seal is told (NVFlare's HE, likewise, needs `pip install tenseal`). */
export const NODE_SEAL_MISSING =
  'homomorphic encryption needs the node-seal package, an optional dependency of flotilla: npm install node-seal@6.0.3 beside flotilla (on the server, every site and where you provision)';

let library: Promise<SealLibrary> | null = null;
/**
 * The WebAssembly module, loaded once per process (nothing is fetched). node-seal (67 MB installed) is an
 * optional peer dependency, imported only by jobs and projects that use HE; without it they fail with
 * NODE_SEAL_MISSING.
 */
export function sealLibrary(): Promise<SealLibrary> {
  library ??= import('node-seal').then(
    (m: { default: unknown }) => (m.default as () => Promise<SealLibrary>)(),
    (e: Error) => {
      library = null;
      throw new HeError(`${NODE_SEAL_MISSING} (${e.message})`);
    },
  );
  return library;
}

function fingerprintOf(publicKey: Uint8Array): string {
  return createHash('sha256').update(publicKey).digest('hex');
}

const b64 = (a: Uint8Array): string => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
const unb64 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64'));

function newParameters(seal: SealLibrary): SealParameters {
  const parms = seal.EncryptionParameters(seal.SchemeType.ckks);
  parms.setPolyModulusDegree(HE_POLY_DEGREE);
  parms.setCoeffModulus(seal.CoeffModulus.Create(HE_POLY_DEGREE, Int32Array.from(HE_COEFF_BITS)));
  return parms;
}

/** A fresh key set: what every site's kit gets (with the secret key) and what the server's gets (without). */
export async function generateHeKeys(): Promise<{ site: HeKeyFile; server: HeKeyFile }> {
  const seal = await sealLibrary();
  const parms = newParameters(seal);
  const context = seal.Context(parms, true, seal.SecurityLevel.tc128);
  const keys = seal.KeyGenerator(context);
  const pk = keys.createPublicKey();
  const sk = keys.secretKey();
  const none = seal.ComprModeType.none;
  const publicKey = pk.saveArray(none);
  const server: HeKeyFile = {
    scheme: 'ckks',
    polyModulusDegree: HE_POLY_DEGREE,
    coeffModulusBits: [...HE_COEFF_BITS],
    scaleBits: 40,
    parameters: b64(parms.saveArray(none)),
    publicKey: b64(publicKey),
    fingerprint: fingerprintOf(publicKey),
  };
  const site: HeKeyFile = { ...server, secretKey: b64(sk.saveArray(none)) };
  for (const o of [pk, sk, keys, context, parms]) o.delete();
  return { site, server };
}

/** Reads and checks a kit's he_context.json. */
export function readHeKeyFile(path: string): HeKeyFile {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new HeError(`${path}: unreadable: ${(e as Error).message}`);
  }
  const r = HeKeyFileSchema.safeParse(json);
  if (!r.success) throw new HeError(`${path}: ${describeZodError(r.error)}`);
  return r.data;
}

type Sealed<K extends keyof SealLibrary> = SealLibrary[K] extends (...a: never[]) => infer R ? R : never;

/** SEAL's serialization header: magic 0xA15E, header size 16, no compression, total size = the bytes' length. */
function checkSealHeader(bytes: Uint8Array): string | null {
  if (bytes.byteLength < 16) return 'too short';
  const v = new DataView(bytes.buffer, bytes.byteOffset, 16);
  if (v.getUint16(0, true) !== 0xa15e) return 'not a SEAL object';
  if (v.getUint8(2) !== 16) return 'unknown SEAL header';
  if (v.getUint8(5) !== 0) return 'compressed';
  if (Number(v.getBigUint64(8, true)) !== bytes.byteLength) return 'its size field disagrees with its length';
  return null;
}

/**
 * One side's context: a site's encrypts and decrypts, the server's (no secret key) only loads,
 * weighs and adds ciphertexts. Its SEAL objects live as long as the process.
 */
export class HeContext {
  private constructor(
    private readonly seal: SealLibrary,
    private readonly context: Sealed<'Context'>,
    private readonly encoder: Sealed<'CKKSEncoder'>,
    private readonly evaluator: Sealed<'Evaluator'>,
    private readonly encryptor: Sealed<'Encryptor'>,
    private readonly decryptor: Sealed<'Decryptor'> | null,
    readonly fingerprint: string,
  ) {}

  static async load(file: HeKeyFile): Promise<HeContext> {
    const seal = await sealLibrary();
    const publicBytes = unb64(file.publicKey);
    if (fingerprintOf(publicBytes) !== file.fingerprint)
      throw new HeError("he_context.json: the fingerprint is not the public key's: the file was altered");
    const parms = seal.EncryptionParameters(seal.SchemeType.ckks);
    try {
      parms.loadArray(unb64(file.parameters));
    } catch (e) {
      throw new HeError(`he_context.json: parameters: ${(e as Error).message}`);
    }
    const context = seal.Context(parms, true, seal.SecurityLevel.tc128);
    if (!context.parametersSet()) throw new HeError('he_context.json: parameters are not a valid CKKS context');
    const pk = seal.PublicKey();
    pk.loadArray(context, publicBytes);
    let decryptor: Sealed<'Decryptor'> | null = null;
    if (file.secretKey !== undefined) {
      const sk = seal.SecretKey();
      sk.loadArray(context, unb64(file.secretKey));
      decryptor = seal.Decryptor(context, sk);
    }
    return new HeContext(
      seal,
      context,
      seal.CKKSEncoder(context),
      seal.Evaluator(context),
      seal.Encryptor(context, pk),
      decryptor,
      file.fingerprint,
    );
  }

  /** whether this context holds the secret key (a site's) */
  get canDecrypt(): boolean {
    return this.decryptor !== null;
  }

  /** Encrypts up to HE_SLOTS values (the rest of the slots are 0): a fresh ciphertext's bytes. */
  encrypt(values: Float64Array): Uint8Array {
    const pt = this.encoder.encode(values, HE_SCALE);
    const ct = this.encryptor.encrypt(pt);
    try {
      return ct.saveArray(this.seal.ComprModeType.none);
    } finally {
      ct.delete();
      pt.delete();
    }
  }

  /** A ciphertext from its bytes, checked first (a malformed SEAL object must never reach the WebAssembly loader). */
  load(bytes: Uint8Array, what: string): Ciphertext {
    const problem = checkSealHeader(bytes);
    if (problem) throw new HeError(`${what}: not a ciphertext (${problem})`);
    const ct = this.seal.CipherText();
    try {
      ct.loadArray(this.context, bytes);
    } catch (e) {
      ct.delete();
      throw new HeError(`${what}: not a ciphertext of this context (${(e as Error).message})`);
    }
    return ct;
  }

  /** ct · w (a plain scalar), rescaled: one level down. */
  multiplyInPlace(ct: Ciphertext, w: number): void {
    const pt = this.encoder.encode(new Float64Array(HE_SLOTS).fill(w), HE_SCALE);
    try {
      // the plain operand at the ciphertext's level (the sum is one level down from the sites' ciphertexts)
      this.evaluator.plainModSwitchTo(pt, ct.parmsId, pt);
      this.evaluator.multiplyPlain(ct, pt, ct);
      this.evaluator.rescaleToNext(ct, ct);
    } finally {
      pt.delete();
    }
  }

  addInPlace(acc: Ciphertext, ct: Ciphertext): void {
    this.evaluator.add(acc, ct, acc);
  }

  /** A ciphertext's bytes; on the wire always uncompressed (a compressed one's size varies: docs/filters.md), zlib and zstd for bench/he.ts. */
  save(ct: Ciphertext, compression: 'none' | 'zlib' | 'zstd' = 'none'): Uint8Array {
    return ct.saveArray(this.seal.ComprModeType[compression]);
  }

  /** The values of a ciphertext's bytes (a site's context only). */
  decrypt(bytes: Uint8Array, what: string): Float64Array {
    if (!this.decryptor) throw new HeError(`${what}: this context has no secret key (the server's cannot decrypt)`);
    const ct = this.load(bytes, what);
    try {
      const pt = this.decryptor.decrypt(ct);
      try {
        return this.encoder.decode(pt);
      } finally {
        pt.delete();
      }
    } finally {
      ct.delete();
    }
  }
}

/** A kit's context, loaded once per process and key set (making a CKKS context takes seconds). */
const loaded = new Map<string, Promise<HeContext>>();
export function heContextFromFile(path: string): Promise<HeContext> {
  let file: HeKeyFile;
  try {
    file = readHeKeyFile(path);
  } catch (e) {
    return Promise.reject(e);
  }
  const key = `${file.fingerprint}:${file.secretKey === undefined ? 'public' : 'secret'}`;
  let c = loaded.get(key);
  if (!c) {
    c = HeContext.load(file);
    loaded.set(key, c);
    c.catch(() => loaded.delete(key));
  }
  return c;
}
