/**
 * ESM-2 protein language-model embeddings (Lin et al. 2023), mean-pooled over
 * residues, from a local model directory the user provides. Nothing is
 * downloaded: the inference library is loaded with a dynamic import() so the
 * rest of the example works without it, and a missing library or a missing or
 * wrong model directory fails with an error that says what to provide.
 *
 * Pooling: the model sees `<cls> residues… <eos>`; the embedding is the mean of
 * `last_hidden_state` over the residue positions only (the `<cls>` and `<eos>`
 * positions and any padding are excluded), as in the ESM-2 and DeepLoc/Light
 * Attention papers' per-protein embeddings.
 *
 * With onnxruntime-node (a pinned dependency), sequences are run in batches:
 * sorted by length, padded with `<pad>` and masked with `attention_mask`, so a
 * protein's embedding does not depend on what it was batched with. The whole
 * path is tested end to end (test/unit/examples/protein-esm.test.ts) on a tiny ESM-2-shaped
 * ONNX model written by tiny-esm.ts, against hidden states computed in the
 * test from the same weights. The @huggingface/transformers path (not
 * installed here) is kept for users who have it and is not run by the tests.
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
  /**
   * residues per sequence the model sees (default 1022, what ESM-2 was trained
   * on, +2 special tokens; at most config.json's max_position_embeddings − 4);
   * longer proteins keep both termini
   */
  maxResidues?: number;
  /** sequences per forward pass with onnxruntime-node (default 8) */
  batchSize?: number;
  /** onnxruntime-node intra-op threads (default: onnxruntime's choice) */
  threads?: number;
}

const OptionsSchema = z.object({
  modelDir: z.string().min(1),
  runtime: z.enum(['onnxruntime-node', '@huggingface/transformers']).default('onnxruntime-node'),
  maxResidues: z.number().int().min(1).optional(),
  batchSize: z.number().int().min(1).max(4096).default(8),
  threads: z.number().int().min(1).max(1024).optional(),
});

export class EsmSetupError extends Error {
  override name = 'EsmSetupError';
}

const ConfigSchema = z.object({
  model_type: z.literal('esm'),
  hidden_size: z.number().int().positive(),
  num_hidden_layers: z.number().int().positive().optional(),
  max_position_embeddings: z.number().int().min(5).optional(),
});

/** Files each runtime needs; alternatives are separated by " or ". */
export const EXPECTED_FILES: Record<EsmRuntime, string[][]> = {
  'onnxruntime-node': [['config.json'], ['vocab.txt'], ['model.onnx', 'onnx/model.onnx']],
  '@huggingface/transformers': [['config.json'], ['tokenizer.json', 'vocab.txt'], ['onnx/model.onnx', 'onnx/model_quantized.onnx']],
};

const HOW_TO_GET =
  'export one beforehand where the Hugging Face hub is reachable, e.g. `optimum-cli export onnx --model facebook/esm2_t6_8M_UR50D --task feature-extraction <dir>` (model.onnx plus config.json and vocab.txt), and copy the directory here; nothing is downloaded at run time';

async function isFile(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isFile(),
    () => false,
  );
}

