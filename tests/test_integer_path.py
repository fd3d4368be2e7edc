"""int8 activations: quantize op, integer LUT kernels (exact), Calibrate, W4A8 end to end."""

import numpy as np
import pytest
from test_kernels import CONVS, build_and_run, encode
from test_quantize_e2e import check, onnx_model

import tvmq
from relay_passes import AnnotateQuant, Calibrate, calibrate
from tvmq.config import ActivationConfig
from tvmq.kernels import (
    UNSIGNED_OFFSET,
    int_level_table,
    lut_conv_int_compute,
    lut_int_reference,
    lut_matmul_int_compute,
    out_scales,
    quantize_compute,
    quantize_reference,
    snap_levels,
)

RNG = np.random.default_rng(3)


def int_weight(w, cb, table):
    """T[g, code] per weight element: the integer weight the kernels multiply by."""
    codes = cb.encode(w)
    groups = np.broadcast_to(
        np.expand_dims(np.arange(table.shape[0]), [d for d in range(w.ndim) if d != cb.axis]),
        w.shape,
    )
    return table[groups, codes]


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
def test_quantize_op_matches_reference(bits):
    x = (RNG.standard_normal((3, 101)) * 4).astype(np.float32)
    x[0, :3] = [0.5 * 0.037, -0.5 * 0.037, 1e6]  # half-way points and saturation
    got = build_and_run(lambda a: quantize_compute(a, 0.037, -3, bits), [x], x.shape, "int8")
    np.testing.assert_array_equal(got, quantize_reference(x, 0.037, -3, bits))


def test_int_level_table_snaps_within_half_a_step():
    levels = RNG.laplace(size=(5, 16)).astype(np.float32)
    table, scale = int_level_table(levels)
    assert table.dtype == np.int8 and np.abs(table).max() == 127
    assert np.all(np.abs(snap_levels(levels) - levels) <= scale[:, None] / 2 + 1e-7)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("transposed", [False, True])
def test_integer_matmul_is_exact(bits, transposed):
    k, n = 40, 12
    w = RNG.laplace(size=(n, k) if transposed else (k, n)).astype(np.float32)
    packed, levels, spec, cb = encode(w, "kmeans", bits, axis=0 if transposed else 1)
    table, w_scale = int_level_table(levels)
    oscale = out_scales(spec, w_scale, 0.021, n)
    q = RNG.integers(-128, 128, (3, k)).astype(np.int8)
    got = build_and_run(
        lambda a, p, t, o: lut_matmul_int_compute(
            a, p, t, o, spec, x_zero=-9, transposed=transposed
        ),
        [q, packed, table, oscale],
        (3, n),
    )
    ref = lut_int_reference(q, int_weight(w, cb, table), oscale, x_zero=-9, transposed=transposed)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("case", list(CONVS))
def test_integer_conv_is_exact(case, bits):
    c = dict(CONVS[case])
    xs, ws, axis = c.pop("x"), c.pop("w"), c.pop("axis")
    w = RNG.laplace(size=ws).astype(np.float32)
    packed, levels, spec, cb = encode(w, "kmeans", bits, axis)
    table, w_scale = int_level_table(levels)
    out_ch = ws[c["kernel_layout"].index("O")]
    oscale = out_scales(spec, w_scale, 0.05, out_ch)
    q = RNG.integers(-128, 128, xs).astype(np.int8)
    ch = c["data_layout"].index("C")
    ref = lut_int_reference(q, int_weight(w, cb, table), oscale, x_zero=4, conv=c, channel_axis=ch)
    got = build_and_run(
        lambda a, p, t, o: lut_conv_int_compute(a, p, t, o, spec, x_zero=4, **c),
        [q, packed, table, oscale],
        ref.shape,
    )
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("case", ["conv2d-NHWC", "depthwise-NHWC", "rgb-NHWC"])
def test_unsigned_inputs_conv_is_exact(case, bits):
    """``unsigned_inputs`` (the AVX-VNNI form: codes + 128 as uint8, the zero point moved
    with them, input channels padded to a multiple of 4) gives the int8 kernel's sums."""
    rgb = dict(CONVS["conv2d-NHWC"], x=(1, 6, 6, 3), w=(3, 3, 3, 8))
    c = dict(rgb if case == "rgb-NHWC" else CONVS[case])
    xs, ws, axis = c.pop("x"), c.pop("w"), c.pop("axis")
    w = RNG.laplace(size=ws).astype(np.float32)
    packed, levels, spec, cb = encode(w, "kmeans", bits, axis)
    table, w_scale = int_level_table(levels)
    oscale = out_scales(spec, w_scale, 0.05, ws[c["kernel_layout"].index("O")])
    q = RNG.integers(-128, 128, xs).astype(np.int8)
    ch = c["data_layout"].index("C")
    ref = lut_int_reference(q, int_weight(w, cb, table), oscale, x_zero=-7, conv=c, channel_axis=ch)
    got = build_and_run(
        lambda a, p, t, o: lut_conv_int_compute(
            a, p, t, o, spec, x_zero=-7 + UNSIGNED_OFFSET, unsigned_inputs=True, **c
        ),
        [q, packed, table, oscale],
        ref.shape,
    )
    np.testing.assert_array_equal(got, ref)


