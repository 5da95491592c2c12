/**
 * Reader for Karpathy's llama2.c checkpoint format (legacy version 0): a
 * header of 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 * vocab_size, seq_len; a negative vocab_size means an unshared classifier),
 * then float32 arrays. Produces HF-named, HF-layout tensors.
 *
 * llama2.c applies RoPE to interleaved pairs (2i, 2i+1) of each head, our
 * model to halves (i, i + hd/2), like HF. Permuting the q and k rows of every
 * head (even rows first, then odd rows) makes the two identical, since q·k is
 * unchanged when both get the same permutation. This is the `permute` of
 * HF's convert_llama_weights_to_hf.py.
 */
import { readFileSync } from 'node:fs';
import { type TensorDict, tensor } from 'flotilla/core';
import type { LlamaConfig } from './config.ts';

const HEADER_INTS = 7;

export function readLlama2c(path: string): { config: LlamaConfig; weights: TensorDict } {
  const buf = readFileSync(path);
  if (buf.byteLength < HEADER_INTS * 4) throw new Error(`${path}: ${buf.byteLength} bytes, too short for the llama2.c header`);
  const h = new Int32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + HEADER_INTS * 4));
  const [dim, hidden, layers, heads, kvHeads, vocabSigned, seqLen] = [...h] as [number, number, number, number, number, number, number];
  const names = ['dim', 'hidden_dim', 'n_layers', 'n_heads', 'n_kv_heads', 'vocab_size', 'seq_len'];
  [dim, hidden, layers, heads, kvHeads, Math.abs(vocabSigned), seqLen].forEach((v, i) => {
    if (!(v > 0 && v < 1 << 24)) throw new Error(`${path}: header field ${names[i]} = ${v} is out of range`);
  });
  if (dim % heads !== 0 || heads % kvHeads !== 0)
    throw new Error(`${path}: dim ${dim}, n_heads ${heads}, n_kv_heads ${kvHeads} are inconsistent`);
  const shared = vocabSigned > 0;
  const vocab = Math.abs(vocabSigned);
  const hd = dim / heads;
  const kvDim = kvHeads * hd;
  const floats = new Float32Array(
    buf.buffer.slice(buf.byteOffset + HEADER_INTS * 4, buf.byteOffset + buf.byteLength - ((buf.byteLength - HEADER_INTS * 4) % 4)),
  );
  let off = 0;
  const take = (n: number, what: string): Float32Array => {
    if (off + n > floats.length) throw new Error(`${path}: file ends inside ${what} (needs ${off + n} floats, has ${floats.length})`);
    const a = floats.subarray(off, off + n);
    off += n;
    return a;
  };
  const emb = take(vocab * dim, 'token_embedding');
  const rmsAtt = take(layers * dim, 'rms_att');
  const wq = take(layers * dim * dim, 'wq');
  const wk = take(layers * kvDim * dim, 'wk');
  const wv = take(layers * kvDim * dim, 'wv');
  const wo = take(layers * dim * dim, 'wo');
  const rmsFfn = take(layers * dim, 'rms_ffn');
  const w1 = take(layers * hidden * dim, 'w1');
  const w2 = take(layers * dim * hidden, 'w2');
  const w3 = take(layers * hidden * dim, 'w3');
  const rmsFinal = take(dim, 'rms_final');
  take(seqLen * (hd / 2) * 2, 'freq_cis_real/imag'); // legacy RoPE tables: recomputed, not read
  const cls = shared ? undefined : take(vocab * dim, 'wcls');

  const w: TensorDict = new Map();
  const put = (name: string, shape: number[], src: Float32Array, layer = 0) => {
    const n = shape.reduce((a, b) => a * b, 1);
    w.set(name, tensor('F32', shape, Float32Array.from(src.subarray(layer * n, (layer + 1) * n))));
  };
  put('model.embed_tokens.weight', [vocab, dim], emb);
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}`;
    put(`${p}.input_layernorm.weight`, [dim], rmsAtt, l);
    w.set(
      `${p}.self_attn.q_proj.weight`,
      tensor('F32', [dim, dim], permuteRows(wq.subarray(l * dim * dim, (l + 1) * dim * dim), heads, hd, dim)),
    );
    w.set(
      `${p}.self_attn.k_proj.weight`,
      tensor('F32', [kvDim, dim], permuteRows(wk.subarray(l * kvDim * dim, (l + 1) * kvDim * dim), kvHeads, hd, dim)),
    );
    put(`${p}.self_attn.v_proj.weight`, [kvDim, dim], wv, l);
    put(`${p}.self_attn.o_proj.weight`, [dim, dim], wo, l);
    put(`${p}.post_attention_layernorm.weight`, [dim], rmsFfn, l);
    put(`${p}.mlp.gate_proj.weight`, [hidden, dim], w1, l);
    put(`${p}.mlp.down_proj.weight`, [dim, hidden], w2, l);
    put(`${p}.mlp.up_proj.weight`, [hidden, dim], w3, l);
  }
  put('model.norm.weight', [dim], rmsFinal);
  if (cls) put('lm_head.weight', [vocab, dim], cls);
  const config: LlamaConfig = {
    vocabSize: vocab,
    dim,
    hiddenDim: hidden,
    nLayers: layers,
    nHeads: heads,
    nKvHeads: kvHeads,
    maxSeqLen: seqLen,
    normEps: 1e-5,
    ropeTheta: 10000,
    tieEmbeddings: shared,
  };
  return { config, weights: w };
}

/** Within each head, rows (2i, 2i+1) → (i, i + hd/2): interleaved-pair RoPE → rotate-half RoPE. */
export function permuteRows(src: Float32Array, heads: number, hd: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < hd / 2; i++) {
      for (const parity of [0, 1]) {
        const from = (h * hd + 2 * i + parity) * cols;
        const to = (h * hd + i + parity * (hd / 2)) * cols;
        out.set(src.subarray(from, from + cols), to);
      }
    }
  }
  return out;
}
