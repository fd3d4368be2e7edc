"""Fixed-point requantize: integer-only epilogues for FPU-less cores."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_integer_path import calib_batches, int_weight
from test_kernels import CONVS, build_and_run, encode
from test_quantize_e2e import onnx_model
from tvm import relax

import tvmq
from tvmq.config import fixed_point
from tvmq.kernels import (
    int_level_table,
    kernel_requant,
    lut_conv_int_compute,
    lut_int_reference,
    lut_matmul_int_compute,
    quantize_multiplier,
    requantize_reference,
)

RNG = np.random.default_rng(9)


fixed = fixed_point


@given(st.floats(1e-6, 1e3, allow_nan=False))
def test_multiplier_represents_the_rescale(real):
    mult, shift = quantize_multiplier(np.array([real]))
    assert (1 << 30) <= mult[0] < (1 << 31)
    assert abs(mult[0] * 2.0 ** -float(shift[0]) / real - 1) < 1e-9


def test_kernel_requant_picks_the_high_word_form_only_where_it_is_exact():
    mult, shift = quantize_multiplier(np.array([0.01, 0.4]))  # shifts 37, 32
    off, _, k, high = kernel_requant(np.array([5, -7]), mult, shift)
    assert high and k.tolist() == (shift - 32).tolist()
    assert off.tolist() == [5 * mult[0] + 2**36, -7 * mult[1] + 2**31]
    mult, shift = quantize_multiplier(np.array([0.01, 0.6]))  # 0.6 > 1/2: shift 31
    _, _, k, high = kernel_requant(np.array([5, -7]), mult, shift)
    assert not high and k.tolist() == shift.tolist()


def requant_args(n_out, x_scale, w_scale):
    bias_q = RNG.integers(-3000, 3000, n_out).astype(np.int32)
    mult, shift = quantize_multiplier(x_scale * w_scale / 0.08)
    return bias_q, mult.astype(np.int32), shift.astype(np.int32)


@pytest.mark.parametrize("case", ["conv2d-NHWC", "depthwise-NHWC", "conv1d-NCW"])
@pytest.mark.parametrize(("lo", "hi"), [(-128, 127), (-20, 127), (-20, 55)])
@pytest.mark.parametrize("high", [True, False], ids=["high-word", "64-bit"])
def test_requantizing_conv_is_exact(case, lo, hi, high):
    """Both forms of the requantize give the reference's codes exactly: the high-word one
    (kernel_requant picks it when every shift is at least 32, i.e. the rescales are below
    1/2, as here) and the 64-bit one (forced here; used for larger rescales)."""
    c = dict(CONVS[case])
    xs, ws, axis = c.pop("x"), c.pop("w"), c.pop("axis")
    w = RNG.laplace(size=ws).astype(np.float32)
    packed, levels, spec, cb = encode(w, "kmeans", 4, axis)
    table, w_scale = int_level_table(levels)
    n_out = ws[c["kernel_layout"].index("O")]
    bias_q, mult, shift = requant_args(n_out, 0.05, w_scale)
    off, k_mult, k_shift, high_word = kernel_requant(bias_q, mult, shift)
    assert high_word
    if not high:
        k_shift, high_word = shift, False
    q = RNG.integers(-128, 128, xs).astype(np.int8)
    ch = c["data_layout"].index("C")
    acc = lut_int_reference(q, int_weight(w, cb, table), None, x_zero=2, conv=c, channel_axis=ch)
    ref = requantize_reference(acc, bias_q, mult, shift, -20, lo, hi, channel_axis=ch)
    got = build_and_run(
        lambda a, p, t, b, m, s: lut_conv_int_compute(
            a, p, t, None, spec, x_zero=2, requant=(b, m, s, -20, lo, hi, high_word), **c
        ),
        [q, packed, table, off, k_mult, k_shift],
        ref.shape,
        "int8",
    )
    np.testing.assert_array_equal(got, ref)
    if (lo, hi) == (-128, 127):
        assert np.unique(ref).size > 10  # not saturated into a few codes: a real test


def test_requantizing_matmul_is_exact():
    w = RNG.laplace(size=(16, 48)).astype(np.float32)
    packed, levels, spec, cb = encode(w, "kmeans", 3, axis=0)
    table, w_scale = int_level_table(levels)
    bias_q, mult, shift = requant_args(16, 0.03, w_scale)
    q = RNG.integers(-128, 128, (2, 48)).astype(np.int8)
    acc = lut_int_reference(q, int_weight(w, cb, table), None, x_zero=-5, transposed=True)
    ref = requantize_reference(acc, bias_q, mult, shift, 7, -128, 127)
    off, k_mult, k_shift, high_word = kernel_requant(bias_q, mult, shift)
    got = build_and_run(
        lambda a, p, t, b, m, s: lut_matmul_int_compute(
            a,
            p,
            t,
            None,
            spec,
            x_zero=-5,
            transposed=True,
            requant=(b, m, s, 7, -128, 127, high_word),
        ),
        [q, packed, table, off, k_mult, k_shift],
        (2, 16),
        "int8",
    )
    np.testing.assert_array_equal(got, ref)


def relu6_model():
    """conv -> +bias -> clip(0, 6) -> conv, built in Relax (NCHW / OIHW)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 10, 10), "float32"))
    w1 = (RNG.laplace(size=(8, 3, 3, 3)) * 0.5).astype(np.float32)
    w2 = (RNG.laplace(size=(4, 8, 3, 3)) * 0.3).astype(np.float32)
    b1 = RNG.standard_normal((1, 8, 1, 1)).astype(np.float32)
    with bb.function("main", [x]):
        with bb.dataflow():
            c = bb.emit(relax.op.nn.conv2d(x, relax.const(w1)))
            c = bb.emit(relax.op.add(c, relax.const(b1)))
            c = bb.emit(relax.op.clip(c, relax.prim_value(0.0), relax.prim_value(6.0)))
            out = bb.emit_output(relax.op.nn.conv2d(c, relax.const(w2)))
        bb.emit_func_output(out)
    return bb.get()


