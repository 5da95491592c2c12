/**
 * A tiny ESM-2-shaped ONNX model, written from scratch, so that the ESM-2
 * embedder's inference path (onnxruntime-node, tokenization, batching with
 * padding, pooling) can be run and checked where no real ESM-2 export can be
 * downloaded. The directory it writes has the layout of an
 * `optimum-cli export onnx --model facebook/esm2_t6_8M_UR50D` export: the real
 * 33-token ESM-2 `vocab.txt`, a `config.json` (model_type esm) and `model.onnx`
 * with inputs `input_ids`, `attention_mask` (int64 [batch, seq]) and output
 * `last_hidden_state` (float [batch, seq, hidden]).
 *
 * The graph (opset 17), per sequence b and position t, with m = attention_mask:
 *   e[t]   = tok[input_ids[t]] + pos[cumsum(m)[t]·m[t] + 1]   (Gather ×2; HF ESM's position ids, padding_idx 1)
 *   ctx    = Σ_t m[t]·e[t] / Σ_t m[t]                         (a masked mean: every position sees the whole sequence, pads excluded)
 *   out[t] = tanh((e[t] + ctx) · W + b)                       (MatMul, Add, Tanh)
 * so, like a transformer, each position depends on the whole unpadded sequence
 * and on its order, and padding changes nothing only if the mask is honoured.
 *
 * The protobuf bytes are written by hand (a dozen onnx.proto fields), so the
 * generator needs nothing beyond Node.
 *
 *   node --conditions=flotilla-source --import tsx examples/protein/src/tiny-esm.ts <dir> [--hidden 16] [--seed 1]
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { Rng } from './prng.ts';

/** facebook/esm2_* vocab.txt, in order (ids 0..32). */
export const ESM2_VOCAB: readonly string[] = [
  '<cls>',
  '<pad>',
  '<eos>',
  '<unk>',
  'L',
  'A',
  'G',
  'V',
  'S',
  'E',
  'R',
  'T',
  'D',
  'I',
  'Q',
  'K',
  'P',
  'F',
  'N',
  'Y',
  'M',
  'H',
  'W',
  'C',
  'X',
  'B',
  'U',
  'Z',
  'O',
  '.',
  '-',
  '<null_1>',
  '<mask>',
];

export interface TinyEsmWeights {
  vocab: number;
  hidden: number;
  /** rows of the position table: HF ESM's max_position_embeddings */
  maxPositions: number;
  /** [vocab, hidden] token embeddings */
  tok: Float32Array;
  /** [maxPositions, hidden] position embeddings (row 1 = padding_idx) */
  pos: Float32Array;
  /** [hidden, hidden] row-major, out = x · W */
  w: Float32Array;
  /** [hidden] */
  b: Float32Array;
}

export const TinyEsmOptionsSchema = z.object({
  hidden: z.number().int().min(1).max(1024).default(16),
  /** residues the position table can hold; max_position_embeddings = maxResidues + 4, as ESM-2's 1022 ↔ 1026 */
  maxResidues: z.number().int().min(1).max(100_000).default(64),
  seed: z.number().int().min(0).default(1),
});
export type TinyEsmOptions = z.input<typeof TinyEsmOptionsSchema>;

export function tinyEsmWeights(options: TinyEsmOptions = {}): TinyEsmWeights {
  const o = TinyEsmOptionsSchema.parse(options);
  const rng = new Rng(o.seed);
  const fill = (n: number, scale: number): Float32Array => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = (rng.uniform() * 2 - 1) * scale;
    return a;
  };
  const H = o.hidden;
  const maxPositions = o.maxResidues + 4;
  return {
    vocab: ESM2_VOCAB.length,
    hidden: H,
    maxPositions,
    tok: fill(ESM2_VOCAB.length * H, 1),
    pos: fill(maxPositions * H, 0.3),
    w: fill(H * H, 1 / Math.sqrt(H)),
    b: fill(H, 0.1),
  };
}

// ---- a minimal protobuf writer -------------------------------------------

class Pb {
  private readonly parts: Uint8Array[] = [];

