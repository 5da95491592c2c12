/**
 * CKKS encryption as a transform of the tensor stream, and the server's weighted sum of
 * encrypted results (he-context.ts has the keys and the parameters).
 *
 * The float tensors' values are packed one after another into the slots of consecutive
 * ciphertexts (4,096 values each, a fixed size), so small tensors (LoRA adapters) share
 * ciphertexts, and the encrypted stream is one U8 tensor of ciphertexts (HE_TENSOR) whose header
 * is known before anything is encrypted; neither side holds more than one ciphertext's worth.
 * What was packed (names, dtypes, shapes, in order), with which context (fingerprint), and by what
 * total weight the values are to be divided travels in the stream's metadata (`flotilla.he`).
 * An he job's results are float tensors only: the server has no plain sum for the others.
 */
import { z } from 'zod';
import { dtypeSize, isFloatDType } from '../core/dtypes.ts';
import type { TensorInfo } from '../core/safetensors-header.ts';
import { type TensorDict, numel } from '../core/tensor.ts';
import type { StreamHeader, TensorPiece, TensorStream } from '../core/tensor-stream.ts';
import { describeZodError } from '../util/zod-error.ts';
import { fromFloat32, toFloat32 } from './codecs.ts';
import { HE_FRESH_PRIMES, HE_SLOTS, type Ciphertext, type HeContext, HeError, ciphertextBytes } from './he-context.ts';

export const HE_KEY = 'flotilla.he';
/** the one tensor of an encrypted stream: its ciphertexts, back to back */
export const HE_TENSOR = 'flotilla.he.ciphertexts';

const HeMetaSchema = z.strictObject({
  v: z.literal(1),
  fingerprint: z.string(),
  /** bytes of each ciphertext */
  ct: z.number().int().positive(),
  /** the values are a sum to divide by this (1: a site's own, or the server's mean) */
  weight: z.number().positive(),
  /** the packed tensors, in order */
  tensors: z
    .array(z.strictObject({ n: z.string().min(1), d: z.enum(['F64', 'F32', 'F16', 'BF16']), s: z.array(z.number().int().min(0)).max(64) }))
    .min(1),
});
export type HeMeta = z.infer<typeof HeMetaSchema>;

/** The stream's HE description, or null for a stream that was not encrypted. */
export function readHeMeta(metadata: Readonly<Record<string, string>>): HeMeta | null {
  const raw = metadata[HE_KEY];
  if (raw === undefined) return null;
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    throw new HeError(`${HE_KEY} metadata is not JSON`);
  }
  const r = HeMetaSchema.safeParse(json);
  if (!r.success) throw new HeError(`${HE_KEY} metadata: ${describeZodError(r.error)}`);
  return r.data;
}

export function chunksOf(n: number): number {
  return Math.ceil(n / HE_SLOTS);
}

const totalValues = (meta: HeMeta): number => meta.tensors.reduce((n, t) => n + numel(t.s), 0);

/** Checks an encrypted stream's header against its description and the receiver's context; the number of ciphertexts. */
function checkHeader(header: StreamHeader, meta: HeMeta, ctx: HeContext): number {
  if (meta.fingerprint !== ctx.fingerprint)
    throw new HeError(
      `encrypted with another HE context (fingerprint ${meta.fingerprint.slice(0, 12)}…, this kit's ${ctx.fingerprint.slice(0, 12)}…): the kits come from different provisioning runs`,
    );
  const count = chunksOf(totalValues(meta));
  const t = header.tensors;
  if (t.length !== 1 || t[0]!.name !== HE_TENSOR || t[0]!.dtype !== 'U8' || t[0]!.shape.length !== 1 || t[0]!.shape[0] !== count * meta.ct)
    throw new HeError(
      `an encrypted stream is one U8 tensor "${HE_TENSOR}" of ${count} ciphertexts of ${meta.ct} bytes; this one has ${t.map((x) => `${x.name} ${x.dtype}[${x.shape.join(', ')}]`).join(', ')}`,
    );
  return count;
}

/** Calls `each` with every whole ciphertext of a U8 stream of `ct`-byte ciphertexts (one buffer, reused). */
async function forEachCiphertext(stream: TensorStream, ct: number, each: (bytes: Uint8Array, k: number) => Promise<void> | void) {
  const buf = new Uint8Array(ct);
  let fill = 0;
  let k = 0;
  for await (const p of stream.pieces()) {
    for (let i = 0; i < p.bytes.byteLength;) {
      const take = Math.min(ct - fill, p.bytes.byteLength - i);
      buf.set(p.bytes.subarray(i, i + take), fill);
      fill += take;
      i += take;
      if (fill < ct) continue;
      await each(buf, k++);
      fill = 0;
    }
  }
  return k;
}

