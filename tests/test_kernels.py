"""LUT kernels built by TVM (llvm) against their numpy references."""

import numpy as np
import pytest
import tvm
from tvm import te

import tvmq
from tvmq.kernels import (
    LutWeight,
    lut_conv_compute,
    lut_conv_reference,
    lut_decode_compute,
    lut_decode_reference,
    lut_matmul_compute,
    lut_matmul_reference,
)
from tvmq.ops import lut_decode_constants

RNG = np.random.default_rng(0)
TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 1})


def encode(w, scheme, bits, axis, group_size=None):
    cb = tvmq.fit(w, scheme, bits=bits, axis=axis, group_size=group_size)
    packed, levels, spec = lut_decode_constants(cb, w)
    return packed.value.numpy(), levels.value.numpy(), spec, cb


def build_and_run(make, arrays, out_shape, dtype="float32", target=TARGET, tmp_path=None):
    """Build the TE kernel ``make(*placeholders)`` and run it on ``arrays``. With the C
    target the generated source is compiled by gcc (``export_library``) and loaded."""
    ph = [te.placeholder(a.shape, str(a.dtype), f"in{i}") for i, a in enumerate(arrays)]
    out = make(*ph)
    assert tuple(int(s) for s in out.shape) == tuple(out_shape)
    lib = tvm.compile(tvm.IRModule({"main": te.create_prim_func([*ph, out])}), target=target)
    if tmp_path is not None:
        # a fresh name each time: dlopen hands back an already loaded library by path
        path = str(tmp_path / f"kernel{len(list(tmp_path.iterdir()))}.so")
        lib.export_library(path)
        lib = tvm.runtime.load_module(path)
    res = tvm.runtime.tensor(np.zeros(out_shape, dtype))
    lib["main"](*[tvm.runtime.tensor(a) for a in arrays], res)
    return res.numpy()


def assert_close(got, ref):
    scale = max(float(np.abs(ref).max()), 1e-30)
    assert float(np.abs(got - ref).max()) / scale <= 1e-5


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("scheme", ["kmeans", "uniform", "nf"])
def test_decode_matches_codebook(bits, scheme):
    w = RNG.laplace(size=(6, 5, 7)).astype(np.float32)
    packed, levels, spec, cb = encode(w, scheme, bits, axis=1)
    ref = lut_decode_reference(packed, levels, spec)
    np.testing.assert_array_equal(ref, cb.quantize(w))
    got = build_and_run(lambda p, lv: lut_decode_compute(p, lv, spec), [packed, levels], w.shape)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("group_size", [None, 8])
def test_matmul(bits, transposed, group_size):
    k, n = 24, 10
    w = RNG.laplace(size=(n, k) if transposed else (k, n)).astype(np.float32)
    axis = 0 if transposed else 1
    packed, levels, spec, cb = encode(w, "kmeans", bits, axis, group_size)
    x = RNG.standard_normal((3, k)).astype(np.float32)
    got = build_and_run(
        lambda a, p, lv: lut_matmul_compute(a, p, lv, spec, transposed=transposed),
        [x, packed, levels],
        (3, n),
    )
    assert_close(got, lut_matmul_reference(x, cb.quantize(w), transposed=transposed))


CONVS = {
    "conv2d-NHWC": dict(
        x=(1, 9, 8, 6), w=(3, 3, 6, 8), axis=3, strides=(2, 1), padding=(1, 0, 1, 1),
        dilation=(1, 1), groups=1, data_layout="NHWC", kernel_layout="HWIO",
    ),
    "conv2d-NCHW": dict(
        x=(2, 6, 7, 7), w=(8, 6, 3, 3), axis=0, strides=(1, 1), padding=(1, 1, 1, 1),
        dilation=(2, 2), groups=1, data_layout="NCHW", kernel_layout="OIHW",
    ),
    "depthwise-NHWC": dict(
        x=(1, 7, 6, 8), w=(3, 3, 8, 1), axis=2, strides=(1, 1), padding=(1, 1, 1, 1),
        dilation=(1, 1), groups=8, data_layout="NHWC", kernel_layout="HWOI",
    ),
    "grouped-NCHW": dict(
        x=(1, 8, 6, 6), w=(4, 4, 3, 3), axis=0, strides=(1, 1), padding=(0, 0, 0, 0),
        dilation=(1, 1), groups=2, data_layout="NCHW", kernel_layout="OIHW",
    ),
    "conv1d-NCW": dict(
        x=(1, 4, 20), w=(6, 4, 5), axis=0, strides=(2,), padding=(2, 1),
        dilation=(1,), groups=1, data_layout="NCW", kernel_layout="OIW",
    ),
}  # fmt: skip


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("case", list(CONVS))
@pytest.mark.parametrize("scheme", ["kmeans", "tfx"])
def test_conv(case, bits, scheme):
    c = dict(CONVS[case])
    xs, ws, axis = c.pop("x"), c.pop("w"), c.pop("axis")
    w = (RNG.laplace(size=ws) * 0.3).astype(np.float32)
    packed, levels, spec, cb = encode(w, scheme, bits, axis)
    x = RNG.standard_normal(xs).astype(np.float32)
    ref = lut_conv_reference(x, cb.quantize(w), **c)
    got = build_and_run(
        lambda a, p, lv: lut_conv_compute(a, p, lv, spec, **c), [x, packed, levels], ref.shape
    )
    assert_close(got, ref)


def test_conv_reference_agrees_with_tvm_topi():
    """The numpy reference itself, against TVM's conv2d on the same float weights."""
    from tvm import topi

    x = RNG.standard_normal((1, 6, 8, 8)).astype(np.float32)
    w = RNG.standard_normal((4, 6, 3, 3)).astype(np.float32)
    ref = lut_conv_reference(
        x, w, strides=(2, 1), padding=(1, 0, 0, 1), dilation=(1, 1), groups=1,
        data_layout="NCHW", kernel_layout="OIHW",
    )  # fmt: skip
    got = build_and_run(
        lambda a, b: topi.nn.conv2d_nchw(a, b, (2, 1), (1, 0, 0, 1), (1, 1)), [x, w], ref.shape
    )
    assert_close(got, ref)


def test_packed_buffer_has_padding_byte():
    w = RNG.laplace(size=(5, 3)).astype(np.float32)
    packed, _, spec, _ = encode(w, "kmeans", 3, 0)
    assert packed.size == spec.packed_bytes == (15 * 3 + 7) // 8 + 1
    assert packed[-1] == 0
    assert LutWeight(shape=(5, 3), bits=3, axis=0, group_size=None, n_groups=5, n_levels=8).numel
