"""Non-uniform activations (``ActivationConfig(scheme="kmeans")``): level fitting, the snap
table, the quantize op, calibration, the integer kernels against fake-quant, generated C,
and the gain on a real model's activations."""

import dataclasses
import shutil

import numpy as np
import pytest
from test_c_codegen import check_module
from test_integer_path import calib_batches
from test_kernels import build_and_run
from test_quantize_e2e import check, onnx_model

import tvmq
from relay_passes.calibrate import _quantize_sites
from tvmq.config import QuantConfig
from tvmq.kernels import fit_levels, quantize_compute, quantize_reference, snap_table
from tvmq.ops import act_params, act_snap

RNG = np.random.default_rng(7)


def relu_like_codes(n=20_000):
    """Grid codes (zero point -128) of ReLU-like values: half zeros, half exponential."""
    v = np.where(RNG.random(n) < 0.5, 0.0, RNG.exponential(20.0, n))
    return np.clip(np.round(v) - 128, -128, 127).astype(np.int64)


def snap_mse(levels, codes):
    return float(np.mean((snap_table(levels)[codes + 128].astype(np.int64) - codes) ** 2))


def test_snap_table_maps_every_code_to_its_nearest_level():
    levels = np.array([-128, -100, -3, 0, 7, 60])
    codes = np.arange(-128, 128)
    nearest = levels[np.argmin(np.abs(codes[:, None] - levels[None]), axis=1)]  # ties: lower
    np.testing.assert_array_equal(snap_table(levels), nearest)
    with pytest.raises(ValueError, match="int8"):
        snap_table([0, 200])


def test_lloyd_levels_beat_the_best_uniform_levels_and_keep_zero():
    codes = relu_like_codes()
    # the best 8-level uniform grid starting at the zero point (step searched exhaustively)
    uniform = min((-128 + step * np.arange(8) for step in range(1, 37)),
                  key=lambda lv: snap_mse(lv, codes))  # fmt: skip
    levels = fit_levels(codes, -128, 8, init=uniform)
    assert levels.size <= 8 and -128 in levels
    gain_db = 10 * np.log10(snap_mse(uniform, codes) / snap_mse(levels, codes))
    assert gain_db > 1.0, gain_db  # measured 1.9 dB


def test_quantize_op_with_a_snap_table_matches_reference():
    x = (RNG.standard_normal((3, 101)) * 4).astype(np.float32)
    x[0, :2] = [1e6, -1e6]  # saturation on both sides
    snap = snap_table([-128, -40, -9, -3, 0, 5, 30, 127])
    got = build_and_run(
        lambda a, t: quantize_compute(a, 0.037, -3, 3, t), [x, snap], x.shape, "int8"
    )
    want = quantize_reference(x, 0.037, -3, 3, snap)
    np.testing.assert_array_equal(got, want)
    assert set(np.unique(want)) <= set(np.unique(snap)) and len(np.unique(want)) > 4


def kmeans_config(bits=3, requantize="float", input_bits=None):
    return QuantConfig(
        weight={"scheme": "kmeans", "bits": 4},
        activation={"bits": bits, "scheme": "kmeans", "requantize": requantize,
                    "input_bits": input_bits},
    )  # fmt: skip


def test_calibration_fits_levels_that_keep_the_zero_point():
    qm = tvmq.quantize(onnx_model(), kmeans_config(input_bits=8), calib=calib_batches())
    sites = _quantize_sites(qm.annotated["main"])[0]
    assert act_snap(sites[0]) is None  # the 8-bit input: uniform, nothing to snap
    for site in sites[1:]:
        snap, (_, zero, bits) = act_snap(site), act_params(site)
        assert snap is not None and bits == 3
        assert 4 < len(np.unique(snap)) <= 8
        assert snap[zero + 128] == zero  # real zero is a level


@pytest.mark.parametrize("requantize", ["float", "fixed"])
def test_integer_kernels_snap_like_the_simulation(requantize, tmp_path):
    qm = tvmq.quantize(onnx_model(), kmeans_config(requantize=requantize), calib=calib_batches())
    text = qm.legalized().script(show_meta=False)
    assert "lut_decode(" not in text and "dequantize(" not in text
    x = np.random.default_rng(5).standard_normal((6, 1, 3, 12, 12)).astype(np.float32)
    if requantize == "float":  # the same float epilogue: equal to fake-quant within 1e-5
        check(qm, x, floor_db=5.0, min_agree=0.5)
    else:
        lut = np.concatenate([qm.build().run(v) for v in x])
        sim = np.concatenate([qm.simulate(v) for v in x])
        assert tvmq.sqnr_db(sim, lut) > 20.0
        # the fixed-point kernels read the 256-entry snap table
        fused = qm.fused()
        assert 'T.Buffer((T.int64(256),), "int8")' in fused.script(show_meta=False)
        cfuncs = check_module(fused, tmp_path)  # generated C == LLVM
        assert any("requant" in f.name for f in cfuncs)


