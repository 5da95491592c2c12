import unittest

import support  # noqa: F401  (sys.path)
import numpy as np

import flotilla
from flotilla.dtypes import safetensors_dtype


class Bf16Test(unittest.TestCase):
    def test_known_bit_patterns(self):
        cases = [  # a list, not a dict: 0.0 and -0.0 are equal keys
            (1.0, 0x3F80),
            (-2.0, 0xC000),
            (0.0, 0x0000),
            (-0.0, 0x8000),
            (float("inf"), 0x7F80),
            (float("-inf"), 0xFF80),
            (1.0 + 2**-8, 0x3F80),  # tie: rounds to even (down)
            (1.0 + 3 * 2**-8, 0x3F82),  # tie: rounds to even (up)
            (1.0 + 2**-8 + 2**-20, 0x3F81),  # above the tie: up
            (3.4028234663852886e38, 0x7F80),  # float32 max rounds to infinity
        ]
        got = flotilla.bf16_bits(flotilla.f32_to_bf16(np.array([v for v, _ in cases], dtype=np.float32)))
        self.assertEqual([hex(x) for x in got], [hex(b) for _, b in cases])

    def test_nan_stays_quiet_nan(self):
        nan_bits = np.array([0x7F800001, 0xFFC00000, 0x7F810000], dtype=np.uint32).view(np.float32)
        out = flotilla.bf16_bits(flotilla.f32_to_bf16(nan_bits))
        self.assertTrue(np.all(np.isnan(flotilla.bf16_to_f32(out))))
        self.assertTrue(np.all(out & 0x40))

    def test_every_non_nan_pattern_round_trips_exactly(self):
        bits = np.arange(1 << 16, dtype=np.uint16)
        f = flotilla.bf16_to_f32(bits)
        keep = ~np.isnan(f)
        back = flotilla.bf16_bits(flotilla.f32_to_bf16(f[keep]))
        np.testing.assert_array_equal(back, bits[keep])
        self.assertEqual(int(keep.sum()), 65536 - 254)  # 127 NaN mantissas per sign

    def test_tagging_is_zero_copy_and_refuses_arithmetic(self):
        bits = np.array([[0x3F80, 0x4000]], dtype=np.uint16)
        tagged = flotilla.as_bf16(bits)
        self.assertEqual(tagged.dtype, flotilla.bfloat16)
        self.assertEqual(tagged.shape, (1, 2))
        self.assertTrue(np.shares_memory(tagged, bits))
        self.assertTrue(np.shares_memory(flotilla.bf16_bits(tagged), bits))
        with self.assertRaises(TypeError):
            tagged + tagged  # raw bits are not numbers
        np.testing.assert_array_equal(flotilla.bf16_to_f32(tagged), [[1.0, 2.0]])

    def test_zero_dim(self):
        t = flotilla.f32_to_bf16(np.float32(2.0))
        self.assertEqual(t.shape, ())
        self.assertEqual(float(flotilla.bf16_to_f32(t)), 2.0)


class DtypeNamesTest(unittest.TestCase):
    def test_names(self):
        pairs = {
            np.float64: "F64", np.float32: "F32", np.float16: "F16", np.int64: "I64", np.int32: "I32",
            np.int16: "I16", np.int8: "I8", np.uint8: "U8", np.bool_: "BOOL",
        }
        for t, name in pairs.items():
            self.assertEqual(safetensors_dtype(np.dtype(t)), name)
        self.assertEqual(safetensors_dtype(flotilla.bfloat16), "BF16")
        self.assertEqual(safetensors_dtype(np.dtype(">f4")), "F32")

    def test_unsupported_names_the_fix(self):
        with self.assertRaisesRegex(TypeError, r"uint16.*as_bf16"):
            safetensors_dtype(np.dtype(np.uint16), "tensor x")
        with self.assertRaisesRegex(TypeError, "complex128 is not supported"):
            safetensors_dtype(np.dtype(np.complex128))


if __name__ == "__main__":
    unittest.main()
