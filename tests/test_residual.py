"""Integer residual adds: the skip path as int8 codes, fused into the producing layer."""

import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_fixed_point import requant_args
from test_integer_path import int_weight
from test_kernels import CONVS, build_and_run, encode
from tvm import relax

import tvmq
from relay_passes._graph import bindings_and_uses, op_name
from relay_passes.residual import residual_operands
from tvmq.backend.aot import generate_aot, peak_live_bytes
from tvmq.backend.host import HostModel
from tvmq.config import fixed_point
from tvmq.kernels import (
    int_level_table,
    kernel_requant,
    lut_conv_int_compute,
    lut_int_reference,
    requantize_reference,
    residual_multiplier,
    residual_reference,
)
from tvmq.ops import QUANTIZE_OP, is_op

RNG = np.random.default_rng(21)
SHAPE = (1, 8, 8, 3)


def _conv(bb, x, cin, cout, k=3, stride=1, relu=True, scale=0.4):
    w = (RNG.standard_normal((k, k, cin, cout)) * scale / np.sqrt(k * k * cin)).astype(np.float32)
    b = (RNG.standard_normal(cout) * 0.1).astype(np.float32)
    pad = k // 2 if stride == 1 else (0, 0, k // 2, k // 2)
    y = bb.emit(
        relax.op.nn.conv2d(
            x, relax.const(w), strides=stride, padding=pad, data_layout="NHWC",
            kernel_layout="HWIO",
        )
    )  # fmt: skip
    y = bb.emit(relax.op.add(y, relax.const(b)))
    return bb.emit(relax.op.nn.relu(y)) if relu else y


