/**
 * ESM-2 protein language-model embeddings (Lin et al. 2023), mean-pooled over
 * residues, from a local model directory the user provides. Nothing is
 * downloaded: the inference library is loaded with a dynamic import() so the
 * rest of the example works without it, and a missing library or a missing or
 * wrong model directory fails with an error that says what to provide.
 *
 * Neither onnxruntime-node nor @huggingface/transformers is installed in this
 * repository, so only the error paths are exercised by the tests.
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import type { Embedder } from './embedder.ts';

export type EsmRuntime = 'onnxruntime-node' | '@huggingface/transformers';

export interface EsmOptions {
  modelDir: string;
  /** inference library (default onnxruntime-node) */
  runtime?: EsmRuntime;
  /** residues per sequence the model sees; ESM-2 was trained on 1,022 (+2 special tokens) */
  maxResidues?: number;
}

export class EsmSetupError extends Error {
  override name = 'EsmSetupError';
}

const ConfigSchema = z.object({
  model_type: z.literal('esm'),
  hidden_size: z.number().int().positive(),
  num_hidden_layers: z.number().int().positive().optional(),
});

/** Files each runtime needs; alternatives are separated by " or ". */
export const EXPECTED_FILES: Record<EsmRuntime, string[][]> = {
  'onnxruntime-node': [['config.json'], ['vocab.txt'], ['model.onnx', 'onnx/model.onnx']],
  '@huggingface/transformers': [['config.json'], ['tokenizer.json', 'vocab.txt'], ['onnx/model.onnx', 'onnx/model_quantized.onnx']],
};

const HOW_TO_GET =
  'export one beforehand, e.g. `optimum-cli export onnx --model facebook/esm2_t6_8M_UR50D <dir>` (the ONNX export plus config.json and vocab.txt); nothing is downloaded at run time';

async function isFile(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isFile(),
    () => false,
  );
}

/** Checks the directory and returns the first present file of each group. */
export async function checkModelDir(modelDir: string, runtime: EsmRuntime): Promise<{ config: z.infer<typeof ConfigSchema>; files: string[] }> {
  const dir = path.resolve(modelDir);
  const expected = EXPECTED_FILES[runtime].map((g) => g.join(' or ')).join(', ');
  const s = await stat(dir).catch(() => undefined);
  if (!s) throw new EsmSetupError(`ESM-2 model directory ${dir} does not exist. Expected a directory with ${expected} (for ${runtime}); ${HOW_TO_GET}.`);
  if (!s.isDirectory()) throw new EsmSetupError(`ESM-2 model directory ${dir} is not a directory. Expected a directory with ${expected}.`);
  const found: string[] = [];
  const missing: string[] = [];
  for (const group of EXPECTED_FILES[runtime]) {
    let hit: string | undefined;
    for (const f of group) if (!hit && (await isFile(path.join(dir, f)))) hit = f;
    if (hit) found.push(hit);
    else missing.push(group.join(' or '));
  }
  if (missing.length > 0) {
    throw new EsmSetupError(`ESM-2 model directory ${dir} is missing ${missing.join(', ')} (for ${runtime} it needs ${expected}); ${HOW_TO_GET}.`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path.join(dir, 'config.json'), 'utf8'));
  } catch (e) {
    throw new EsmSetupError(`${path.join(dir, 'config.json')}: not valid JSON (${(e as Error).message})`);
  }
  const cfg = ConfigSchema.safeParse(raw);
  if (!cfg.success) {
    const i = cfg.error.issues[0]!;
    throw new EsmSetupError(`${path.join(dir, 'config.json')}: ${i.path.join('.') || 'config'}: ${i.message} (not an ESM-2 model config?)`);
  }
  return { config: cfg.data, files: found };
}

/** Loads an optional package by name; the error names the package and how to add it. */
export async function importOptional(pkg: EsmRuntime): Promise<unknown> {
  try {
    const specifier: string = pkg; // a plain string keeps tsc from resolving an absent package
    return (await import(specifier)) as unknown;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new EsmSetupError(`ESM-2 embedding needs the npm package "${pkg}", which is not installed. Add it with \`npm install ${pkg}\` (or use the built-in featurizer: --embedder composition).`);
    }
    throw new EsmSetupError(`loading "${pkg}" failed: ${(e as Error).message}`);
  }
}

// Minimal structural views of the two libraries (only what is used here).
interface OrtTensor {
  readonly data: unknown;
  readonly dims: readonly number[];
}
interface OrtSession {
  readonly inputNames: readonly string[];
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
}
interface OrtModule {
  InferenceSession: { create(file: string): Promise<OrtSession> };
  Tensor: new (type: 'int64', data: BigInt64Array, dims: number[]) => OrtTensor;
}
interface HfModule {
  env: { allowRemoteModels: boolean; localModelPath: string };
  AutoTokenizer: { from_pretrained(name: string, o: object): Promise<(text: string, o: object) => Promise<Record<string, unknown>>> };
  AutoModel: { from_pretrained(name: string, o: object): Promise<(inputs: Record<string, unknown>) => Promise<Record<string, OrtTensor>>> };
}

