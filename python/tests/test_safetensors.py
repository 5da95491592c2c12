import json
import os
import struct
import tempfile
import unittest

import support  # noqa: F401  (sys.path)
import numpy as np

import flotilla
from flotilla import safetensors as st
from flotilla.safetensors import SafetensorsError

# src/core/safetensors-header.ts buildHeader() output for the same tensors and metadata (node, 2024):
# compact JSON, metadata first, non-ASCII kept as UTF-8, control characters as \u00XX, space padding.
TS_HEADER_HEX = (
    "e0000000000000007b225f5f6d657461646174615f5f223a7b22666f726d6174223a227074222c226e6f74655c225c6e223a22"
    "c3bc6ec3af5c7530303031227d2c2277223a7b226474797065223a22463332222c227368617065223a5b325d2c22646174615f"
    "6f666673657473223a5b302c385d7d2c22c3a92062223a7b226474797065223a224938222c227368617065223a5b335d2c2264"
    "6174615f6f666673657473223a5b382c31315d7d2c2273223a7b226474797065223a22424f4f4c222c227368617065223a5b5d"
    "2c22646174615f6f666673657473223a5b31312c31325d7d7d202020"
)


def every_dtype() -> dict:
    rng = np.random.default_rng(7)
    return {
        "f64": rng.standard_normal((2, 3)),
        "f32": rng.standard_normal((4,)).astype(np.float32),
        "f16": np.array([1.5, -65504, 6e-8, np.inf], dtype=np.float16),
        "bf16": flotilla.f32_to_bf16(np.array([[1.0, -3.5], [1e30, -1e-30]])),
        "i64": np.array([-(2**63), 2**63 - 1, 0], dtype=np.int64),
        "i32": np.array([[-(2**31)], [2**31 - 1]], dtype=np.int32),
        "i16": np.array([-32768, 32767], dtype=np.int16),
        "i8": np.array([-128, 127, 5], dtype=np.int8),
        "u8": np.arange(256, dtype=np.uint8).reshape(16, 16),
        "bool": np.array([True, False, True]),
        "scalar": np.array(3.25, dtype=np.float32),
        "empty": np.zeros((0, 5), dtype=np.float32),
    }


def raw(header: dict, data: bytes = b"", pad: bool = True) -> bytes:
    text = json.dumps(header).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


class RoundTripTest(unittest.TestCase):
    def assert_same(self, a: dict, b: dict) -> None:
        self.assertEqual(list(a), list(b))
        for k in a:
            self.assertEqual(a[k].dtype, b[k].dtype, k)
            self.assertEqual(a[k].shape, b[k].shape, k)
            self.assertEqual(a[k].tobytes(), b[k].tobytes(), k)

    def test_every_dtype_round_trips_bit_exact_and_in_order(self):
        t = every_dtype()
        data = st.save(t, {"format": "np"})
        back, meta = st.load_with_metadata(data)
        self.assert_same(t, back)
        self.assertEqual(meta, {"format": "np"})
        dtypes = {e.name: e.dtype for e in st.read_header(data).tensors}
        self.assertEqual(dtypes["bf16"], "BF16")
        self.assertEqual(dtypes["bool"], "BOOL")
        self.assertEqual(len(data), st.read_header(data).data_start + sum(a.nbytes for a in t.values()))

    def test_header_bytes_equal_the_typescript_writer(self):
        head, _ = st.build_header([("w", "F32", (2,)), ("é b", "I8", (3,)), ("s", "BOOL", ())], {"format": "pt", 'note"\n': "ünï\x01"})
        self.assertEqual(head.hex(), TS_HEADER_HEX)

    def test_data_starts_8_aligned_for_any_name_length(self):
        for n in range(1, 20):
            data = st.save({"x" * n: np.zeros(1, np.float64)})
            h = st.read_header(data)
            self.assertEqual(h.data_start % 8, 0, n)
            self.assertTrue(data[h.data_start - 1 : h.data_start] in (b" ", b"}"))

    def test_load_is_zero_copy_and_writable_over_a_bytearray(self):
        buf = bytearray(st.save({"a": np.arange(4, dtype=np.float32), "b": np.ones(3, np.int64)}))
        t = st.load(buf)
        self.assertTrue(t["a"].flags.writeable and not t["a"].flags.owndata)
        t["a"][0] = 42.0
        self.assertEqual(st.load(buf)["a"][0], 42.0)  # wrote through to the buffer
        self.assertFalse(st.load(bytes(buf))["a"].flags.writeable)

    def test_misaligned_data_is_copied_to_aligned_arrays(self):
        # an unpadded header puts the F64 data at an odd offset: values must still be right
        values = np.array([1.25, -2.5], dtype=np.float64)
        data = raw({"x": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}}, values.tobytes(), pad=False)
        self.assertNotEqual(st.read_header(data).data_start % 8, 0)
        x = st.load(data)["x"]
        self.assertTrue(x.flags.aligned)
        np.testing.assert_array_equal(x, values)

    def test_header_order_is_independent_of_data_order(self):
        # e.g. files written by Hugging Face: keys in any order, data sorted by offset
        a, b = np.array([1, 2], np.int32), np.array([3.0], np.float64)
        data = raw({"b": {"dtype": "F64", "shape": [1], "data_offsets": [8, 16]}, "a": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}}, a.tobytes() + b.tobytes())
        t = st.load(data)
        self.assertEqual(list(t), ["a", "b"])
        np.testing.assert_array_equal(t["a"], a)
        np.testing.assert_array_equal(t["b"], b)

    def test_non_contiguous_and_big_endian_inputs_are_written_little_endian(self):
        m = np.arange(12, dtype=np.float32).reshape(3, 4)
        t = {"t": m.T, "be": np.array([1, 256], dtype=">i4")}
        back = st.load(st.save(t))
        np.testing.assert_array_equal(back["t"], m.T)
        self.assertEqual(back["be"].dtype, np.dtype("<i4"))
        np.testing.assert_array_equal(back["be"], [1, 256])

    def test_files_and_mmap(self):
        t = every_dtype()
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "m.safetensors")
            st.save_file(t, p, {"k": "v"})
            self.assertEqual(os.listdir(d), ["m.safetensors"])  # no temp file left
            self.assert_same(t, st.load_file(p))
            self.assert_same(t, st.load_file(p, mmap=True))
            with open(p, "r+b") as f:
                f.truncate(os.path.getsize(p) - 1)
            with self.assertRaisesRegex(SafetensorsError, r"m\.safetensors: data_offsets out of range"):
                st.load_file(p)