/** A site's result encrypted (its result leaving it): every float tensor packed into ciphertexts. */
export function encryptStream(input: TensorStream, ctx: HeContext): TensorStream {
  const ct = ciphertextBytes(HE_FRESH_PRIMES);
  const other = input.header.tensors.find((t) => !isFloatDType(t.dtype));
  if (other)
    throw new HeError(`tensor "${other.name}" is ${other.dtype}: an he job's results are float tensors only (the server sums ciphertexts)`);
  const meta: HeMeta = {
    v: 1,
    fingerprint: ctx.fingerprint,
    ct,
    weight: 1,
    tensors: input.header.tensors.map((t) => ({ n: t.name, d: t.dtype as HeMeta['tensors'][number]['d'], s: [...t.shape] })),
  };
  if (meta.tensors.length === 0) throw new HeError('nothing to encrypt: the result has no tensors');
  const count = chunksOf(totalValues(meta));
  const tensors: TensorInfo[] = [{ name: HE_TENSOR, dtype: 'U8', shape: [count * ct] }];
  const header: StreamHeader = { tensors, metadata: { ...input.header.metadata, [HE_KEY]: JSON.stringify(meta) } };
  return {
    header,
    async *pieces(): AsyncGenerator<TensorPiece> {
      const buf = new Float64Array(HE_SLOTS);
      let fill = 0;
      let k = 0;
      const emit = (): TensorPiece => {
        const bytes = ctx.encrypt(fill === HE_SLOTS ? buf : buf.subarray(0, fill));
        if (bytes.byteLength !== ct) throw new HeError(`a ciphertext of ${bytes.byteLength} bytes, ${ct} expected`);
        const piece = {
          index: 0,
          name: HE_TENSOR,
          dtype: 'U8' as const,
          shape: tensors[0]!.shape,
          offset: k * ct,
          bytes,
          tensorBytes: count * ct,
        };
        k++;
        fill = 0;
        return piece;
      };
      for await (const p of input.pieces()) {
        const values = toFloat32(p.dtype, p.bytes);
        for (let i = 0; i < values.length;) {
          const take = Math.min(HE_SLOTS - fill, values.length - i);
          for (let j = 0; j < take; j++) {
            const v = values[i + j]!;
            if (!Number.isFinite(v)) throw new HeError(`tensor "${p.name}" has a non-finite value`);
            buf[fill + j] = v;
          }
          fill += take;
          i += take;
          if (fill === HE_SLOTS) yield emit();
        }
      }
      if (fill > 0) yield emit();
      if (k !== count) throw new HeError(`the result ended after ${k} of ${count} ciphertexts' worth of values`);
    },
  };
}

/** An encrypted stream decrypted (a task entering a site): values ÷ the total weight, in their dtypes. Plain streams pass. */
export function decryptStream(input: TensorStream, ctx: HeContext): TensorStream {
  const meta = readHeMeta(input.header.metadata);
  if (!meta) return input;
  const count = checkHeader(input.header, meta, ctx);
  const { [HE_KEY]: _, ...metadata } = input.header.metadata;
  const tensors: TensorInfo[] = meta.tensors.map((t) => ({ name: t.n, dtype: t.d, shape: t.s }));
  return {
    header: { tensors, metadata },
    async *pieces(): AsyncGenerator<TensorPiece> {
      // where the next value goes: tensor `ti`, element `at`
      let ti = 0;
      let at = 0;
      const out: TensorPiece[] = [];
      const unpack = (values: Float64Array): void => {
        let v = 0;
        while (v < HE_SLOTS && ti < tensors.length) {
          const t = tensors[ti]!;
          const n = numel(t.shape);
          const take = Math.min(n - at, HE_SLOTS - v);
          const f = new Float32Array(take);
          for (let j = 0; j < take; j++) f[j] = values[v + j]! / meta.weight;
          const size = dtypeSize(t.dtype);
          if (take > 0)
            out.push({
              index: ti,
              name: t.name,
              dtype: t.dtype,
              shape: t.shape,
              offset: at * size,
              bytes: fromFloat32(t.dtype, f),
              tensorBytes: n * size,
            });
          v += take;
          at += take;
          if (at === n) {
            ti++;
            at = 0;
          }
        }
      };
      const buf = new Uint8Array(meta.ct);
      let fill = 0;
      let k = 0;
      for await (const p of input.pieces()) {
        for (let i = 0; i < p.bytes.byteLength;) {
          const take = Math.min(meta.ct - fill, p.bytes.byteLength - i);
          buf.set(p.bytes.subarray(i, i + take), fill);
          fill += take;
          i += take;
          if (fill < meta.ct) continue;
          unpack(ctx.decrypt(buf, `ciphertext ${k}`));
          k++;
          fill = 0;
          yield* out.splice(0);
        }
      }
      if (k !== count) throw new HeError(`the encrypted stream ended after ${k} of ${count} ciphertexts`);
    },
  };
}

