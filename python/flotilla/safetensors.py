"""safetensors in pure numpy (no ``safetensors`` wheel is installable here).

Layout: 8-byte little-endian header size N, N bytes of JSON
``{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}}``
padded with spaces so the data starts 8-byte aligned (as Hugging Face does),
then the tensors' bytes tightly packed. The header is written exactly as
src/core/safetensors-header.ts writes it (compact JSON, metadata first, tensors
in the given order), so both languages produce identical bytes.

Reading is zero-copy: each tensor is an ``np.frombuffer`` view of the buffer
(writable when the buffer is, e.g. a ``bytearray``). Misaligned tensors (files
whose writer did not pad) are copied so every array is aligned.
"""
from __future__ import annotations

import json
import mmap as _mmap
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from .dtypes import DTYPES, NUMPY_DTYPES, bfloat16, dtype_size, safetensors_dtype

#: Refuse absurd headers before allocating for them (the Rust implementation uses 100 MB).
MAX_HEADER_BYTES = 100_000_000


class SafetensorsError(ValueError):
    """A malformed safetensors file or an unwritable tensor."""


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    #: byte offsets from the start of the data section
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    #: sorted by data offset, which is also the order of the data
    tensors: tuple[TensorEntry, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    #: 8 + header JSON length: where the data begins
    data_start: int = 8
    data_bytes: int = 0


# ---- writing --------------------------------------------------------------------

def as_le_array(value: Any, name: str) -> np.ndarray:
    """A C-contiguous little-endian array of a supported dtype (copies only when it must)."""
    if not isinstance(value, (np.ndarray, np.generic)):
        raise SafetensorsError(f'tensor "{name}": expected a numpy array, got {type(value).__name__}')
    a = np.asarray(value)
    try:
        safetensors_dtype(a.dtype, f'tensor "{name}"')
    except TypeError as e:
        raise SafetensorsError(str(e)) from None
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    # not np.ascontiguousarray: it turns 0-d arrays into 1-d ones
    return a if a.flags.c_contiguous else a.copy(order="C")


def tensor_bytes(a: np.ndarray) -> memoryview:
    """The raw bytes of a contiguous array, without copying."""
    return memoryview(a.reshape(-1).view(np.uint8)) if a.size else memoryview(b"")


def build_header(tensors: Iterable[tuple[str, str, tuple[int, ...]]], metadata: Mapping[str, str] | None = None) -> tuple[bytes, Header]:
    """Lays tensors (name, dtype, shape) out in the given order: header bytes and layout."""
    obj: dict[str, Any] = {}
    meta = dict(metadata or {})
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise SafetensorsError(f"__metadata__ must map strings to strings, got {k!r}: {type(v).__name__}")
    if meta:
        obj["__metadata__"] = meta
    entries: list[TensorEntry] = []
    offset = 0
    for name, dtype, shape in tensors:
        if not isinstance(name, str):
            raise SafetensorsError(f"tensor names must be strings, got {name!r}")
        if name == "__metadata__":
            raise SafetensorsError('a tensor may not be named "__metadata__"')
        if name in obj:
            raise SafetensorsError(f'duplicate tensor name "{name}"')
        shape = tuple(int(d) for d in shape)
        n = dtype_size(dtype)
        for d in shape:
            n *= d
        obj[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        entries.append(TensorEntry(name, dtype, shape, offset, offset + n))
        offset += n
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    header = Header(tuple(entries), meta, 8 + len(text), offset)
    return struct.pack("<Q", len(text)) + text, header


def encode(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> tuple[bytes, list[memoryview], int]:
    """The header bytes, the tensors' byte views (no copies) and the total length."""
    arrays = [(name, as_le_array(v, name)) for name, v in tensors.items()]
    head, layout = build_header(((n, safetensors_dtype(a.dtype), a.shape) for n, a in arrays), metadata)
    return head, [tensor_bytes(a) for _, a in arrays], layout.data_start + layout.data_bytes


def save(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
    """safetensors bytes of a dict of numpy arrays."""
    head, parts, total = encode(tensors, metadata)
    out = bytearray(head)
    for p in parts:
        out += p
    assert len(out) == total
    return bytes(out)


def save_file(tensors: Mapping[str, Any], path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None) -> None:
    """Writes the file via a temporary name and a rename, so a reader never sees half a file."""
    head, parts, _ = encode(tensors, metadata)
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(head)
            for p in parts:
                f.write(p)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---- reading --------------------------------------------------------------------

def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise SafetensorsError(f'header has the key "{k}" twice')
        out[k] = v
    return out


def _is_uint(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def parse_header(json_bytes: bytes | memoryview, total_bytes: int | None = None) -> Header:
    """Validates the JSON header; ``total_bytes`` (the file size), when known, must match what it declares."""
    try:
        obj = json.loads(bytes(json_bytes).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except SafetensorsError:
        raise
    except (UnicodeDecodeError, ValueError) as e:
        raise SafetensorsError(f"header is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise SafetensorsError("header must be a JSON object")
    metadata: dict[str, str] = {}
    entries: list[TensorEntry] = []
    for name, v in obj.items():
        if name == "__metadata__":
            if not isinstance(v, dict):
                raise SafetensorsError("__metadata__ must be an object of strings")
            for k, s in v.items():
                if not isinstance(s, str):
                    raise SafetensorsError(f"__metadata__.{k} must be a string, got {type(s).__name__}")
                metadata[k] = s
            continue
        if not isinstance(v, dict):
            raise SafetensorsError(f'tensor "{name}": entry must be an object')
        for key in v:
            if key not in ("dtype", "shape", "data_offsets"):
                raise SafetensorsError(f'tensor "{name}": unknown field "{key}"')
        dtype = v.get("dtype")
        if dtype not in NUMPY_DTYPES:
            raise SafetensorsError(f'tensor "{name}": unknown dtype {json.dumps(dtype)} (supported: {", ".join(DTYPES)})')
        shape = v.get("shape")
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise SafetensorsError(f'tensor "{name}": shape must be a list of non-negative integers, got {json.dumps(shape)}')
        off = v.get("data_offsets")
        if not isinstance(off, list) or len(off) != 2 or not all(_is_uint(x) for x in off):
            raise SafetensorsError(f'tensor "{name}": data_offsets must be [begin, end] non-negative integers, got {json.dumps(off)}')
        begin, end = off
        if end < begin:
            raise SafetensorsError(f'tensor "{name}": data_offsets end {end} is before begin {begin}')
        want = dtype_size(dtype)
        for d in shape:
            want *= d
        if end - begin != want:
            dims = ", ".join(str(d) for d in shape)
            raise SafetensorsError(
                f'tensor "{name}": data_offsets span {end - begin} bytes but shape [{dims}] x {dtype} ({dtype_size(dtype)} B) needs {want}'
            )
        entries.append(TensorEntry(name, dtype, tuple(shape), begin, end))
    entries.sort(key=lambda t: (t.begin, t.end))
    cursor = 0
    for t in entries:
        if t.begin < cursor:
            raise SafetensorsError(f'tensor "{t.name}": data_offsets [{t.begin}, {t.end}] overlap the previous tensor (ends at {cursor})')
        if t.begin > cursor:
            raise SafetensorsError(
                f'tensor "{t.name}": gap in data before offset {t.begin} (previous tensor ends at {cursor}); data must be tightly packed'
            )
        cursor = t.end
    data_start = 8 + len(json_bytes)
    if total_bytes is not None and data_start + cursor != total_bytes:
        where = "out of range: past the end of the file" if data_start + cursor > total_bytes else "short of the end of the file (trailing bytes)"
        raise SafetensorsError(f"data_offsets {where}: header declares {cursor} data bytes, file has {total_bytes - data_start}")
    return Header(tuple(entries), metadata, data_start, cursor)


def read_header(buf: Any) -> Header:
    """Parses and validates the header of a whole safetensors buffer (bytes, bytearray, memoryview, mmap)."""
    mv = memoryview(buf).cast("B")
    total = mv.nbytes
    if total < 8:
        raise SafetensorsError(f"file too short: {total} bytes, need at least 8 for the header size")
    (n,) = struct.unpack_from("<Q", mv, 0)
    if n > MAX_HEADER_BYTES:
        raise SafetensorsError(f"header size {n} exceeds the limit of {MAX_HEADER_BYTES} bytes")
    if 8 + n > total:
        raise SafetensorsError(f"header size {n} points past the end of the file ({total} bytes)")
    return parse_header(mv[8 : 8 + n], total)


def view_tensors(buf: Any, header: Header) -> dict[str, np.ndarray]:
    """Arrays viewing ``buf`` per ``header``, in data order (aligned views; misaligned ones copied)."""
    out: dict[str, np.ndarray] = {}
    for t in header.tensors:
        dt = NUMPY_DTYPES[t.dtype]
        count = (t.end - t.begin) // dt.itemsize
        if count == 0:
            out[t.name] = np.empty(t.shape, dtype=dt)
            continue
        a = np.frombuffer(buf, dtype=dt, count=count, offset=header.data_start + t.begin)
        if not a.flags.aligned:
            a = a.copy()
        out[t.name] = a.reshape(t.shape)
    return out


def load(buf: Any) -> dict[str, np.ndarray]:
    """Tensors of a safetensors buffer, as zero-copy views (writable iff ``buf`` is)."""
    return view_tensors(buf, read_header(buf))


def load_with_metadata(buf: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    h = read_header(buf)
    return view_tensors(buf, h), dict(h.metadata)


def load_file(path: str | os.PathLike[str], mmap: bool | str = False) -> dict[str, np.ndarray]:
    """Reads a file into memory; ``mmap=True`` maps it read-only (no copy at all); ``mmap="copy"`` maps it
    copy-on-write: writable arrays whose pages are read from the file when first touched and copied
    only when written, and changes never reach the file (a model larger than memory, trained in place)."""
    if mmap not in (False, True, "copy"):
        raise ValueError(f"mmap must be False, True or 'copy', got {mmap!r}")
    with open(path, "rb") as f:
        if mmap:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise SafetensorsError(f"{os.fspath(path)}: file too short: 0 bytes, need at least 8 for the header size")
            buf: Any = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_COPY if mmap == "copy" else _mmap.ACCESS_READ)
        else:
            buf = bytearray(os.fstat(f.fileno()).st_size)
            f.readinto(buf)
    try:
        return load(buf)
    except SafetensorsError as e:
        raise SafetensorsError(f"{os.fspath(path)}: {e}") from None


__all__ = [
    "MAX_HEADER_BYTES",
    "SafetensorsError",
    "TensorEntry",
    "Header",
    "bfloat16",
    "build_header",
    "parse_header",
    "read_header",
    "view_tensors",
    "encode",
    "save",
    "save_file",
    "load",
    "load_with_metadata",
    "load_file",
]