  private varint(v: bigint): void {
    let x = BigInt.asUintN(64, v);
    const bytes: number[] = [];
    while (x >= 0x80n) {
      bytes.push(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    bytes.push(Number(x));
    this.parts.push(Uint8Array.from(bytes));
  }

  private key(field: number, wire: number): void {
    this.varint(BigInt((field << 3) | wire));
  }

  int(field: number, v: number | bigint): this {
    this.key(field, 0);
    this.varint(BigInt(v));
    return this;
  }

  bytes(field: number, b: Uint8Array): this {
    this.key(field, 2);
    this.varint(BigInt(b.length));
    this.parts.push(b);
    return this;
  }

  str(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }

  msg(field: number, m: Pb): this {
    return this.bytes(field, m.finish());
  }

  finish(): Uint8Array {
    const n = this.parts.reduce((s, p) => s + p.length, 0);
    const out = new Uint8Array(n);
    let o = 0;
    for (const p of this.parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}

// onnx.proto field numbers and enums used below
const FLOAT = 1;
const INT64 = 7;
const ATTR_INT = 2;

function tensorProto(name: string, dataType: number, dims: readonly number[], raw: ArrayBufferView): Pb {
  const t = new Pb();
  for (const d of dims) t.int(1, d); // dims
  t.int(2, dataType); // data_type
  t.str(8, name); // name
  // raw_data is little-endian; typed arrays on every platform Node runs on are too
  t.bytes(9, new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength));
  return t;
}

function valueInfo(name: string, elemType: number, dims: ReadonlyArray<number | string>): Pb {
  const shape = new Pb();
  for (const d of dims) shape.msg(1, typeof d === 'number' ? new Pb().int(1, d) : new Pb().str(2, d)); // dim { dim_value | dim_param }
  const tensorType = new Pb().int(1, elemType).msg(2, shape); // TypeProto.Tensor { elem_type, shape }
  return new Pb().str(1, name).msg(2, new Pb().msg(1, tensorType)); // ValueInfoProto { name, type { tensor_type } }
}

function node(op: string, inputs: string[], outputs: string[], attrs: Record<string, number> = {}): Pb {
  const n = new Pb();
  for (const i of inputs) n.str(1, i);
  for (const o of outputs) n.str(2, o);
  n.str(3, `${op}_${outputs[0]}`);
  n.str(4, op);
  for (const [k, v] of Object.entries(attrs)) n.msg(5, new Pb().str(1, k).int(3, v).int(20, ATTR_INT)); // AttributeProto { name, i, type }
  return n;
}

/** Serialized ModelProto (IR 8, opset 17) of the graph described at the top of this file. */
export function tinyEsmOnnx(wt: TinyEsmWeights, outputName = 'last_hidden_state'): Uint8Array {
  const H = wt.hidden;
  const graph = new Pb();
  const nodes = [
    node('Cast', ['attention_mask'], ['mask_f'], { to: FLOAT }),
    node('Unsqueeze', ['mask_f', 'axis_2'], ['mask3']),
    node('CumSum', ['attention_mask', 'axis_1_scalar'], ['mask_cumsum']),
    node('Mul', ['mask_cumsum', 'attention_mask'], ['pos_masked']),
    node('Add', ['pos_masked', 'one_i64'], ['position_ids']),
    node('Gather', ['embed_tokens.weight', 'input_ids'], ['tok_emb'], { axis: 0 }),
    node('Gather', ['embed_positions.weight', 'position_ids'], ['pos_emb'], { axis: 0 }),
    node('Add', ['tok_emb', 'pos_emb'], ['emb']),
    node('Mul', ['emb', 'mask3'], ['emb_masked']),
    node('ReduceSum', ['emb_masked', 'axis_1'], ['ctx_sum'], { keepdims: 1 }),
    node('ReduceSum', ['mask3', 'axis_1'], ['ctx_count'], { keepdims: 1 }),
    node('Div', ['ctx_sum', 'ctx_count'], ['ctx']),
    node('Add', ['emb', 'ctx'], ['x']),
    node('MatMul', ['x', 'dense.weight'], ['xw']),
    node('Add', ['xw', 'dense.bias'], ['pre']),
    node('Tanh', ['pre'], [outputName]),
  ];
  for (const n of nodes) graph.msg(1, n);
  graph.str(2, 'tiny_esm');
  const inits = [
    tensorProto('embed_tokens.weight', FLOAT, [wt.vocab, H], wt.tok),
    tensorProto('embed_positions.weight', FLOAT, [wt.maxPositions, H], wt.pos),
    tensorProto('dense.weight', FLOAT, [H, H], wt.w),
    tensorProto('dense.bias', FLOAT, [H], wt.b),
    tensorProto('axis_1', INT64, [1], BigInt64Array.of(1n)),
    tensorProto('axis_2', INT64, [1], BigInt64Array.of(2n)),
    tensorProto('axis_1_scalar', INT64, [], BigInt64Array.of(1n)),
    tensorProto('one_i64', INT64, [], BigInt64Array.of(1n)),
  ];
  for (const t of inits) graph.msg(5, t);
  graph.msg(11, valueInfo('input_ids', INT64, ['batch_size', 'sequence_length']));
  graph.msg(11, valueInfo('attention_mask', INT64, ['batch_size', 'sequence_length']));
  graph.msg(12, valueInfo(outputName, FLOAT, ['batch_size', 'sequence_length', H]));
  return new Pb()
    .int(1, 8) // ir_version
    .str(2, 'flotilla tiny-esm') // producer_name
    .msg(7, graph) // graph
    .msg(8, new Pb().str(1, '').int(2, 17)) // opset_import { domain "", version 17 }
    .finish();
}

/**
 * Writes `model.onnx` (or `onnx/model.onnx` with `layout: 'optimum'`),
 * `config.json` and `vocab.txt` into `dir` and returns the weights.
 * `outputName` renames the output (to test a wrongly exported model).
 */
export async function writeTinyEsm(
  dir: string,
  options: TinyEsmOptions & { layout?: 'flat' | 'optimum'; outputName?: string } = {},
): Promise<TinyEsmWeights> {
  const { layout = 'flat', outputName, ...rest } = options;
  const wt = tinyEsmWeights(rest);
  const modelFile = layout === 'optimum' ? path.join(dir, 'onnx', 'model.onnx') : path.join(dir, 'model.onnx');
  await mkdir(path.dirname(modelFile), { recursive: true });
  await writeFile(modelFile, tinyEsmOnnx(wt, outputName));
  const config = {
    architectures: ['EsmModel'],
    model_type: 'esm',
    hidden_size: wt.hidden,
    num_hidden_layers: 1,
    num_attention_heads: 1,
    max_position_embeddings: wt.maxPositions,
    pad_token_id: 1,
    mask_token_id: 32,
    vocab_size: wt.vocab,
    position_embedding_type: 'absolute',
    _comment: 'tiny ESM-2-shaped test model written by examples/protein/src/tiny-esm.ts, not a trained model',
  };
  await writeFile(path.join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  await writeFile(path.join(dir, 'vocab.txt'), `${ESM2_VOCAB.join('\n')}\n`);
  return wt;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const dir = args.find((a, i) => !a.startsWith('--') && !(args[i - 1] ?? '').startsWith('--'));
  const flag = (name: string): number | undefined => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? Number(args[i + 1]) : undefined;
  };
  if (!dir) {
    console.error('usage: tiny-esm.ts <dir> [--hidden 16] [--max-residues 64] [--seed 1]');
    process.exit(2);
  }
  const opts = TinyEsmOptionsSchema.safeParse({ hidden: flag('hidden'), maxResidues: flag('max-residues'), seed: flag('seed') });
  if (!opts.success) {
    const i = opts.error.issues[0]!;
    console.error(`option --${i.path.join('.').replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}: ${i.message}`);
    process.exit(2);
  }
  await writeTinyEsm(dir, opts.data);
  console.log(
    `wrote a tiny ESM-2-shaped model (hidden ${opts.data.hidden}, up to ${opts.data.maxResidues} residues) to ${path.resolve(dir)}`,
  );
}
