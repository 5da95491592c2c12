#!/usr/bin/env python3
"""Independent numpy reference for a llama2.c checkpoint's forward pass.

Follows llama2.c's run.c literally: one token at a time with a KV cache,
RoPE on interleaved pairs (2i, 2i+1), weights in the file's own layout
(no Hugging Face renaming or q/k permutation), float64 arithmetic.
Prints JSON {"vocab_size": V, "logits": [[...V floats] per position]}.

usage: llama_ref.py MODEL.bin --tokens 1,2,3
"""
import argparse
import json
import struct
import sys

import numpy as np


def load(path):
    with open(path, "rb") as f:
        raw = f.read()
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    w = np.frombuffer(raw[28:], dtype="<f4").astype(np.float64)
    hs = dim // heads
    kv_dim = kv_heads * hs
    off = 0

    def take(*shape):
        nonlocal off
        n = int(np.prod(shape))
        if off + n > w.size:
            sys.exit(f"{path}: file too short")
        a = w[off:off + n].reshape(shape)
        off += n
        return a

    p = {
        "emb": take(vocab, dim),
        "rms_att": take(layers, dim),
        "wq": take(layers, dim, dim),
        "wk": take(layers, kv_dim, dim),
        "wv": take(layers, kv_dim, dim),
        "wo": take(layers, dim, dim),
        "rms_ffn": take(layers, dim),
        "w1": take(layers, hidden, dim),
        "w2": take(layers, dim, hidden),
        "w3": take(layers, hidden, dim),
        "rms_final": take(dim),
    }
    take(seq_len, hs // 2)  # freq_cis_real (unused: recomputed as run.c does)
    take(seq_len, hs // 2)  # freq_cis_imag
    p["wcls"] = p["emb"] if shared else take(vocab, dim)
    cfg = dict(dim=dim, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, vocab=vocab, seq_len=seq_len)
    return cfg, p


def rmsnorm(x, w, eps=1e-5):
    return w * (x / np.sqrt(np.mean(x * x) + eps))


def forward_all(cfg, p, tokens):
    dim, heads, kv_heads, layers = cfg["dim"], cfg["heads"], cfg["kv_heads"], cfg["layers"]
    hs = dim // heads
    kv_mul = heads // kv_heads
    kcache = np.zeros((layers, len(tokens), kv_heads * hs))
    vcache = np.zeros((layers, len(tokens), kv_heads * hs))
    out = []
    for pos, tok in enumerate(tokens):
        x = p["emb"][tok].copy()
        for l in range(layers):
            xb = rmsnorm(x, p["rms_att"][l])
            q = p["wq"][l] @ xb
            k = p["wk"][l] @ xb
            v = p["wv"][l] @ xb
            # RoPE exactly as run.c: rotate pairs (i, i+1) by pos * 10000^(-(i % hs)/hs)
            for i in range(0, dim, 2):
                freq = 1.0 / (10000.0 ** ((i % hs) / hs))
                c, s = np.cos(pos * freq), np.sin(pos * freq)
                for vec in ((q, k) if i < kv_heads * hs else (q,)):
                    v0, v1 = vec[i], vec[i + 1]
                    vec[i], vec[i + 1] = v0 * c - v1 * s, v0 * s + v1 * c
            kcache[l, pos] = k
            vcache[l, pos] = v
            att_out = np.zeros(dim)
            for h in range(heads):
                qh = q[h * hs:(h + 1) * hs]
                kvh = h // kv_mul
                ks = kcache[l, :pos + 1, kvh * hs:(kvh + 1) * hs]
                vs = vcache[l, :pos + 1, kvh * hs:(kvh + 1) * hs]
                sc = ks @ qh / np.sqrt(hs)
                sc = np.exp(sc - sc.max())
                sc /= sc.sum()
                att_out[h * hs:(h + 1) * hs] = sc @ vs
            x = x + p["wo"][l] @ att_out
            xb = rmsnorm(x, p["rms_ffn"][l])
            h1 = p["w1"][l] @ xb
            h3 = p["w3"][l] @ xb
            x = x + p["w2"][l] @ ((h1 / (1.0 + np.exp(-h1))) * h3)
        x = rmsnorm(x, p["rms_final"])
        out.append(p["wcls"] @ x)
    return np.stack(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--tokens", required=True, help="comma-separated token ids")
    args = ap.parse_args()
    cfg, p = load(args.model)
    try:
        tokens = [int(t) for t in args.tokens.split(",")]
    except ValueError:
        sys.exit(f"--tokens: not a comma-separated list of integers: {args.tokens!r}")
    bad = [t for t in tokens if not 0 <= t < cfg["vocab"]]
    if bad:
        sys.exit(f"--tokens: ids out of range [0, {cfg['vocab']}): {bad}")
    logits = forward_all(cfg, p, tokens)
    json.dump({"vocab_size": cfg["vocab"], "logits": logits.tolist()}, sys.stdout)


if __name__ == "__main__":
    main()