/** Checks the directory and returns the first present file of each group. */
export async function checkModelDir(
  modelDir: string,
  runtime: EsmRuntime,
): Promise<{ config: z.infer<typeof ConfigSchema>; files: string[] }> {
  const dir = path.resolve(modelDir);
  const expected = EXPECTED_FILES[runtime].map((g) => g.join(' or ')).join(', ');
  const s = await stat(dir).catch(() => undefined);
  if (!s)
    throw new EsmSetupError(
      `ESM-2 model directory ${dir} does not exist. Expected a directory with ${expected} (for ${runtime}); ${HOW_TO_GET}.`,
    );
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
    throw new EsmSetupError(
      `ESM-2 model directory ${dir} is missing ${missing.join(', ')} (for ${runtime} it needs ${expected}); ${HOW_TO_GET}.`,
    );
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
      throw new EsmSetupError(
        `ESM-2 embedding needs the npm package "${pkg}", which is not installed. Add it with \`npm install ${pkg}\` (or use the built-in featurizer: --embedder composition).`,
      );
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
  readonly outputNames: readonly string[];
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
}
interface OrtModule {
  InferenceSession: { create(file: string, options: { intraOpNumThreads?: number }): Promise<OrtSession> };
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

function checkHidden(t: OrtTensor, B: number, T: number, H: number, where: string): void {
  const [b, tt, h] = t.dims;
  if (t.dims.length !== 3 || b !== B || tt !== T || h !== H) {
    throw new Error(
      `${where}: last_hidden_state has dims [${t.dims.join(', ')}], expected [${B}, ${T}, ${H}] (batch, tokens, config.json hidden_size)`,
    );
  }
  if (!(t.data instanceof Float32Array)) throw new Error(`${where}: last_hidden_state is not float32`);
}

/** Mean over positions [from, to) of row `b` of a [B, T, H] hidden-state tensor. */
function meanPool(t: OrtTensor, b: number, from: number, to: number): Float32Array {
  const [, T, H] = t.dims as [number, number, number];
  const data = t.data as Float32Array;
  const out = new Float32Array(H);
  const acc = new Float64Array(H);
  for (let p = from; p < to; p++) {
    const o = (b * T + p) * H;
    for (let h = 0; h < H; h++) acc[h]! += data[o + h]!;
  }
  const n = Math.max(1, to - from);
  for (let h = 0; h < H; h++) out[h] = acc[h]! / n;
  return out;
}

/** `<cls> residues… <eos>` token ids of one (already truncated) sequence. */
export function esmTokens(seq: string, vocab: ReadonlyMap<string, number>, special: { cls: number; eos: number; unk: number }): number[] {
  const out = [special.cls];
  for (const c of seq) out.push(vocab.get(c) ?? special.unk);
  out.push(special.eos);
  return out;
}

export class EsmEmbedder implements Embedder {
  private constructor(
    readonly name: string,
    readonly dim: number,
    /** residues per sequence after truncation */
    readonly maxResidues: number,
    /** sequences per forward pass actually used */
    readonly batchSize: number,
    private readonly embedBatch: (seqs: readonly string[]) => Promise<Float32Array[]>,
  ) {}