def resnet_block_model():
    """A stem, an identity-skip block, a projection-skip block (1x1 stride-2 conv), global
    average pool and a dense layer: the structure of the MLPerf Tiny ResNet-8, NHWC."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(SHAPE, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            h0 = _conv(bb, x, 3, 8, scale=2.0)
            t = _conv(bb, h0, 8, 8)
            t = _conv(bb, t, 8, 8, relu=False)
            h1 = bb.emit(relax.op.nn.relu(bb.emit(relax.op.add(t, h0))))
            t = _conv(bb, h1, 8, 16, stride=2)
            t = _conv(bb, t, 16, 16, relu=False)
            skip = _conv(bb, h1, 8, 16, k=1, stride=2, relu=False)
            h2 = bb.emit(relax.op.nn.relu(bb.emit(relax.op.add(t, skip))))
            p = bb.emit(relax.op.nn.avg_pool2d(h2, pool_size=(4, 4), layout="NHWC"))
            p = bb.emit(relax.op.reshape(p, (1, 16)))
            w = (RNG.standard_normal((16, 10)) * 0.3).astype(np.float32)
            out = bb.emit_output(relax.op.matmul(p, relax.const(w)))
        bb.emit_func_output(out)
    return bb.get()


def _data(n, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def quantized():
    return tvmq.quantize(resnet_block_model(), fixed_point("w4-kmeans-a8"), calib=_data(16, 1))


def test_residual_operands_pick_the_skip_side():
    """Identity skip: the block input gets codes, the conv chain stays in the accumulator;
    projection skip: both sides are conv chains, the later one stays (the earlier one is
    stored anyway)."""
    func = resnet_block_model()["main"]
    found = residual_operands(func)
    assert len(found) == 2
    bound, _ = bindings_and_uses(func)
    order = list(bound)
    kinds = []
    for add, (side,) in found.items():
        quantized, kept = add.args[side], add.args[1 - side]
        assert op_name(bound[bound[kept].args[0]]) == "relax.nn.conv2d"  # add(conv, bias)
        kinds.append(op_name(bound[quantized]))
        if kinds[-1] == "relax.add":  # projection: a conv chain too, bound earlier
            assert op_name(bound[bound[quantized].args[0]]) == "relax.nn.conv2d"
            assert order.index(quantized) < order.index(kept)
    assert kinds == ["relax.nn.relu", "relax.add"]


def test_each_tensor_has_one_quantizer_and_the_graph_runs_in_integers(quantized):
    bound, _ = bindings_and_uses(quantized.annotated["main"])
    sources = [v.args[0] for v in bound.values() if is_op(v, QUANTIZE_OP)]
    # input, 5 layer inputs (the two convs reading the first block output share one), the
    # projection side of the second residual add; the identity skip reuses the stem codes
    assert len(sources) == len(set(sources)) == 7
    fused = quantized.fused()
    calls = [
        (b.value.args[0].name_hint, str(b.var.ty.dtype))
        for block in fused["main"].body.blocks
        for b in block.bindings
        if op_name(b.value) == "relax.call_tir"
    ]
    names = [n for n, _ in calls]
    assert sum("residual" in n for n in names) == 1 and "lut_conv_int_avgpool" in names
    # no fp32 tensor between the input quantize and the final dense layer
    assert [d for _, d in calls[1:-1]] == ["int8"] * (len(calls) - 2), calls


def test_residual_requantizing_conv_is_exact():
    c = dict(CONVS["conv2d-NHWC"])
    xs, ws, axis = c.pop("x"), c.pop("w"), c.pop("axis")
    w = RNG.laplace(size=ws).astype(np.float32)
    packed, levels, spec, cb = encode(w, "kmeans", 4, axis)
    table, w_scale = int_level_table(levels)
    n_out = ws[3]
    bias_q, mult, shift = requant_args(n_out, 0.05, w_scale)
    off, k_mult, k_shift, high_word = kernel_requant(bias_q, mult, shift)
    q = RNG.integers(-128, 128, xs).astype(np.int8)
    acc = lut_int_reference(q, int_weight(w, cb, table), None, x_zero=2, conv=c, channel_axis=3)
    r = RNG.integers(-128, 128, acc.shape).astype(np.int8)
    rmult, rshift = residual_multiplier(0.07, 0.05 * w_scale)
    res = residual_reference(r, 3, rmult, rshift)
    ref = requantize_reference(acc + res, bias_q, mult, shift, -20, -128, 127)
    got = build_and_run(
        lambda a, p, t, b, m, s, rr, rm: lut_conv_int_compute(
            a, p, t, None, spec, x_zero=2, requant=(b, m, s, -20, -128, 127, high_word),
            residual=(rr, 3, rm, rshift), **c,
        ),
        [q, packed, table, off, k_mult, k_shift, r, rmult],
        ref.shape,
        "int8",
    )  # fmt: skip
    np.testing.assert_array_equal(got, ref)
    without = requantize_reference(acc, bias_q, mult, shift, -20, -128, 127)
    inside = (without > -128) & (without < 127)
    assert inside.sum() > 20 and np.mean(got[inside] != without[inside]) > 0.9  # it counts


@given(st.floats(1e-3, 10.0), st.lists(st.floats(1e-6, 1e-2), min_size=1, max_size=8))
def test_residual_multiplier_error_is_far_below_an_accumulator_step(res_scale, acc_scale):
    acc_scale = np.array(acc_scale)
    found = residual_multiplier(res_scale, acc_scale)
    if found is None:  # only when the residual would not fit an int32 accumulator
        assert 255 * res_scale / acc_scale.min() * 2 + 1 >= 2**31 * 0.99
        return
    rmult, rshift = found
    r = np.arange(-128, 128, dtype=np.int8)[:, None].repeat(acc_scale.size, 1)
    got = residual_reference(r, -5, rmult, rshift)
    exact = (r.astype(np.float64) + 5) * res_scale / acc_scale
    assert np.abs(got - exact).max() <= 0.5 + 128 * 2.0**-rshift + 1e-9


def test_residual_model_agrees_with_simulation(quantized):
    """Fixed point against fake-quant float: within rounding (one output code per layer),
    and both near the float model; the LUT build runs the integer residual kernels."""
    errs, sim_gap = [], []
    for x in _data(8, 2):
        ref, sim, got = quantized.run_float(x), quantized.simulate(x), quantized.run(x)
        scale = np.abs(ref).max()
        sim_gap.append(np.abs(got - sim).max() / scale)
        errs.append(np.abs(got - ref).max() / scale)
    assert max(sim_gap) < 0.01, sim_gap  # measured: 1.5e-7 (no code differs)
    assert np.mean(errs) < 0.05, errs  # measured: 0.010-0.021


def test_output_overwrites_the_dead_residual_and_c_equals_tvm(tmp_path, quantized):
    aot = generate_aot(quantized.fused())
    assert aot.arena_bytes <= peak_live_bytes(aot.buffers)
    names = [b.name for b in aot.buffers]
    k = next(i for i, n in enumerate(aot.layers) if "residual" in n)
    assert not any(n.startswith(f"t{k}_") for n in names)  # no buffer of its own
    src = next(f.source for f in aot.kernels if "residual" in f.name)
    header = src.split("{", 1)[0]
    assert header.count("restrict") == header.count("*") - 2  # the aliased pair
    host = HostModel(aot, tmp_path)
    for x in _data(4, 3):
        np.testing.assert_allclose(host.run(x), quantized.run(x), rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(
    not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")),
    reason="qemu-system-arm / gcc-arm-none-eabi not installed (make setup installs them)",
)
@pytest.mark.parametrize("board_name", ["mps2-an385", "mps2-an386", "mps2-an500", "mps3-an547"])
def test_residual_model_is_bit_exact_on_device(tmp_path, quantized, board_name):
    """The in-place residual kernels and the repacked-weight dot products (LDRD + SMLAD on
    the M4 / M7 / M55, plain C on the M3) give the host's outputs bit for bit."""
    from tvmq.backend.qemu import run_on_device

    aot = generate_aot(quantized.fused())
    assert "tvmq_dot4p_s8(" in aot.source and "tvmq_pack4_s8(" in aot.source
    # the dense layer at batch 1 uses each decoded block once: repacking would not pay
    dense = next(f.source for f in aot.kernels if "matmul" in f.name)
    assert "tvmq_dot2_s8(" in dense and "tvmq_pack" not in dense
    xs = np.stack(_data(2, 4))
    host = HostModel(aot, tmp_path / "host")
    expected = np.stack([host.run(x) for x in xs])
    res = run_on_device(aot, xs, tmp_path / "dev", board_name)
    np.testing.assert_array_equal(res.outputs.view(np.uint32), expected.view(np.uint32))


def test_residual_model_round_trips_through_an_artifact(tmp_path, quantized):
    """The extra skip quantizer and the shared ones are part of the saved graph: the
    loaded model legalizes to the same integer residual kernel and runs bit-identically."""
    back = tvmq.load_artifact(quantized.save(tmp_path / "resnet.tvmq"))
    names = [gv.name_hint for gv, _ in back.fused().functions_items()]
    assert any("residual" in n for n in names)
    for x in _data(2, 5):
        np.testing.assert_array_equal(back.run(x), quantized.run(x))
