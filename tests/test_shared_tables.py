"""Shared level tables: one int8 table per tensor, the per-channel scale in the epilogue."""

import numpy as np
import pytest
from test_integer_path import calib_batches
from test_kernels import CONVS, build_and_run
from test_quantize_e2e import onnx_model

import tvmq
from tvmq.backend.aot import generate_aot
from tvmq.backend.host import HostModel
from tvmq.config import QuantConfig, fixed_point
from tvmq.kernels import (
    int_level_table,
    lut_conv_int_compute,
    lut_int_reference,
    out_scales,
    shared_table,
)
from tvmq.metrics import sqnr_db
from tvmq.ops import lut_decode_constants

RNG = np.random.default_rng(31)


def _channels(shape=(16, 200), axis=0):
    """Laplace weights whose channels differ in scale by up to 30x (as trained layers do)."""
    scale = np.exp(RNG.uniform(-1.7, 1.7, shape[axis]))
    w = RNG.laplace(size=shape) * np.expand_dims(scale, 1 - axis)
    return w.astype(np.float32)


def test_shared_codebook_is_one_shape_scaled_per_channel():
    w = _channels()
    cb = tvmq.fit(w, "kmeans", bits=4, axis=0, shared=True)
    top = np.abs(cb.levels).max(axis=1, keepdims=True)
    shape = np.broadcast_to(cb.levels[:1] / top[:1], cb.levels.shape)
    np.testing.assert_allclose(cb.levels / top, shape, rtol=1e-6, atol=1e-7)
    table, _ = int_level_table(cb.levels)
    assert shared_table(table).shape == (1, 16)  # the kernels store one row
    # one float32 scale per channel plus one 16-level table, not 16 levels per channel
    assert cb.storage_bytes(200 * 16)["codebook"] == 16 * 4 + 16 * 4
    # the shape fits Laplace weights better than per-channel uniform levels
    uni = tvmq.fit(w, "uniform", bits=4, axis=0)
    assert sqnr_db(w, cb.quantize(w)) > sqnr_db(w, uni.quantize(w)) + 1.0
    # and a per-channel k-means (a table each) is better still: the price of one table
    per = tvmq.fit(w, "kmeans", bits=4, axis=0)
    assert sqnr_db(w, per.quantize(w)) > sqnr_db(w, cb.quantize(w))


def test_per_channel_tables_are_not_merged():
    table, _ = int_level_table(tvmq.fit(_channels(), "kmeans", bits=4, axis=0).levels)
    assert shared_table(table).shape == table.shape


@pytest.mark.parametrize("case", ["conv2d-NHWC", "depthwise-NHWC"])
def test_integer_conv_with_a_shared_table_is_exact(case):
    c = dict(CONVS[case])
    xs, ws, axis = c.pop("x"), c.pop("w"), c.pop("axis")
    scale = RNG.uniform(0.2, 3.0, ws[axis]).reshape([-1 if d == axis else 1 for d in range(4)])
    w = (RNG.laplace(size=ws) * scale).astype(np.float32)
    cb = tvmq.fit(w, "kmeans", bits=4, axis=axis, shared=True)
    packed, levels, spec = lut_decode_constants(cb, w)
    table, w_scale = int_level_table(levels.value.numpy())
    one = shared_table(table)
    assert one.shape[0] == 1
    out_ch = ws[c["kernel_layout"].index("O")]
    oscale = out_scales(spec, w_scale, 0.05, out_ch)
    q = RNG.integers(-128, 128, xs).astype(np.int8)
    ch = c["data_layout"].index("C")
    weight = one[0][cb.encode(w)]  # T[code]: the same row for every channel
    ref = lut_int_reference(q, weight, oscale, x_zero=4, conv=c, channel_axis=ch)
    got = build_and_run(
        lambda a, p, t, o: lut_conv_int_compute(a, p, t, o, spec, x_zero=4, **c),
        [q, packed.value.numpy(), one, oscale],
        ref.shape,
    )
    np.testing.assert_array_equal(got, ref)


def test_shared_granularity_shrinks_the_deployed_tables(tmp_path):
    per = tvmq.quantize(onnx_model(), fixed_point("w4-kmeans-a8"), calib=calib_batches(4))
    shared = tvmq.quantize(onnx_model(), fixed_point("w4-kmeans-shared-a8"), calib=calib_batches(4))
    assert all(r.scheme == "kmeans" for r in shared.layers)
    a_per, a_shared = generate_aot(per.fused()), generate_aot(shared.fused())
    # int8 tables of 8 / 8 / 10 channels, 16 / 9 / 16 levels each (a 3x3 depthwise channel
    # has 9 weights, so 9 levels), become one 16-level table per layer
    assert a_per.const_bytes - a_shared.const_bytes == (8 * 16 - 16) + (8 * 9 - 16) + (10 * 16 - 16)
    host = HostModel(a_shared, tmp_path)
    for x in np.random.default_rng(5).standard_normal((3, 1, 3, 12, 12)).astype(np.float32):
        np.testing.assert_allclose(host.run(x), shared.build().run(x), rtol=1e-6, atol=1e-7)


def test_shared_can_be_set_per_layer():
    cfg = QuantConfig(
        weight={"scheme": "kmeans", "bits": 4}, overrides=(("layer1_*", {"shared": True}),)
    )
    assert cfg.for_layer("layer1_conv2d", 1, 3, 0).shared
    assert not cfg.for_layer("layer0_conv2d", 0, 3, 0).shared
    assert QuantConfig(granularity="shared").for_layer("layer0_conv2d", 0, 3, 0).shared


def test_layerwise_refinement_keeps_the_table_shared():
    """refine_levels with shared_scale fits one shape to the layer's output: the rows stay
    scaled copies (one int8 table) and the held-out output error drops."""
    from tvmq.ptq import output_error, refine_levels

    rng = np.random.default_rng(0)  # (over seeds 0-7 the gain is 5-35 %)
    w = (rng.laplace(size=(16, 64)) * np.exp(rng.uniform(-1.7, 1.7, (16, 1)))).astype(np.float32)
    mix = np.diag(np.exp(rng.uniform(-2, 2, 64)))  # uneven inputs: output != weight error
    x_fit, x_test = (rng.standard_normal((n, 64)) @ mix for n in (512, 512))
    cb = tvmq.fit(w, "kmeans", bits=3, axis=0, shared=True)
    scale = np.array([m["scale"] for m in cb.meta["groups"]])
    levels, codes = refine_levels(w, cb.encode(w), cb.levels, np.arange(16), x_fit, 0.05, scale)
    table, _ = int_level_table(levels)
    assert shared_table(table).shape[0] == 1
    before = output_error(w, cb.quantize(w), x_test)
    after = output_error(w, levels[np.arange(16)[:, None], codes], x_test)
    assert after < 0.9 * before, (before, after)  # measured: 0.049 -> 0.034