  static async load(options: EsmOptions): Promise<EsmEmbedder> {
    const parsed = OptionsSchema.safeParse(options);
    if (!parsed.success) {
      const i = parsed.error.issues[0]!;
      throw new EsmSetupError(`ESM-2 option ${i.path.join('.') || 'options'}: ${i.message}`);
    }
    const opts = parsed.data;
    const runtime = opts.runtime;
    const dir = path.resolve(opts.modelDir);
    const { config, files } = await checkModelDir(dir, runtime);
    const positionCap = config.max_position_embeddings !== undefined ? config.max_position_embeddings - 4 : Infinity;
    if (opts.maxResidues !== undefined && opts.maxResidues > positionCap) {
      throw new EsmSetupError(
        `ESM-2 option maxResidues: ${opts.maxResidues} is more than ${path.join(dir, 'config.json')}'s max_position_embeddings ${config.max_position_embeddings} allows (${positionCap} residues + 2 special tokens + 2)`,
      );
    }
    const maxResidues = opts.maxResidues ?? Math.min(1022, positionCap);
    const lib = await importOptional(runtime);
    const name = `esm2-${path.basename(dir)}-${runtime}-max${maxResidues}`;
    if (runtime === 'onnxruntime-node') {
      const ort = ((lib as { default?: unknown }).default ?? lib) as OrtModule;
      if (!hasKeys(ort, ['InferenceSession', 'Tensor']))
        throw new EsmSetupError('onnxruntime-node loaded but has no InferenceSession/Tensor export');
      const vocabFile = path.join(dir, 'vocab.txt');
      const ids = new Map<string, number>();
      (await readFile(vocabFile, 'utf8')).split(/\r?\n/).forEach((tok, i) => {
        if (tok.length > 0 && !ids.has(tok)) ids.set(tok, i);
      });
      const special = (tok: string): number => {
        const id = ids.get(tok);
        if (id === undefined) throw new EsmSetupError(`${vocabFile} has no ${tok} token (not an ESM vocabulary)`);
        return id;
      };
      const sp = { cls: special('<cls>'), eos: special('<eos>'), unk: special('<unk>') };
      const pad = special('<pad>');
      const modelFile = path.join(dir, files[2]!);
      let session: OrtSession;
      try {
        session = await ort.InferenceSession.create(modelFile, opts.threads !== undefined ? { intraOpNumThreads: opts.threads } : {});
      } catch (e) {
        throw new EsmSetupError(`${modelFile}: onnxruntime-node cannot load it (${(e as Error).message})`);
      }
      if (!session.inputNames.includes('input_ids')) {
        throw new EsmSetupError(
          `${modelFile}: the model has no input_ids input (inputs: ${session.inputNames.join(', ')}); expected an ESM-2 export with input_ids and attention_mask`,
        );
      }
      const masked = session.inputNames.includes('attention_mask');
      // without an attention mask, padding would leak into the hidden states: one sequence per pass
      const batchSize = masked ? opts.batchSize : 1;
      if (!session.outputNames.includes('last_hidden_state')) {
        throw new EsmSetupError(
          `${modelFile}: the model has no last_hidden_state output (outputs: ${session.outputNames.join(', ')}); export the base model, e.g. with \`optimum-cli export onnx --task feature-extraction\` (the default task for ESM-2 checkpoints is fill-mask, whose output is logits)`,
        );
      }
      const H = config.hidden_size;
      return new EsmEmbedder(name, H, maxResidues, batchSize, async (seqs) => {
        const rows = seqs.map((s) => esmTokens(s, ids, sp));
        const T = Math.max(...rows.map((r) => r.length));
        const B = rows.length;
        const tokens = new BigInt64Array(B * T).fill(BigInt(pad));
        const mask = new BigInt64Array(B * T);
        rows.forEach((r, b) => {
          for (let t = 0; t < r.length; t++) {
            tokens[b * T + t] = BigInt(r[t]!);
            mask[b * T + t] = 1n;
          }
        });
        const feeds: Record<string, OrtTensor> = { input_ids: new ort.Tensor('int64', tokens, [B, T]) };
        if (masked) feeds['attention_mask'] = new ort.Tensor('int64', mask, [B, T]);
        const out = await session.run(feeds);
        const hidden = out['last_hidden_state'];
        if (!hidden) throw new Error(`${modelFile}: the model returned no output`);
        checkHidden(hidden, B, T, H, modelFile);
        return rows.map((r, b) => meanPool(hidden, b, 1, r.length - 1));
      });
    }
    const hf = lib as HfModule;
    if (!hasKeys(hf, ['env', 'AutoTokenizer', 'AutoModel']))
      throw new EsmSetupError('@huggingface/transformers loaded but has no AutoTokenizer/AutoModel export');
    hf.env.allowRemoteModels = false;
    hf.env.localModelPath = path.dirname(dir);
    const local = { local_files_only: true, ...(files[2]?.includes('quantized') ? { dtype: 'q8' } : { dtype: 'fp32' }) };
    const tokenizer = await hf.AutoTokenizer.from_pretrained(path.basename(dir), local);
    const model = await hf.AutoModel.from_pretrained(path.basename(dir), local);
    return new EsmEmbedder(name, config.hidden_size, maxResidues, 1, async (seqs) => {
      const out: Float32Array[] = [];
      for (const seq of seqs) {
        const inputs = await tokenizer(seq, { add_special_tokens: true });
        const res = await model(inputs);
        const hidden = res['last_hidden_state'];
        if (!hidden) throw new Error('ESM model returned no last_hidden_state');
        checkHidden(hidden, 1, hidden.dims[1] ?? 0, config.hidden_size, dir);
        out.push(meanPool(hidden, 0, 1, (hidden.dims[1] ?? 2) - 1));
      }
      return out;
    });
  }

  /**
   * One embedding per sequence, in input order. Sequences are truncated to
   * maxResidues (both termini kept), sorted by length and run batchSize at a
   * time so that each batch pads little.
   */
  async embed(seqs: readonly string[]): Promise<Float32Array[]> {
    const cut = seqs.map((s) => truncateTermini(s, this.maxResidues));
    const order = cut.map((_, i) => i).sort((a, b) => cut[a]!.length - cut[b]!.length || a - b);
    const out = new Array<Float32Array>(seqs.length);
    for (let i = 0; i < order.length; i += this.batchSize) {
      const idx = order.slice(i, i + this.batchSize);
      const rows = await this.embedBatch(idx.map((j) => cut[j]!));
      idx.forEach((j, k) => (out[j] = rows[k]!));
    }
    return out;
  }
}
