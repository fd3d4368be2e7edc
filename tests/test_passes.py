"""Before / Expected IR for AnnotateQuant, LegalizeLUT and SimulateQuant."""

import numpy as np
import pytest
import tvm
from tvm import relax

import tvmq
from relay_passes import AnnotateQuant, LegalizeLUT, SimulateQuant
from tvmq.config import QuantConfig
from tvmq.kernels import lut_conv_compute, lut_matmul_compute
from tvmq.ops import lut_decode, lut_decode_constants

RNG = np.random.default_rng(0)
W_DENSE = RNG.laplace(size=(4, 8)).astype(np.float32)  # (out, in), used via permute_dims
W_CONV = RNG.laplace(size=(3, 3, 2, 4)).astype(np.float32)  # HWIO
CONV = dict(strides=[1, 1], padding=[1, 1, 1, 1], data_layout="NHWC", kernel_layout="HWIO")


def build(body):
    """A module ``main(x: (1, 5, 5, 2))`` whose dataflow block ``body(bb, x)`` emits."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 5, 5, 2), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def before(bb, x):
    c = bb.emit(relax.op.nn.conv2d(x, relax.const(W_CONV), **CONV))
    r = bb.emit(relax.op.reshape(relax.op.nn.relu(c), (1, 100)))
    r = bb.emit(relax.op.strided_slice(r, axes=[1], begin=[0], end=[8]))
    wt = bb.emit(relax.op.permute_dims(relax.const(W_DENSE), [1, 0]))
    return relax.op.matmul(r, wt)


def encoded(w, axis, bits=4):
    return lut_decode_constants(tvmq.fit(w, "kmeans", bits=bits, axis=axis), w)


def test_annotate_quant():
    after = AnnotateQuant("w4-kmeans")(build(before))
    pc, lc, sc = encoded(W_CONV, axis=3)
    pd, ld, sd = encoded(W_DENSE, axis=0)

    def expected(bb, x):
        wc = bb.emit(lut_decode(pc, lc, sc))
        c = bb.emit(relax.op.nn.conv2d(x, wc, **CONV))
        r = bb.emit(relax.op.reshape(relax.op.nn.relu(c), (1, 100)))
        r = bb.emit(relax.op.strided_slice(r, axes=[1], begin=[0], end=[8]))
        wd = bb.emit(lut_decode(pd, ld, sd))
        wt = bb.emit(relax.op.permute_dims(wd, [1, 0]))
        return relax.op.matmul(r, wt)

    tvm.ir.assert_structural_equal(after, build(expected))


def test_legalize_lut():
    after = LegalizeLUT()(AnnotateQuant("w4-kmeans")(build(before)))
    pc, lc, sc = encoded(W_CONV, axis=3)
    pd, ld, sd = encoded(W_DENSE, axis=0)
    kw = dict(CONV, dilation=[1, 1], groups=1)

    def expected(bb, x):
        c = bb.emit(
            bb.call_te(
                lambda a, p, lv: lut_conv_compute(a, p, lv, sc, **kw),
                x, pc, lc, primfunc_name_hint="lut_conv",
            )
        )  # fmt: skip
        r = bb.emit(relax.op.reshape(relax.op.nn.relu(c), (1, 100)))
        r = bb.emit(relax.op.strided_slice(r, axes=[1], begin=[0], end=[8]))
        return bb.call_te(
            lambda a, p, lv: lut_matmul_compute(a, p, lv, sd, transposed=True),
            r, pd, ld, primfunc_name_hint="lut_matmul",
        )  # fmt: skip

    tvm.ir.assert_structural_equal(after, build(expected))


def test_simulate_quant():
    after = SimulateQuant()(AnnotateQuant("w4-kmeans")(build(before)))
    qc = tvmq.fit(W_CONV, "kmeans", bits=4, axis=3).quantize(W_CONV)
    qd = tvmq.fit(W_DENSE, "kmeans", bits=4, axis=0).quantize(W_DENSE)

    def expected(bb, x):
        c = bb.emit(relax.op.nn.conv2d(x, relax.const(qc), **CONV))
        r = bb.emit(relax.op.reshape(relax.op.nn.relu(c), (1, 100)))
        r = bb.emit(relax.op.strided_slice(r, axes=[1], begin=[0], end=[8]))
        wt = bb.emit(relax.op.permute_dims(relax.const(qd), [1, 0]))
        return relax.op.matmul(r, wt)

    tvm.ir.assert_structural_equal(after, build(expected))


def test_overrides_and_skips():
    cfg = QuantConfig(
        weight={"scheme": "kmeans", "bits": 4},
        overrides=(("layer1_*", {"scheme": "uniform", "bits": 8}),),
        skip=("first",),
    )
    p = AnnotateQuant(cfg)
    p(build(before))
    rows = {r.name: r for r in p.report}
    assert rows["layer0_conv2d"].scheme is None and rows["layer0_conv2d"].note
    assert (rows["layer1_dense"].scheme, rows["layer1_dense"].bits) == ("uniform", 8)
    p = AnnotateQuant(QuantConfig(skip=("last",), granularity="tensor"))
    after = p(build(before))
    assert [r.scheme for r in p.report] == ["kmeans", None]
    assert after.script(show_meta=False).count("lut_decode(") == 1


def test_non_constant_weight_is_left_in_float_and_reported():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 8), "float32"))
    w = relax.Var("w", relax.TensorType((8, 3), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(x, w))
        bb.emit_func_output(out)
    mod = bb.get()
    p = AnnotateQuant("w4-kmeans")
    tvm.ir.assert_structural_equal(p(mod), mod)
    assert p.report[0].scheme is None and "not a constant" in p.report[0].note


def test_unknown_preset_and_bad_config():
    with pytest.raises(tvmq.UnknownNameError, match="known presets"):
        AnnotateQuant("w4-magic")
    with pytest.raises(tvmq.ConfigError, match="group_size"):
        QuantConfig(granularity="group")
    with pytest.raises(tvmq.ConfigError):
        QuantConfig(overrides=(("layer0_*", {"bits": 12}),))