class ValidationTest(unittest.TestCase):
    def bad(self, data: bytes, pattern: str) -> None:
        with self.assertRaisesRegex(SafetensorsError, pattern):
            st.load(data)

    def test_structure_errors(self):
        self.bad(b"\x01\x00", "too short")
        self.bad(struct.pack("<Q", 200_000_000) + b"{}", "exceeds the limit")
        self.bad(struct.pack("<Q", 50) + b"{}", "points past the end")
        self.bad(struct.pack("<Q", 4) + b"{x}]", "not valid JSON")
        self.bad(struct.pack("<Q", 2) + b"\xff\xfe", "not valid JSON")
        self.bad(raw([]), "must be a JSON object")  # type: ignore[arg-type]
        self.bad(struct.pack("<Q", 16) + b'{"a":{},"a":{}} ', 'key "a" twice')

    def test_entry_errors(self):
        f = lambda **e: raw({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], **e}}, b"\0" * 8)  # noqa: E731
        self.bad(f(dtype="U16"), r'tensor "x": unknown dtype "U16"')
        self.bad(f(shape=[2, -1]), r'tensor "x": shape must be a list of non-negative integers')
        self.bad(f(shape=[True, 2]), "shape must be a list")
        self.bad(f(data_offsets=[0]), r"data_offsets must be \[begin, end\]")
        self.bad(f(data_offsets=[8, 0]), "end 0 is before begin 8")
        self.bad(f(shape=[3]), r"span 8 bytes but shape \[3\] x F32 \(4 B\) needs 12")
        self.bad(f(extra=1), 'unknown field "extra"')
        self.bad(raw({"__metadata__": {"k": 1}}), r"__metadata__\.k must be a string")
        self.bad(raw({"x": [1]}), "entry must be an object")

    def test_layout_errors(self):
        two = lambda a, b: {"a": {"dtype": "U8", "shape": [4], "data_offsets": a}, "b": {"dtype": "U8", "shape": [4], "data_offsets": b}}  # noqa: E731
        self.bad(raw(two([0, 4], [2, 6]), b"\0" * 6), "overlap the previous tensor")
        self.bad(raw(two([0, 4], [6, 10]), b"\0" * 10), "gap in data before offset 6")
        self.bad(raw(two([0, 4], [4, 8]), b"\0" * 9), "trailing bytes")
        self.bad(raw(two([0, 4], [4, 8]), b"\0" * 7), "past the end of the file")

    def test_write_errors(self):
        with self.assertRaisesRegex(SafetensorsError, r'tensor "u": dtype uint16 is not supported.*as_bf16'):
            st.save({"u": np.zeros(2, np.uint16)})
        with self.assertRaisesRegex(SafetensorsError, r'tensor "l": expected a numpy array, got list'):
            st.save({"l": [1, 2]})
        with self.assertRaisesRegex(SafetensorsError, "__metadata__"):
            st.save({"__metadata__": np.zeros(1)})
        with self.assertRaisesRegex(SafetensorsError, "strings to strings"):
            st.save({"a": np.zeros(1)}, {"n": 1})  # type: ignore[dict-item]


if __name__ == "__main__":
    unittest.main()
