"""Generated data (nothing is downloaded): a 3-class problem in 8 dimensions.

A line-for-line port of examples/hello-fedavg/data.ts (same seeded Mulberry32 stream, same teacher,
same per-site shifts), so a PyTorch site and a TypeScript site of one federation see the same task;
test/e2e/python/python-ex-process.test.ts checks both produce the same arrays. Each site draws its inputs from
a differently shifted Gaussian (non-IID), labelled by one fixed random "teacher".
"""
import math

import numpy as np

FEATURES = 8
CLASSES = 3
_M32 = 0xFFFFFFFF


def rng(seed):
    """Mulberry32 on uint32 values, exactly as the JavaScript (Math.imul = low 32 bits of the product)."""
    a = seed & _M32

    def next_float():
        nonlocal a
        a = (a + 0x6D2B79F5) & _M32
        t = a
        t = ((t ^ (t >> 15)) * (t | 1)) & _M32
        t ^= (t + (((t ^ (t >> 7)) * (t | 61)) & _M32)) & _M32
        return ((t ^ (t >> 14)) & _M32) / 4294967296

    return next_float


def gaussian(r):
    u = max(r(), 1e-12)
    return math.sqrt(-2 * math.log(u)) * math.cos(2 * math.pi * r())


def _teacher_weights():
    r = rng(1234)
    return np.array([[gaussian(r) for _ in range(FEATURES)] for _ in range(CLASSES)])


_W = _teacher_weights()


def teacher(x):
    """Labels rows of x (float32 [n, FEATURES]); sums in the same order as the TypeScript."""
    xd = x.astype(np.float64)
    scores = np.zeros((x.shape[0], CLASSES))
    for c in range(CLASSES):
        s = np.zeros(x.shape[0])
        for f in range(FEATURES):
            w, w2 = _W[c, f], _W[c, (f + 1) % FEATURES]
            s = s + (w * np.tanh(xd[:, f]) + 0.3 * w2 * xd[:, f] * xd[:, (f + 3) % FEATURES])
        scores[:, c] = s
    return scores.argmax(axis=1).astype(np.int64)  # first maximum wins, like the strict > in the loop


def site_data(index, n, split="train"):
    """The data of site `index` (0-based): `n` samples, shifted by the site. Returns (x float32 [n, 8], y int64 [n])."""
    r = rng(1000 + index * 17 + (7 if split == "val" else 0))
    shift = [(1.0 if f % 3 == index % 3 else -0.3) * (1 + index % 2) for f in range(FEATURES)]
    x = np.array([[gaussian(r) + shift[f] for f in range(FEATURES)] for _ in range(n)], dtype=np.float32)
    return x, teacher(x)
