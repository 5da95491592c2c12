/**
 * The pre-training text: tinyshakespeare and the TinyStories sample, one
 * document per story (Shakespeare is one document), each followed by
 * <|endoftext|>. The last 5% of each source is held out for validation.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { BpeTokenizer, EOT } from './bpe.ts';
import { dataDir } from './paths.ts';
import type { Rng } from './rng.ts';

export interface TextSource {
  name: string;
  docs: string[];
}

export function loadTextSources(dir = path.join(dataDir, 'text')): TextSource[] {
  const shakespeare = readFileSync(path.join(dir, 'tinyshakespeare.txt'), 'utf8');
  const stories = readFileSync(path.join(dir, 'tinystories_val_sample.txt'), 'utf8')
    .split(/\n\s*\n/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  return [
    { name: 'tinyshakespeare', docs: [shakespeare] },
    { name: 'tinystories', docs: stories },
  ];
}

/** All text joined, as the tokenizer is trained on it. */
export function tokenizerTrainingText(sources: readonly TextSource[]): string {
  return sources.flatMap((s) => s.docs).join('\n\n');
}

export interface TokenSplit {
  train: Int32Array;
  val: Int32Array;
}

/** Tokenizes every source and cuts the last `valFraction` of each one's tokens off for validation. */
export function tokenizeCorpus(tok: BpeTokenizer, sources: readonly TextSource[], valFraction = 0.05): TokenSplit {
  const eot = tok.specialId(EOT);
  const train: number[] = [];
  const val: number[] = [];
  for (const s of sources) {
    const ids: number[] = [];
    for (const d of s.docs) {
      for (const id of tok.encode(d)) ids.push(id);
      ids.push(eot);
    }
    const cut = Math.floor(ids.length * (1 - valFraction));
    for (let i = 0; i < ids.length; i++) (i < cut ? train : val).push(ids[i]!);
  }
  return { train: Int32Array.from(train), val: Int32Array.from(val) };
}

/** A batch of random windows: inputs [b, t] and next-token targets [b, t], flattened row-major. */
export function randomWindows(tokens: Int32Array, batch: number, ctx: number, rng: Rng): { x: Int32Array; y: Int32Array } {
  const x = new Int32Array(batch * ctx);
  const y = new Int32Array(batch * ctx);
  for (let b = 0; b < batch; b++) {
    const start = rng.int(tokens.length - ctx - 1);
    x.set(tokens.subarray(start, start + ctx), b * ctx);
    y.set(tokens.subarray(start + 1, start + ctx + 1), b * ctx);
  }
  return { x, y };
}