def calib_batches(n=16, shape=(1, 3, 12, 12)):
    rng = np.random.default_rng(11)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


def test_calibrate_methods_order_ranges():
    mod = AnnotateQuant("w4-kmeans-a8")(tvmq.load_model(onnx_model()))
    data = calib_batches()
    ranges = {}
    for method in ("minmax", "percentile", "mse"):
        cal = Calibrate(data, ActivationConfig(method=method, percentile=99.0))
        cal(mod)
        ranges[method] = cal.ranges
    # The input is N(0, 1): min-max spans the extremes, a 99th percentile is narrower.
    (s_mm, _), (s_pc, _) = ranges["minmax"][0], ranges["percentile"][0]
    assert s_pc < 0.8 * s_mm
    # ReLU outputs are non-negative: zero point at the bottom code, the whole range positive.
    assert all(z == -128 for _, z in ranges["minmax"][1:])


def test_calibrate_rejects_bad_data():
    mod = AnnotateQuant("w4-kmeans-a8")(tvmq.load_model(onnx_model()))
    with pytest.raises(tvmq.DataError, match="shape"):
        calibrate(mod, [np.zeros((1, 3, 11, 12), np.float32)])
    with pytest.raises(tvmq.DataError, match="empty"):
        calibrate(mod, [])
    with pytest.raises(tvmq.DataError, match="NaN"):
        calibrate(mod, [np.full((1, 3, 12, 12), np.nan, np.float32)])
    with pytest.raises(RuntimeError, match="shape"):  # the pass form: TVM's FFI error type
        Calibrate([np.zeros((1, 3, 11, 12), np.float32)])(mod)


@pytest.mark.parametrize(
    ("preset", "floor", "agree"), [("w4-kmeans-a8", 18.0, 1.0), ("w4-kmeans-a4", 10.0, 0.8)]
)
def test_w4a8_end_to_end_uses_integer_kernels(preset, floor, agree):
    qm = tvmq.quantize(onnx_model(), preset, calib=calib_batches())
    text = qm.legalized().script(show_meta=False)
    assert "lut_decode(" not in text and "dequantize(" not in text
    assert text.count("R.call_tir(cls.lut_conv_int") == 2
    assert text.count("R.call_tir(cls.lut_matmul_int") == 1
    x = np.random.default_rng(5).standard_normal((6, 1, 3, 12, 12)).astype(np.float32)
    print(preset, "SQNR", check(qm, x, floor_db=floor, min_agree=agree))


def test_activation_config_needs_calibration():
    with pytest.raises(tvmq.TvmqError, match="calib="):
        tvmq.quantize(onnx_model(), "w4-kmeans-a8")
    with pytest.raises(tvmq.ConfigError):
        ActivationConfig(method="entropy")


def test_per_group_codebooks_fall_back_to_float_kernels():
    from tvmq.config import QuantConfig

    # groups of 9 along the reduction: the dense layer (512 inputs) is skipped
    cfg = QuantConfig(granularity="group", group_size=9, activation={}, skip=("last",))
    qm = tvmq.quantize(onnx_model(), cfg, calib=calib_batches(4))
    text = qm.legalized().script(show_meta=False)
    assert "lut_conv_int" not in text and text.count("R.call_tir(cls.lut_conv") == 2
    x = np.random.default_rng(6).standard_normal((3, 1, 3, 12, 12)).astype(np.float32)
    print("per-group W4A8 SQNR", check(qm, x, floor_db=15.0))
