/**
 * Byte-level BPE tokenizer (GPT-2 style): text is split into pre-tokens by a
 * regex, each pre-token's UTF-8 bytes are merged by learned pair ranks.
 * Ids 0–255 are the bytes, 256… the merges in rank order, then special tokens.
 * Any string round-trips exactly, since every byte has an id.
 *
 * Training keeps pair counts and, per pair, the words that contain it, and
 * updates only the words touched by each merge (instead of recounting).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { z } from 'zod';

/** GPT-2's pre-tokenizer: contractions, words with their leading space, numbers, punctuation, whitespace. */
export const GPT2_PATTERN = String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`;
export const EOT = '<|endoftext|>';

const key = (a: number, b: number) => a * 65536 + b;

const TokenizerFileSchema = z.object({
  type: z.literal('byte-bpe'),
  pattern: z.string(),
  merges: z.array(z.tuple([z.number().int().nonnegative(), z.number().int().nonnegative()])),
  special: z.record(z.string(), z.number().int().nonnegative()),
});
export type TokenizerFile = z.infer<typeof TokenizerFileSchema>;

export class BpeTokenizer {
  private readonly ranks = new Map<number, number>();
  private readonly bytesOf: Uint8Array[] = [];
  private readonly re: RegExp;
  private readonly wordCache = new Map<string, number[]>();
  private readonly enc = new TextEncoder();
  private readonly dec = new TextDecoder('utf-8');
  readonly special: ReadonlyMap<string, number>;

  constructor(
    readonly merges: readonly (readonly [number, number])[],
    special: Record<string, number>,
    readonly pattern = GPT2_PATTERN,
  ) {
    this.re = new RegExp(pattern, 'gu');
    for (let i = 0; i < 256; i++) this.bytesOf.push(Uint8Array.of(i));
    merges.forEach(([a, b], r) => {
      const id = 256 + r;
      const ba = this.bytesOf[a];
      const bb = this.bytesOf[b];
      if (!ba || !bb) throw new Error(`tokenizer: merge ${r} refers to id ${!ba ? a : b}, not defined before id ${id}`);
      this.ranks.set(key(a, b), r);
      const m = new Uint8Array(ba.length + bb.length);
      m.set(ba);
      m.set(bb, ba.length);
      this.bytesOf.push(m);
    });
    const sp = new Map<string, number>();
    for (const [name, id] of Object.entries(special)) {
      if (id < this.bytesOf.length) throw new Error(`tokenizer: special token ${name} has id ${id}, which a byte or merge already uses`);
      sp.set(name, id);
    }
    this.special = sp;
  }

  get vocabSize(): number {
    return Math.max(this.bytesOf.length, ...[...this.special.values()].map((i) => i + 1));
  }

  /** Id of a special token; throws if the tokenizer has none by that name. */
  specialId(name: string): number {
    const id = this.special.get(name);
    if (id === undefined) throw new Error(`tokenizer has no special token ${name}`);
    return id;
  }

  /** Plain text → ids. Special-token strings in the text are encoded as ordinary bytes. */
  encode(text: string): number[] {
    const out: number[] = [];
    for (const m of text.matchAll(this.re)) {
      const w = m[0];
      let ids = this.wordCache.get(w);
      if (!ids) {
        ids = this.encodeWord(this.enc.encode(w));
        if (this.wordCache.size < 200_000) this.wordCache.set(w, ids);
      }
      for (const id of ids) out.push(id);
    }
    return out;
  }

  private encodeWord(bytes: Uint8Array): number[] {
    const ids = [...bytes];
    for (;;) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < ids.length; i++) {
        const r = this.ranks.get(key(ids[i]!, ids[i + 1]!));
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) return ids;
      const [a, b] = [ids[best]!, ids[best + 1]!];
      const merged: number[] = [];
      for (let i = 0; i < ids.length; i++) {
        if (i + 1 < ids.length && ids[i] === a && ids[i + 1] === b) {
          merged.push(256 + bestRank);
          i++;
        } else merged.push(ids[i]!);
      }
      ids.splice(0, ids.length, ...merged);
    }
  }

  decode(ids: readonly number[]): string {
    const parts: Uint8Array[] = [];
    let n = 0;
    const names = new Map([...this.special].map(([k, v]) => [v, k]));
    for (const id of ids) {
      const b = this.bytesOf[id] ?? (names.has(id) ? this.enc.encode(names.get(id)) : undefined);
      if (!b) throw new Error(`tokenizer: unknown id ${id}`);
      parts.push(b);
      n += b.length;
    }
    const all = new Uint8Array(n);
    let o = 0;
    for (const p of parts) {
      all.set(p, o);
      o += p.length;
    }
    return this.dec.decode(all);
  }

  toJSON(): TokenizerFile {
    return {
      type: 'byte-bpe',
      pattern: this.pattern,
      merges: this.merges.map(([a, b]) => [a, b]),
      special: Object.fromEntries(this.special),
    };
  }

  save(path: string): void {
    writeFileSync(path, JSON.stringify(this.toJSON()) + '\n');
  }

  static load(path: string): BpeTokenizer {
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(path, 'utf8'));
    } catch (e) {
      throw new Error(`${path}: ${(e as Error).message}`);
    }
    const r = TokenizerFileSchema.safeParse(json);
    if (!r.success) {
      const issue = r.error.issues[0];
      throw new Error(`${path}: field "${issue?.path.join('.') ?? '?'}": ${issue?.message ?? 'invalid'}`);
    }
    return new BpeTokenizer(r.data.merges, r.data.special, r.data.pattern);
  }

  /**
   * Learns merges until `vocabSize` ids exist (bytes + merges + specials).
   * Ties between equally frequent pairs go to the smaller (a, b), so training is deterministic.
   */
  static train(text: string, vocabSize: number, specials: readonly string[] = [EOT], pattern = GPT2_PATTERN): BpeTokenizer {
    const nMerges = vocabSize - 256 - specials.length;
    if (nMerges < 0) throw new Error(`vocabSize ${vocabSize} is smaller than 256 bytes + ${specials.length} specials`);
    const enc = new TextEncoder();
    const freq = new Map<string, number>();
    for (const m of text.matchAll(new RegExp(pattern, 'gu'))) freq.set(m[0], (freq.get(m[0]) ?? 0) + 1);
    const words: number[][] = [];
    const counts: number[] = [];
    for (const [w, c] of freq) {
      words.push([...enc.encode(w)]);
      counts.push(c);
    }
    const pairCount = new Map<number, number>();
    const where = new Map<number, Set<number>>();
    const addPairs = (wi: number, sign: 1 | -1) => {
      const ids = words[wi]!;
      const c = counts[wi]! * sign;
      for (let i = 0; i + 1 < ids.length; i++) {
        const k = key(ids[i]!, ids[i + 1]!);
        pairCount.set(k, (pairCount.get(k) ?? 0) + c);
        if (sign > 0) {
          let s = where.get(k);
          if (!s) where.set(k, (s = new Set()));
          s.add(wi);
        }
      }
    };
    for (let wi = 0; wi < words.length; wi++) addPairs(wi, 1);

    const merges: [number, number][] = [];
    for (let r = 0; r < nMerges; r++) {
      let bestK = -1;
      let bestC = 0;
      for (const [k, c] of pairCount) {
        if (c > bestC || (c === bestC && c > 0 && k < bestK)) {
          bestC = c;
          bestK = k;
        }
      }
      if (bestK < 0 || bestC < 2) break; // nothing left worth merging
      const a = Math.floor(bestK / 65536);
      const b = bestK % 65536;
      const id = 256 + r;
      merges.push([a, b]);
      // `where` is a superset (entries are never removed), so check each word.
      for (const wi of where.get(bestK) ?? []) {
        const ids = words[wi]!;
        let has = false;
        for (let i = 0; i + 1 < ids.length; i++)
          if (ids[i] === a && ids[i + 1] === b) {
            has = true;
            break;
          }
        if (!has) continue;
        addPairs(wi, -1);
        const merged: number[] = [];
        for (let i = 0; i < ids.length; i++) {
          if (i + 1 < ids.length && ids[i] === a && ids[i + 1] === b) {
            merged.push(id);
            i++;
          } else merged.push(ids[i]!);
        }
        words[wi] = merged;
        addPairs(wi, 1);
      }
      pairCount.delete(bestK);
      where.delete(bestK);
    }
    const special: Record<string, number> = {};
    specials.forEach((s, i) => {
      special[s] = 256 + merges.length + i;
    });
    return new BpeTokenizer(merges, special, pattern);
  }
}