def test_levels_lower_a_real_models_activation_error():
    """fmnist_dscnn, every activation at 3 bits: on training samples the calibration did
    not see, each tensor's quantization error is lower with Lloyd-Max levels than with
    the MSE-clipped uniform codes (the error this step targets)."""
    from relay_passes.calibrate import run_samples, stats_module
    from tvmq import zoo
    from tvmq.evaluate import calibration_set
    from tvmq.kernels import dequantize_reference

    calib, held_out = (calibration_set("fashion-mnist", 64, seed=s) for s in (0, 1))
    sites = {}
    for scheme in ("uniform", "kmeans"):
        cfg = QuantConfig(weight={"scheme": "uniform", "bits": 8},
                          activation={"bits": 3, "scheme": scheme})  # fmt: skip
        qm = tvmq.quantize(zoo.model_path("fmnist_dscnn"), cfg, calib=calib)
        sites[scheme] = _quantize_sites(qm.annotated["main"])[0]
    smod, n = stats_module(qm.annotated)  # the float tensors at the sites (same weights)
    values = [[] for _ in range(n)]
    for outs in run_samples(smod, held_out[:32], qm.annotated["main"].params):
        for i in range(n):
            values[i].append(outs[i + 1].numpy().ravel())
    gains = []
    for i, v in enumerate(values):
        v = np.concatenate(v)
        err = {}
        for scheme, found in sites.items():
            (scale, zero, bits), snap = act_params(found[i]), act_snap(found[i])
            q = quantize_reference(v, scale, zero, bits, snap)
            err[scheme] = np.mean((dequantize_reference(q, scale, zero) - v) ** 2)
        gains.append(10 * np.log10(err["uniform"] / err["kmeans"]))
    # measured: the input pixels +0.03 dB, the ReLU outputs +0.33 to +1.75 (mean 0.99)
    assert min(gains) > 0.0 and min(gains[1:]) > 0.2 and np.mean(gains[1:]) > 0.7, gains


def test_bad_activation_scheme_is_a_config_error():
    with pytest.raises(tvmq.ConfigError, match="activation scheme"):
        QuantConfig(activation={"bits": 4, "scheme": "nf"})
    cfg = dataclasses.replace(kmeans_config().activation, bits=8)
    assert cfg.scheme == "kmeans"  # 8 bits: every grid code is a level, uniform


@pytest.mark.skipif(
    not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")),
    reason="qemu-system-arm / gcc-arm-none-eabi not installed (make setup installs them)",
)
def test_snapped_model_on_an_emulated_cortex_m4_equals_the_host(tmp_path):
    from tvmq.backend.aot import generate_aot
    from tvmq.backend.host import HostModel
    from tvmq.backend.qemu import run_on_device

    qm = tvmq.quantize(onnx_model(), kmeans_config(requantize="fixed"), calib=calib_batches(4))
    aot = generate_aot(qm.fused())
    x = np.random.default_rng(3).standard_normal((2, 1, 3, 12, 12)).astype(np.float32)
    expected = np.stack([HostModel(aot, tmp_path / "host").run(v) for v in x])
    res = run_on_device(aot, x, tmp_path / "dev", "mps2-an386")
    np.testing.assert_array_equal(res.outputs.view(np.uint32), expected.view(np.uint32))
    np.testing.assert_allclose(res.outputs[0], qm.build().run(x[0]), rtol=1e-6, atol=1e-7)


def test_residual_block_with_snapped_activations_agrees_with_simulation(tmp_path):
    """A residual add's integer kernel reads the snap table beside the residual codes."""
    from test_residual import _data, resnet_block_model

    from tvmq.backend.aot import generate_aot
    from tvmq.backend.host import HostModel

    cfg = kmeans_config(bits=4, requantize="fixed")
    qm = tvmq.quantize(resnet_block_model(), cfg, calib=_data(16, 1))
    fused = qm.fused()
    (kernel,) = [f for gv, f in fused.functions_items() if "residual" in gv.name_hint]
    shapes = [[int(n) for n in p.shape] for p in kernel.params]
    assert [256] in shapes  # the snap table, beside the residual codes and multiplier
    aot = generate_aot(fused)
    host = HostModel(aot, tmp_path)
    for x in _data(4, 2):
        sim, got = qm.simulate(x), qm.run(x)
        assert np.abs(got - sim).max() < 0.05 * np.abs(sim).max()  # rounding only
        np.testing.assert_allclose(host.run(x), got, rtol=1e-6, atol=1e-7)  # C == TVM


def test_range_search_lowers_the_output_divergence_it_targets():
    """Loss-aware ranges on the small conv model at A2: the searched scales give a lower
    KL divergence from the float softmax on the calibration data than calibration's own,
    on each half of it, and the snap tables (non-uniform levels) are kept."""
    from relay_passes.range_search import _log_softmax, scaled_ranges, search_ranges

    calib = calib_batches(16)
    cfg = QuantConfig(weight={"scheme": "kmeans", "bits": 4},
                      activation={"bits": 2, "scheme": "kmeans"})  # fmt: skip
    qm = tvmq.quantize(onnx_model(), cfg, calib=calib)
    ref = _log_softmax(np.concatenate([qm.run_float(x) for x in calib]).astype(np.float64))

    def kl(m, half=None):
        model = dataclasses.replace(qm, annotated=m, _vms={}, _memo={})
        out = _log_softmax(np.concatenate([model.simulate(x) for x in calib]).astype(float))
        per = np.sum(np.exp(ref) * (ref - out), axis=-1)
        return float(np.mean(per if half is None else per[half::2]))

    searched, factors = search_ranges(qm.float_module, qm.annotated, calib, sweeps=1)
    assert any(f != 1.0 for f in factors)
    assert kl(searched) < kl(qm.annotated)
    # kept factors lower both halves of the calibration samples (even, odd), not just one
    assert all(kl(searched, h) < kl(qm.annotated, h) for h in (0, 1))
    np.testing.assert_allclose(kl(scaled_ranges(qm.annotated, factors)), kl(searched))
    sites = _quantize_sites(searched["main"])[0]
    assert all(act_snap(s) is not None for s in sites)
    with pytest.raises(tvmq.ConfigError, match="range_search"):
        QuantConfig(ptq={"range_search": True})