/**
 * The server's FedAvg over encrypted results: Σ wᵢ·ctᵢ per ciphertext, then · 1/Σwᵢ, all on
 * ciphertexts (the server's context has no secret key). Memory: the running sum (one ciphertext
 * per 4,096 values of the model) and each result's weighted ciphertexts until it has ended.
 */
export class HeWeightedSum {
  private acc: Ciphertext[] = [];
  private layout: string | null = null;
  private tensors: HeMeta['tensors'] = [];
  private total = 0;
  private contributions = 0;
  private done = false;

  constructor(private readonly ctx: HeContext) {}

  get count(): number {
    return this.contributions;
  }

  async add(stream: TensorStream, weight: number, paramsType: string): Promise<void> {
    if (this.done) throw new HeError('add() after result()');
    if (paramsType !== 'FULL') throw new HeError(`he: the server sums encrypted FULL models; this result is a ${paramsType}`);
    if (!(weight >= 0) || !Number.isFinite(weight)) throw new HeError(`weight must be a finite number ≥ 0, got ${weight}`);
    const meta = readHeMeta(stream.header.metadata);
    if (!meta) throw new HeError('he: the result is not encrypted (every site of the job must run the he filter)');
    const count = checkHeader(stream.header, meta, this.ctx);
    if (meta.weight !== 1) throw new HeError('he: the result is an aggregate, not a site update');
    const layout = JSON.stringify(meta.tensors);
    if (this.layout !== null && layout !== this.layout)
      throw new HeError("he: the result's tensors (names, dtypes, shapes) differ from the other results'");
    // weighed into a list of its own first: a result that breaks off part way counts for nothing
    const mine: Ciphertext[] = [];
    try {
      const got = await forEachCiphertext(stream, meta.ct, (bytes, k) => {
        const c = this.ctx.load(bytes, `ciphertext ${k}`);
        mine.push(c);
        if (weight > 0) this.ctx.multiplyInPlace(c, weight);
      });
      if (got !== count) throw new HeError(`he: the result ended after ${got} of ${count} ciphertexts`);
      if (this.done) throw new HeError('result() was taken while this result arrived');
    } catch (e) {
      for (const c of mine) c.delete();
      throw e;
    }
    this.layout = layout;
    this.tensors = meta.tensors;
    mine.forEach((c, k) => {
      const a = this.acc[k];
      if (weight === 0) c.delete();
      else if (!a) this.acc[k] = c;
      else {
        this.ctx.addInPlace(a, c);
        c.delete();
      }
    });
    this.contributions++;
    this.total += weight;
  }

  /** The encrypted weighted mean: the ciphertexts tensor and the metadata that describes it; null when no weight arrived. */
  result(): { model: TensorDict; metadata: Record<string, string> } | null {
    if (this.done) throw new HeError('result() was already taken');
    this.done = true;
    if (this.layout === null || !(this.total > 0)) return null;
    const parts = this.acc.map((c) => {
      this.ctx.multiplyInPlace(c, 1 / this.total);
      const bytes = this.ctx.save(c);
      c.delete();
      return bytes;
    });
    this.acc = [];
    const ct = parts[0]!.byteLength;
    const data = new Uint8Array(parts.length * ct);
    parts.forEach((b, k) => {
      if (b.byteLength !== ct) throw new HeError('ciphertexts of unequal sizes');
      data.set(b, k * ct);
    });
    const meta: HeMeta = { v: 1, fingerprint: this.ctx.fingerprint, ct, weight: 1, tensors: this.tensors };
    return { model: new Map([[HE_TENSOR, { dtype: 'U8', shape: [data.byteLength], data }]]), metadata: { [HE_KEY]: JSON.stringify(meta) } };
  }
}
