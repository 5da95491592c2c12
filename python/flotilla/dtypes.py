"""Element types, named as in safetensors (F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL).

numpy has no bfloat16, so a BF16 tensor is held as its raw 16-bit patterns in
an array of ``bfloat16``: a one-field structured dtype over ``<u2``. The tag is
what lets ``send()`` write it back as BF16 (a plain uint16 array would be
ambiguous), and it refuses arithmetic, so raw bits are never mistaken for
numbers. Convert with ``bf16_to_f32`` / ``f32_to_bf16``; view the bits with
``bf16_bits`` / ``as_bf16`` (no copy).
"""
from __future__ import annotations

import numpy as np

#: numpy dtype of a BF16 tensor: raw bfloat16 bits, tagged so they survive a round trip.
bfloat16 = np.dtype([("bf16", "<u2")])

#: safetensors name -> numpy dtype (little-endian, as the format stores them).
NUMPY_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": bfloat16,
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

DTYPES: tuple[str, ...] = tuple(NUMPY_DTYPES)

_BY_KIND: dict[tuple[str, int], str] = {
    ("f", 8): "F64",
    ("f", 4): "F32",
    ("f", 2): "F16",
    ("i", 8): "I64",
    ("i", 4): "I32",
    ("i", 2): "I16",
    ("i", 1): "I8",
    ("u", 1): "U8",
    ("b", 1): "BOOL",
}


def dtype_size(name: str) -> int:
    return NUMPY_DTYPES[name].itemsize


def safetensors_dtype(dt: np.dtype, what: str = "array") -> str:
    """The safetensors name of a numpy dtype; a clear error for types the format set lacks."""
    dt = np.dtype(dt)
    if dt == bfloat16:
        return "BF16"
    name = _BY_KIND.get((dt.kind, dt.itemsize))
    if name is None:
        hint = ""
        if dt.kind == "u" and dt.itemsize == 2:
            hint = " (for bfloat16 raw bits, tag them with flotilla.as_bf16(a))"
        raise TypeError(f"{what}: dtype {dt} is not supported; use one of {', '.join(DTYPES)}{hint}")
    return name


# ---- bfloat16 ---------------------------------------------------------------

def as_bf16(bits: np.ndarray) -> np.ndarray:
    """Tags an array of uint16 (or int16) bfloat16 bit patterns as BF16, without copying."""
    a = np.asarray(bits)
    if a.dtype == bfloat16:
        return a
    if a.dtype.kind not in "ui" or a.dtype.itemsize != 2:
        raise TypeError(f"as_bf16 needs 16-bit integer bit patterns, got {a.dtype}")
    return _view_last(a.astype("<u2", copy=False), bfloat16)


def bf16_bits(a: np.ndarray) -> np.ndarray:
    """The uint16 bit patterns of a BF16 array, without copying."""
    a = np.asarray(a)
    if a.dtype == bfloat16:
        return _view_last(a, np.dtype("<u2"))
    if a.dtype.kind in "ui" and a.dtype.itemsize == 2:
        return a
    raise TypeError(f"expected a bfloat16 array (flotilla.bfloat16 or uint16 bits), got {a.dtype}")


def bf16_to_f32(a: np.ndarray) -> np.ndarray:
    """bfloat16 (tagged or uint16 bits) -> float32. Exact."""
    bits = bf16_bits(a).astype(np.uint32) << np.uint32(16)
    return bits.view(np.float32)


def f32_to_bf16(a: np.ndarray) -> np.ndarray:
    """float values -> BF16 (tagged), rounding to nearest even; NaN stays NaN (quiet)."""
    x = np.asarray(a, dtype=np.float32).copy(order="C").view(np.uint32).astype(np.uint64)
    u = np.uint64  # typed constants: python ints would make numpy cast 0-d arrays to float
    nan = ((x & u(0x7F800000)) == u(0x7F800000)) & ((x & u(0x7FFFFF)) != u(0))
    lsb = (x >> u(16)) & u(1)
    rounded = ((x + u(0x7FFF) + lsb) >> u(16)) & u(0xFFFF)
    quiet = ((x >> u(16)) | u(0x40)) & u(0xFFFF)
    return as_bf16(np.where(nan, quiet, rounded).astype("<u2"))


def _view_last(a: np.ndarray, dt: np.dtype) -> np.ndarray:
    # .view() needs a contiguous last axis; 0-d and empty arrays view fine after reshape.
    if a.ndim == 0:
        return a.reshape(1).view(dt).reshape(())
    if not a.flags.c_contiguous:
        a = a.copy(order="C")
    return a.view(dt)
