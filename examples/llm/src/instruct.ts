/**
 * Instruction data: one real source per client (as NVFlare's example used
 * Alpaca, Dolly and OpenAssistant), an Alpaca-style prompt template, a seeded
 * per-client train/validation split, and batches whose loss covers only the
 * response tokens.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { type BpeTokenizer, EOT } from './bpe.ts';
import { dataDir } from './paths.ts';
import { Rng } from './rng.ts';

export interface InstructRecord {
  instruction: string;
  input: string;
  output: string;
}

/** Unknown keys (e.g. toolformer's `example_input`) are ignored. */
const RecordSchema = z.object({ instruction: z.string(), input: z.string().default(''), output: z.string() });

export const CLIENT_SOURCES = [
  { name: 'alpaca', file: 'alpaca_data_1k.json' },
  { name: 'roleplay', file: 'gpteacher_roleplay.json' },
  { name: 'toolformer', file: 'gpteacher_toolformer.json' },
] as const;
export type ClientName = (typeof CLIENT_SOURCES)[number]['name'];

export function loadInstructFile(file: string): InstructRecord[] {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`);
  }
  if (!Array.isArray(json)) throw new Error(`${file}: expected a JSON array of records`);
  return json.map((r, i) => {
    const p = RecordSchema.safeParse(r);
    if (!p.success) {
      const issue = p.error.issues[0];
      throw new Error(`${file}: record ${i}: field "${issue?.path.join('.') ?? '?'}": ${issue?.message ?? 'invalid'}`);
    }
    return p.data;
  });
}

/** The Alpaca template; the input section is left out when there is no input. */
export function formatPrompt(r: Pick<InstructRecord, 'instruction' | 'input'>): string {
  const input = r.input.trim() ? `### Input:\n${r.input.trim()}\n\n` : '';
  return `### Instruction:\n${r.instruction.trim()}\n\n${input}### Response:\n`;
}

/** A tokenized example: prompt then response then <|endoftext|>, cut to ctx + 1 tokens. */
export interface Example {
  ids: Int32Array;
  /** tokens before the response; targets at positions ≥ promptLen are scored */
  promptLen: number;
}

/** Examples whose prompt leaves fewer than `minResponse` tokens of room are dropped (null). */
export function toExample(tok: BpeTokenizer, r: InstructRecord, ctx: number, minResponse = 16): Example | null {
  const prompt = tok.encode(formatPrompt(r));
  if (prompt.length + minResponse > ctx + 1) return null;
  const all = [...prompt, ...tok.encode(r.output.trim()), tok.specialId(EOT)].slice(0, ctx + 1);
  return { ids: Int32Array.from(all), promptLen: prompt.length };
}

export interface ClientData {
  name: string;
  train: Example[];
  val: Example[];
  /** records dropped because their prompt alone nearly fills the context */
  dropped: number;
}

export interface SplitOptions {
  ctx: number;
  seed: number;
  /** validation examples per client */
  valCount?: number;
  /** cap on training examples per client (after the validation cut) */
  maxTrain?: number;
}

/** One client's data: shuffled with the seed, first `valCount` for validation, the rest (capped) for training. */
export function loadClient(tok: BpeTokenizer, name: ClientName, opts: SplitOptions, dir = path.join(dataDir, 'instruct')): ClientData {
  const src = CLIENT_SOURCES.find((s) => s.name === name);
  if (!src) throw new Error(`unknown client data set ${name}`);
  const records = new Rng(opts.seed).shuffle(loadInstructFile(path.join(dir, src.file)));
  const valCount = opts.valCount ?? 64;
  const maxTrain = opts.maxTrain ?? 2000;
  const val: Example[] = [];
  const train: Example[] = [];
  let dropped = 0;
  for (const r of records) {
    if (val.length >= valCount && train.length >= maxTrain) break;
    const ex = toExample(tok, r, opts.ctx);
    if (!ex) {
      dropped++;
      continue;
    }
    (val.length < valCount ? val : train).push(ex);
  }
  return { name, train, val, dropped };
}

export function loadClients(tok: BpeTokenizer, opts: SplitOptions): ClientData[] {
  return CLIENT_SOURCES.map((s) => loadClient(tok, s.name, opts));
}

export interface Batch {
  b: number;
  t: number;
  x: Int32Array;
  y: Int32Array;
  mask: Float32Array;
  /** scored tokens */
  tokens: number;
}

/** Pads to the longest example, rounded up to a multiple of 32 so few distinct shapes occur. */
export function makeBatch(examples: readonly Example[], maxT: number, padId = 0): Batch {
  const longest = Math.max(...examples.map((e) => e.ids.length - 1));
  const t = Math.min(maxT, Math.ceil(longest / 32) * 32);
  const b = examples.length;
  const x = new Int32Array(b * t).fill(padId);
  const y = new Int32Array(b * t).fill(padId);
  const mask = new Float32Array(b * t);
  let tokens = 0;
  examples.forEach((e, i) => {
    const n = Math.min(e.ids.length - 1, t);
    for (let j = 0; j < n; j++) {
      x[i * t + j] = e.ids[j]!;
      y[i * t + j] = e.ids[j + 1]!;
      // target j is token j+1: score it when it belongs to the response
      if (j + 1 >= e.promptLen) {
        mask[i * t + j] = 1;
        tokens++;
      }
    }
  });
  return { b, t, x, y, mask, tokens };
}

/** Endless batches without replacement within an epoch; reshuffles every epoch. */
export class BatchSampler {
  private order: number[] = [];
  private pos = 0;

  constructor(
    private readonly examples: readonly Example[],
    private readonly batch: number,
    private readonly rng: Rng,
  ) {
    if (examples.length === 0) throw new Error('BatchSampler: no examples');
  }

  next(): Example[] {
    const out: Example[] = [];
    while (out.length < this.batch) {
      if (this.pos >= this.order.length) {
        this.order = this.rng.shuffle([...this.examples.keys()]);
        this.pos = 0;
      }
      out.push(this.examples[this.order[this.pos++]!]!);
    }
    return out;
  }
}
