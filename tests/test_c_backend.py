"""Every LUT kernel through TVM's C backend (compiled by gcc) equals its LLVM build.

The C backend once miscompiled explicitly unrolled loops; the deployed models are plain C,
so each kernel kind is checked here bit for bit (integer path) or to 1e-6 (float path).
"""

import numpy as np
import pytest
from test_kernels import CONVS, build_and_run, encode

from tvmq.kernels import (
    int_level_table,
    lut_conv_compute,
    lut_conv_int_compute,
    lut_conv_reference,
    lut_decode_compute,
    lut_matmul_compute,
    lut_matmul_int_compute,
    out_scales,
    quantize_compute,
)

RNG = np.random.default_rng(5)


def both(tmp_path, make, arrays, shape, dtype="float32"):
    llvm = build_and_run(make, arrays, shape, dtype)
    c = build_and_run(make, arrays, shape, dtype, target="c", tmp_path=tmp_path)
    return llvm, c


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("case", ["conv2d-NHWC", "depthwise-NHWC", "conv1d-NCW"])
def test_conv_kernels_c_equals_llvm(tmp_path, case, bits):
    c = dict(CONVS[case])
    xs, ws, axis = c.pop("x"), c.pop("w"), c.pop("axis")
    w = RNG.laplace(size=ws).astype(np.float32)
    packed, levels, spec, _ = encode(w, "kmeans", bits, axis)
    x = RNG.standard_normal(xs).astype(np.float32)
    out_shape = lut_conv_reference(x, w, **c).shape
    llvm, cc = both(
        tmp_path,
        lambda a, p, lv: lut_conv_compute(a, p, lv, spec, **c),
        [x, packed, levels],
        out_shape,
    )
    np.testing.assert_allclose(cc, llvm, rtol=1e-6, atol=1e-6)
    table, w_scale = int_level_table(levels)
    oscale = out_scales(spec, w_scale, 0.03, ws[c["kernel_layout"].index("O")])
    q = RNG.integers(-128, 128, xs).astype(np.int8)
    llvm, cc = both(
        tmp_path,
        lambda a, p, t, o: lut_conv_int_compute(a, p, t, o, spec, x_zero=3, **c),
        [q, packed, table, oscale],
        out_shape,
    )
    np.testing.assert_array_equal(cc, llvm)


def test_matmul_decode_quantize_c_equals_llvm(tmp_path):
    w = RNG.laplace(size=(12, 40)).astype(np.float32)
    packed, levels, spec, _ = encode(w, "kmeans", 3, axis=0)
    x = RNG.standard_normal((2, 40)).astype(np.float32)
    llvm, cc = both(
        tmp_path,
        lambda a, p, lv: lut_matmul_compute(a, p, lv, spec, transposed=True),
        [x, packed, levels],
        (2, 12),
    )
    np.testing.assert_allclose(cc, llvm, rtol=1e-6, atol=1e-6)
    table, w_scale = int_level_table(levels)
    oscale = out_scales(spec, w_scale, 0.02, 12)
    q = RNG.integers(-128, 128, (2, 40)).astype(np.int8)
    llvm, cc = both(
        tmp_path,
        lambda a, p, t, o: lut_matmul_int_compute(a, p, t, o, spec, x_zero=0, transposed=True),
        [q, packed, table, oscale],
        (2, 12),
    )
    np.testing.assert_array_equal(cc, llvm)
    llvm, cc = both(
        tmp_path, lambda p, lv: lut_decode_compute(p, lv, spec), [packed, levels], w.shape
    )
    np.testing.assert_array_equal(cc, llvm)
    x = (RNG.standard_normal((4, 33)) * 3).astype(np.float32)
    llvm, cc = both(tmp_path, lambda a: quantize_compute(a, 0.041, 5, 8), [x], x.shape, "int8")
    np.testing.assert_array_equal(cc, llvm)
