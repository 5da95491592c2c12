/**
 * CKKS encryption as a transform of the tensor stream, and the server's weighted sum of
 * encrypted results (he-context.ts has the keys and the parameters).
 *
 * A float tensor travels as U8 bytes: its values cut into slot-sized chunks (4096), each chunk one
 * ciphertext of a fixed size, so the header is known before anything is encrypted and neither side
 * holds more than one chunk of a tensor. What was encrypted (names, original dtype and shape), with
 * which context (fingerprint), and by what total weight the values are to be divided, travels in
 * the stream's metadata (`flotilla.he`). Integer and bool tensors pass unchanged.
 */
import { z } from 'zod';
import { isFloatDType } from '../core/dtypes.ts';
import type { TensorInfo } from '../core/safetensors-header.ts';
import { type TensorDict, numel } from '../core/tensor.ts';
import type { StreamHeader, TensorPiece, TensorStream } from '../core/tensor-stream.ts';
import { describeZodError } from '../util/zod-error.ts';
import { fromFloat32, toFloat32 } from './codecs.ts';
import { HE_FRESH_PRIMES, HE_SLOTS, type Ciphertext, type HeContext, HeError, ciphertextBytes } from './he-context.ts';

export const HE_KEY = 'flotilla.he';

const HeMetaSchema = z.strictObject({
  v: z.literal(1),
  fingerprint: z.string(),
  /** bytes of each ciphertext */
  ct: z.number().int().positive(),
  /** the values are a sum to divide by this (1: a site's own) */
  weight: z.number().positive(),
  tensors: z.record(z.string(), z.strictObject({ d: z.enum(['F64', 'F32', 'F16', 'BF16']), s: z.array(z.number().int().min(0)) })),
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

/** Checks an encrypted stream's header against its description and the receiver's context. */
function checkHeader(header: StreamHeader, meta: HeMeta, ctx: HeContext): void {
  if (meta.fingerprint !== ctx.fingerprint)
    throw new HeError(
      `encrypted with another HE context (fingerprint ${meta.fingerprint.slice(0, 12)}…, this kit's ${ctx.fingerprint.slice(0, 12)}…): the kits come from different provisioning runs`,
    );
  for (const [name, e] of Object.entries(meta.tensors)) {
    const t = header.tensors.find((x) => x.name === name);
    if (!t) throw new HeError(`${HE_KEY} names tensor "${name}" that the stream lacks`);
    const want = chunksOf(numel(e.s)) * meta.ct;
    if (t.dtype !== 'U8' || t.shape.length !== 1 || t.shape[0] !== want)
      throw new HeError(
        `tensor "${name}": ${t.dtype}[${t.shape.join(', ')}] is not ${chunksOf(numel(e.s))} ciphertexts of ${meta.ct} bytes`,
      );
  }
}

/** The float tensors of a stream encrypted, chunk by chunk (a site's result leaving it). */
export function encryptStream(input: TensorStream, ctx: HeContext): TensorStream {
  const ct = ciphertextBytes(HE_FRESH_PRIMES);
  const meta: HeMeta = { v: 1, fingerprint: ctx.fingerprint, ct, weight: 1, tensors: {} };
  const tensors: TensorInfo[] = input.header.tensors.map((t) => {
    if (!isFloatDType(t.dtype) || numel(t.shape) === 0) return t;
    meta.tensors[t.name] = { d: t.dtype as HeMeta['tensors'][string]['d'], s: [...t.shape] };
    return { name: t.name, dtype: 'U8', shape: [chunksOf(numel(t.shape)) * ct] };
  });
  const header: StreamHeader = { tensors, metadata: { ...input.header.metadata, [HE_KEY]: JSON.stringify(meta) } };
  return {
    header,
    async *pieces(): AsyncGenerator<TensorPiece> {
      const buf = new Float64Array(HE_SLOTS);
      let fill = 0;
      let chunk = 0;
      let current = -1;
      const emit = (index: number): TensorPiece => {
        const bytes = ctx.encrypt(fill === HE_SLOTS ? buf : buf.subarray(0, fill));
        if (bytes.byteLength !== ct) throw new HeError(`a ciphertext of ${bytes.byteLength} bytes, ${ct} expected`);
        const t = tensors[index]!;
        const piece = { index, name: t.name, dtype: 'U8' as const, shape: t.shape, offset: chunk * ct, bytes, tensorBytes: t.shape[0]! };
        chunk++;
        fill = 0;
        return piece;
      };
      for await (const p of input.pieces()) {
        if (!meta.tensors[p.name]) {
          yield p;
          continue;
        }
        if (p.index !== current) {
          current = p.index;
          chunk = 0;
          fill = 0;
        }
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
          if (fill === HE_SLOTS) yield emit(p.index);
        }
        const n = numel(p.shape);
        if (fill > 0 && chunk * HE_SLOTS + fill === n) yield emit(p.index);
      }
    },
  };
}

/** An encrypted stream decrypted (a task entering a site): values ÷ the total weight, in their dtype. Plain streams pass. */
export function decryptStream(input: TensorStream, ctx: HeContext): TensorStream {
  const meta = readHeMeta(input.header.metadata);
  if (!meta) return input;
  checkHeader(input.header, meta, ctx);
  const { [HE_KEY]: _, ...metadata } = input.header.metadata;
  const tensors: TensorInfo[] = input.header.tensors.map((t) => {
    const e = meta.tensors[t.name];
    return e ? { name: t.name, dtype: e.d, shape: e.s } : t;
  });
  return {
    header: { tensors, metadata },
    async *pieces(): AsyncGenerator<TensorPiece> {
      const buf = new Uint8Array(meta.ct);
      let fill = 0;
      let chunk = 0;
      let current = -1;
      for await (const p of input.pieces()) {
        const e = meta.tensors[p.name];
        if (!e) {
          yield p;
          continue;
        }
        if (p.index !== current) {
          current = p.index;
          chunk = 0;
          fill = 0;
        }
        const n = numel(e.s);
        const t = tensors[p.index]!;
        for (let i = 0; i < p.bytes.byteLength;) {
          const take = Math.min(meta.ct - fill, p.bytes.byteLength - i);
          buf.set(p.bytes.subarray(i, i + take), fill);
          fill += take;
          i += take;
          if (fill < meta.ct) continue;
          const values = ctx.decrypt(buf, `tensor "${p.name}" chunk ${chunk}`);
          const count = Math.min(HE_SLOTS, n - chunk * HE_SLOTS);
          const out = new Float32Array(count);
          for (let j = 0; j < count; j++) out[j] = values[j]! / meta.weight;
          const bytes = fromFloat32(e.d, out);
          yield {
            index: p.index,
            name: t.name,
            dtype: e.d,
            shape: e.s,
            offset: chunk * HE_SLOTS * (bytes.byteLength / count),
            bytes,
            tensorBytes: n * (bytes.byteLength / count),
          };
          chunk++;
          fill = 0;
        }
      }
    },
  };
}

/**
 * The server's FedAvg over encrypted results: Σ wᵢ·ctᵢ per chunk, then · 1/Σwᵢ, all on
 * ciphertexts (the server's context has no secret key). Memory: one ciphertext per chunk of the
 * model (the running sum) and one chunk of a result at a time.
 */
export class HeWeightedSum {
  private acc = new Map<string, (Ciphertext | null)[]>();
  private tensors: HeMeta['tensors'] | null = null;
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
    checkHeader(stream.header, meta, this.ctx);
    if (meta.weight !== 1) throw new HeError('he: the result is an aggregate, not a site update');
    const plain = stream.header.tensors.filter((t) => !meta.tensors[t.name]);
    if (plain.length)
      throw new HeError(`he: tensor "${plain[0]!.name}" (${plain[0]!.dtype}) is not encrypted; the he aggregator takes float tensors only`);
    if (this.tensors && JSON.stringify(this.tensors) !== JSON.stringify(meta.tensors))
      throw new HeError("he: the result's tensors (names, dtypes, shapes) differ from the other results'");
    // folded into a scratch sum first: a result that breaks off part way counts for nothing
    const mine = new Map<string, Ciphertext[]>();
    const buf = new Uint8Array(meta.ct);
    let fill = 0;
    try {
      for await (const p of stream.pieces()) {
        let list = mine.get(p.name);
        if (!list) mine.set(p.name, (list = []));
        for (let i = 0; i < p.bytes.byteLength;) {
          const take = Math.min(meta.ct - fill, p.bytes.byteLength - i);
          buf.set(p.bytes.subarray(i, i + take), fill);
          fill += take;
          i += take;
          if (fill < meta.ct) continue;
          const ct = this.ctx.load(buf, `tensor "${p.name}" chunk ${list.length}`);
          list.push(ct);
          if (weight > 0) this.ctx.multiplyInPlace(ct, weight);
          fill = 0;
        }
      }
      for (const [name, e] of Object.entries(meta.tensors))
        if ((mine.get(name)?.length ?? 0) !== chunksOf(numel(e.s))) throw new HeError(`he: tensor "${name}" ended early`);
      if (this.done) throw new HeError('result() was taken while this result arrived');
    } catch (e) {
      for (const l of mine.values()) for (const c of l) c.delete();
      throw e;
    }
    this.tensors ??= meta.tensors;
    for (const [name, list] of mine) {
      const acc = this.acc.get(name) ?? [];
      list.forEach((ct, k) => {
        if (weight === 0) return ct.delete();
        const a = acc[k];
        if (!a) acc[k] = ct;
        else {
          this.ctx.addInPlace(a, ct);
          ct.delete();
        }
      });
      this.acc.set(name, acc);
    }
    this.contributions++;
    this.total += weight;
  }

  /** The encrypted weighted mean: U8 tensors and the stream metadata that describes them; null when no weight arrived. */
  result(): { model: TensorDict; metadata: Record<string, string> } | null {
    if (this.done) throw new HeError('result() was already taken');
    this.done = true;
    if (!this.tensors || !(this.total > 0)) return null;
    const model: TensorDict = new Map();
    let ct = 0;
    for (const [name, e] of Object.entries(this.tensors)) {
      const list = this.acc.get(name)!;
      const parts = list.map((c) => {
        this.ctx.multiplyInPlace(c!, 1 / this.total);
        const bytes = this.ctx.save(c!);
        c!.delete();
        return bytes;
      });
      ct = parts[0]?.byteLength ?? ct;
      const data = new Uint8Array(parts.reduce((n, b) => n + b.byteLength, 0));
      let o = 0;
      for (const b of parts) {
        data.set(b, o);
        o += b.byteLength;
      }
      if (data.byteLength !== chunksOf(numel(e.s)) * ct) throw new HeError(`tensor "${name}": ciphertexts of unequal sizes`);
      model.set(name, { dtype: 'U8', shape: [data.byteLength], data });
    }
    this.acc.clear();
    const meta: HeMeta = { v: 1, fingerprint: this.ctx.fingerprint, ct, weight: 1, tensors: this.tensors };
    return { model, metadata: { [HE_KEY]: JSON.stringify(meta) } };
  }
}