def test_relu6_chain_folds_into_one_integer_kernel():
    calib = [RNG.standard_normal((1, 3, 10, 10)).astype(np.float32) * 2 for _ in range(8)]
    qm = tvmq.quantize(relu6_model(), fixed("w4-kmeans-a8"), calib=calib)
    main = qm.legalized()["main"].script(show_meta=False)
    assert "lut_conv_int_requant" in main and "clip" not in main and "R.add" not in main
    x = RNG.standard_normal((4, 1, 3, 10, 10)).astype(np.float32) * 2
    lut = np.concatenate([qm.build().run(v) for v in x])
    sim = np.concatenate([qm.simulate(v) for v in x])
    # fixed point vs float epilogue: at most a few output codes apart on the last layer
    assert np.abs(lut - sim).max() <= 0.05 * np.abs(sim).max()
    assert tvmq.sqnr_db(sim, lut) > 25.0


def test_fixed_point_end_to_end():
    qm = tvmq.quantize(onnx_model(), fixed("w4-kmeans-a8"), calib=calib_batches())
    assert "lut_conv_int_requant" in qm.legalized().script(show_meta=False)
    x = np.random.default_rng(5).standard_normal((6, 1, 3, 12, 12)).astype(np.float32)
    ref = np.concatenate([qm.run_float(v) for v in x])
    lut = np.concatenate([qm.build().run(v) for v in x])
    sim = np.concatenate([qm.simulate(v) for v in x])
    assert np.abs(lut - sim).max() <= 1e-2 * np.abs(sim).max()  # measured 1.4e-3
    assert tvmq.sqnr_db(ref, lut) >= 18.0  # measured 24.9 dB, as the float epilogue


def test_fixed_point_with_a_float_first_layer():
    """A skipped (float) layer still matches the requantize chain pattern; its bindings
    must be emitted as they are (this crashed with 'Var ... is not defined')."""
    import dataclasses

    cfg = dataclasses.replace(fixed("w4-kmeans-a8"), skip=("first",))
    qm = tvmq.quantize(onnx_model(), cfg, calib=calib_batches())
    assert "lut_" in qm.legalized().script(show_meta=False)  # the other layers
    x = np.random.default_rng(6).standard_normal((3, 1, 3, 12, 12)).astype(np.float32)
    lut = np.concatenate([qm.build().run(v) for v in x])
    sim = np.concatenate([qm.simulate(v) for v in x])
    assert np.abs(lut - sim).max() <= 1e-2 * np.abs(sim).max()


def maxpool_model():
    """conv -> bias -> relu -> max_pool2d -> conv (the pattern of the TENT ConvNet)."""
    w1 = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    b1 = RNG.standard_normal((1, 8, 1, 1)).astype(np.float32) * 0.1
    w2 = RNG.standard_normal((4, 8, 3, 3)).astype(np.float32) * 0.3
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 3, 10, 10), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            c = bb.emit(relax.op.nn.conv2d(x, relax.const(w1), padding=(1, 1)))
            c = bb.emit(relax.op.add(c, relax.const(b1)))
            c = bb.emit(relax.op.nn.relu(c))
            c = bb.emit(relax.op.nn.max_pool2d(c, pool_size=(2, 2), strides=(2, 2)))
            out = bb.emit_output(relax.op.nn.conv2d(c, relax.const(w2)))
        bb.emit_func_output(out)
    return bb.get()


def test_max_pool_moves_after_the_integer_requantize():
    """quantize(max_pool(relu(conv + b))) == max_pool(requantized codes): the conv writes
    int8 codes (no fp32 tensor before the pool), the pool runs on codes."""
    calib = [RNG.standard_normal((1, 3, 10, 10)).astype(np.float32) * 2 for _ in range(8)]
    qm = tvmq.quantize(maxpool_model(), fixed("w4-kmeans-a8"), calib=calib)
    main = qm.legalized()["main"].script(show_meta=False)
    assert "lut_conv_int_requant" in main and "R.nn.relu" not in main
    assert "max_pool2d" in main
    x = RNG.standard_normal((4, 1, 3, 10, 10)).astype(np.float32) * 2
    lut = np.concatenate([qm.build().run(v) for v in x])
    sim = np.concatenate([qm.simulate(v) for v in x])
    assert np.abs(lut - sim).max() <= 0.05 * np.abs(sim).max()
    assert tvmq.sqnr_db(sim, lut) > 25.0
