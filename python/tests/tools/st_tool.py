"""safetensors helper for the cross-language tests (test/e2e/python/python-safetensors.test.ts).

    st_tool.py describe FILE      JSON: metadata and, per tensor, dtype, shape and decoded values
    st_tool.py copy IN OUT        read IN with flotilla.safetensors, write its tensors and metadata to OUT
    st_tool.py generate OUT       write every dtype with edge values (seeded), and describe them
    st_tool.py check FILE         exit 0 iff FILE holds exactly what `generate` writes

Values are decoded the Python way (numpy; bf16 via flotilla.bf16_to_f32) so the TypeScript side can
compare them with its own decoding: floats as numbers, or "nan"/"inf"/"-inf"/"-0"; 64-bit integers as strings.
"""
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

import flotilla  # noqa: E402
from flotilla import safetensors as st  # noqa: E402


def decode(a: np.ndarray) -> list:
    if a.dtype == flotilla.bfloat16:
        a = flotilla.bf16_to_f32(a)
    flat = a.reshape(-1)
    if a.dtype.kind == "f":
        out = []
        for v in flat.astype(np.float64).tolist():
            if math.isnan(v):
                out.append("nan")
            elif math.isinf(v):
                out.append("inf" if v > 0 else "-inf")
            elif v == 0 and math.copysign(1, v) < 0:
                out.append("-0")
            else:
                out.append(v)
        return out
    if a.dtype.itemsize == 8:
        return [str(v) for v in flat.tolist()]
    if a.dtype.kind == "b":
        return [int(v) for v in flat.tolist()]
    return flat.tolist()


def describe(tensors: dict, metadata: dict) -> dict:
    dtypes = {e.name: e.dtype for e in st.read_header(st.save(tensors)).tensors}
    return {
        "metadata": metadata,
        "tensors": [{"name": k, "dtype": dtypes[k], "shape": list(a.shape), "values": decode(a)} for k, a in tensors.items()],
    }


def generated() -> tuple[dict, dict]:
    rng = np.random.default_rng(2024)
    t = {
        "f64": np.array([np.pi, -0.0, np.inf, np.nan, 5e-324, -1.7976931348623157e308]),
        "f32": np.concatenate([rng.standard_normal(5).astype(np.float32), np.array([np.nan, -np.inf, 1.4e-45], np.float32)]),
        "f16": np.array([0.1, -0.0, 65504, 6e-8, np.inf, np.nan], dtype=np.float16).reshape(2, 3),
        "bf16": flotilla.f32_to_bf16(np.array([1.0, -3.140625, 1e38, -1e-38, np.inf, np.nan, -0.0], dtype=np.float32)),
        "i64": np.array([-(2**63), 2**63 - 1, 2**53 + 1, -1], dtype=np.int64),
        "i32": rng.integers(-(2**31), 2**31, size=(2, 2), dtype=np.int32),
        "i16": np.array([-32768, 32767, 0], dtype=np.int16),
        "i8": np.array([[-128], [127]], dtype=np.int8),
        "u8": np.array([0, 1, 128, 255], dtype=np.uint8),
        "bool": np.array([[True, False], [False, True]]),
        "ünïcode name/with.dots": np.array(42.5, dtype=np.float32),
        "empty": np.zeros((3, 0), dtype=np.int16),
    }
    return t, {"written_by": "python", "note": "ü ✓ \"quoted\""}


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else ""
    if cmd == "describe" and len(argv) == 2:
        tensors, meta = st.load_with_metadata(Path(argv[1]).read_bytes())
        print(json.dumps(describe(tensors, meta), ensure_ascii=False))
        return 0
    if cmd == "copy" and len(argv) == 3:
        tensors, meta = st.load_with_metadata(bytearray(Path(argv[1]).read_bytes()))
        st.save_file(tensors, argv[2], meta)
        return 0
    if cmd == "generate" and len(argv) == 2:
        tensors, meta = generated()
        st.save_file(tensors, argv[1], meta)
        print(json.dumps(describe(tensors, meta), ensure_ascii=False))
        return 0
    if cmd == "check" and len(argv) == 2:
        want, want_meta = generated()
        got, meta = st.load_with_metadata(Path(argv[1]).read_bytes())
        problems = [] if meta == want_meta else [f"metadata {meta!r} != {want_meta!r}"]
        if list(got) != list(want):
            problems.append(f"names {list(got)} != {list(want)}")
        for k in want:
            if k in got:
                g, w = got[k], want[k]
                if (g.dtype, g.shape, g.tobytes()) != (w.dtype, w.shape, w.tobytes()):
                    problems.append(f"{k}: {g.dtype}{g.shape} {g.tobytes().hex()} != {w.dtype}{w.shape} {w.tobytes().hex()}")
        print("\n".join(problems) or "identical")
        return 1 if problems else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