function hasKeys(m: unknown, keys: string[]): boolean {
  return typeof m === 'object' && m !== null && keys.every((k) => k in m);
}

/** ESM-2 keeps both termini when a protein is too long: they carry the targeting signals. */
export function truncateTermini(seq: string, max: number): string {
  if (seq.length <= max) return seq;
  const head = Math.ceil(max / 2);
  return seq.slice(0, head) + seq.slice(seq.length - (max - head));
}

/** Mean over positions [from, to) of a [1, T, H] hidden-state tensor. */
function meanPool(t: OrtTensor, from: number, to: number): Float32Array {
  const [, T, H] = t.dims as [number, number, number];
  if (!(t.data instanceof Float32Array) || to > T) throw new Error(`unexpected ESM output: dims [${t.dims.join(', ')}]`);
  const out = new Float32Array(H);
  for (let p = from; p < to; p++) for (let h = 0; h < H; h++) out[h]! += t.data[p * H + h]!;
  for (let h = 0; h < H; h++) out[h]! /= Math.max(1, to - from);
  return out;
}

export class EsmEmbedder implements Embedder {
  private constructor(
    readonly name: string,
    readonly dim: number,
    private readonly embedOne: (seq: string) => Promise<Float32Array>,
    private readonly maxResidues: number,
  ) {}

  static async load(opts: EsmOptions): Promise<EsmEmbedder> {
    const runtime = opts.runtime ?? 'onnxruntime-node';
    const dir = path.resolve(opts.modelDir);
    const maxResidues = opts.maxResidues ?? 1022;
    const { config, files } = await checkModelDir(dir, runtime);
    const lib = await importOptional(runtime);
    const name = `esm2-${path.basename(dir)}-${runtime}`;
    if (runtime === 'onnxruntime-node') {
      const ort = ((lib as { default?: unknown }).default ?? lib) as OrtModule;
      if (!hasKeys(ort, ['InferenceSession', 'Tensor'])) throw new EsmSetupError('onnxruntime-node loaded but has no InferenceSession/Tensor export');
      const vocab = (await readFile(path.join(dir, 'vocab.txt'), 'utf8')).split(/\r?\n/).filter((l) => l.length > 0);
      const ids = new Map(vocab.map((tok, i) => [tok, i]));
      const special = (tok: string): number => {
        const id = ids.get(tok);
        if (id === undefined) throw new EsmSetupError(`${path.join(dir, 'vocab.txt')} has no ${tok} token (not an ESM vocabulary)`);
        return id;
      };
      const cls = special('<cls>');
      const eos = special('<eos>');
      const unk = special('<unk>');
      const session = await ort.InferenceSession.create(path.join(dir, files[2]!));
      return new EsmEmbedder(name, config.hidden_size, async (seq) => {
        const tokens = [cls, ...[...seq].map((c) => ids.get(c) ?? unk), eos];
        const dims = [1, tokens.length];
        const feeds: Record<string, OrtTensor> = { input_ids: new ort.Tensor('int64', BigInt64Array.from(tokens.map(BigInt)), dims) };
        if (session.inputNames.includes('attention_mask')) feeds['attention_mask'] = new ort.Tensor('int64', new BigInt64Array(tokens.length).fill(1n), dims);
        const out = await session.run(feeds);
        const hidden = out['last_hidden_state'] ?? Object.values(out)[0];
        if (!hidden) throw new Error('ESM ONNX model returned no output');
        return meanPool(hidden, 1, tokens.length - 1);
      }, maxResidues);
    }
    const hf = lib as HfModule;
    if (!hasKeys(hf, ['env', 'AutoTokenizer', 'AutoModel'])) throw new EsmSetupError('@huggingface/transformers loaded but has no AutoTokenizer/AutoModel export');
    hf.env.allowRemoteModels = false;
    hf.env.localModelPath = path.dirname(dir);
    const local = { local_files_only: true, ...(files[2]?.includes('quantized') ? { dtype: 'q8' } : { dtype: 'fp32' }) };
    const tokenizer = await hf.AutoTokenizer.from_pretrained(path.basename(dir), local);
    const model = await hf.AutoModel.from_pretrained(path.basename(dir), local);
    return new EsmEmbedder(name, config.hidden_size, async (seq) => {
      const inputs = await tokenizer(seq, { add_special_tokens: true });
      const out = await model(inputs);
      const hidden = out['last_hidden_state'];
      if (!hidden) throw new Error('ESM model returned no last_hidden_state');
      return meanPool(hidden, 1, (hidden.dims[1] ?? 2) - 1);
    }, maxResidues);
  }

  async embed(seqs: readonly string[]): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    for (const s of seqs) out.push(await this.embedOne(truncateTermini(s, this.maxResidues)));
    return out;
  }
}
