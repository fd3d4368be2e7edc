"""The MCU schedule of the integer kernels and the int8 dot-product instruction selection."""

import shutil

import numpy as np
import pytest
import tvm
from test_quantize_e2e import onnx_model
from tvm import te, tirx

import tvmq
from tvmq.backend import lower_for_c
from tvmq.backend.aot import generate_aot
from tvmq.backend.c_codegen import print_function
from tvmq.backend.host import HostModel, call, compile_shared
from tvmq.backend.schedule import schedule_mcu
from tvmq.config import fixed_point

fixed = fixed_point


@pytest.fixture(scope="module")
def kws_w4a8(mlperf_model):
    rng = np.random.default_rng(0)
    calib = [rng.uniform(-50, 50, (1, 49, 10, 1)).astype(np.float32) for _ in range(4)]
    path = mlperf_model("kws_dscnn_float32.tflite")
    return tvmq.quantize(path, fixed("w4-kmeans-a8"), calib=calib)


def _allocs(func):
    found = []

    def visit(node):
        if type(node).__name__ == "AllocBuffer":
            b = node.buffer
            found.append((b.name, int(np.prod([int(s) for s in b.shape]))))

    _walk(func.body, visit)
    return dict(found)


def _numel(buf) -> int:
    return int(np.prod([int(s) for s in buf.shape]))


def _walk(stmt, visit):
    visit(stmt)
    for attr in ("body", "then_case", "else_case"):
        child = getattr(stmt, attr, None)
        if isinstance(child, tirx.Stmt):
            _walk(child, visit)
    for child in getattr(stmt, "seq", []) or []:
        _walk(child, visit)


def test_pointwise_kernel_is_scheduled_for_an_mcu(kws_w4a8):
    """Before: a full int32 accumulator tensor and a decode per multiply-accumulate.
    Expected: a block of 4 output channels per pixel (CHANNEL_BLOCK): 4 accumulators, the
    block's weights decoded once into a 4 x Cin scratch (channel-major), one 4-channel dot
    product per pixel, the epilogue under the pixel loop (no workspace)."""
    fused = kws_w4a8.fused()
    lowered = lower_for_c(schedule_mcu(fused))
    pointwise = [
        f
        for gv, f in lowered.functions_items()
        if gv.name_hint.startswith("lut_conv_int_requant")
        and _numel(f.params[2]) == 64 * 16  # C: 64 channels x 16 levels
        and _numel(f.params[1]) == 64 * 64 // 2 + 1  # 4-bit codes of 64x64
    ]
    assert pointwise, "no pointwise kernel found"
    allocs = _allocs(pointwise[0])
    assert allocs["lut_conv_acc"] == 4
    assert allocs["lut_decode_int"] == 4 * 64
    unscheduled = _allocs(lower_for_c(fused)[pointwise[0].attrs["global_symbol"]])
    assert unscheduled["lut_conv_acc"] == 25 * 5 * 64
    cfunc = print_function("k", pointwise[0])
    # the 256-byte scratch and the sums are C locals; the workspace holds the block's
    # weights repacked once into SMLAD-ready int16 pairs
    assert cfunc.workspace == 512
    assert cfunc.source.count("tvmq_pack4_s8(lut_decode_int, lut_decode_int_packed, 64);") == 1
    assert cfunc.source.count("tvmq_dot4p_s8(") == 1
    assert "tvmq_dot4p_s8(&lv" in cfunc.source
    assert "&lut_decode_int_packed[0], 64, &lut_conv_acc[0]);" in cfunc.source


def test_scheduled_module_keeps_results(tmp_path):
    """The schedule changes loops, not values: the whole W4A8 model, scheduled and built
    as C, equals TVM's LLVM build of the unscheduled module."""
    from test_integer_path import calib_batches

    qm = tvmq.quantize(onnx_model(), fixed("w4-kmeans-a8"), calib=calib_batches(4))
    aot = generate_aot(qm.fused())
    host = HostModel(aot, tmp_path)
    x = np.random.default_rng(1).standard_normal((1, 3, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(host.run(x), qm.build().run(x), rtol=1e-6, atol=1e-7)


def _dot_func(stride: int, n: int = 37):
    a = te.placeholder((n * stride,), "int8", name="a")
    b = te.placeholder((n,), "int8", name="b")
    k = te.reduce_axis((0, n), name="k")
    out = te.compute(
        (1,),
        lambda i: te.sum(a[k * stride].astype("int32") * b[k].astype("int32"), axis=k),
        name="out",
    )
    sch = tvm.s_tir.Schedule(te.create_prim_func([a, b, out]))
    blk = sch.get_sblock("out")
    sch.decompose_reduction(blk, sch.get_loops(blk)[1])  # init out of the loop
    return lower_for_c(tvm.IRModule({"dot": sch.mod["main"]}))["dot"]


@pytest.mark.parametrize("stride", [1, 2])
def test_dot_selection_needs_unit_stride_and_matches_numpy(tmp_path, stride):
    func = print_function("dot", _dot_func(stride))
    assert ("tvmq_dot_s8(" in func.source) == (stride == 1)
    rng = np.random.default_rng(stride)
    a = rng.integers(-128, 128, 37 * stride).astype(np.int8)
    b = rng.integers(-128, 128, 37).astype(np.int8)
    out = np.zeros(1, np.int32)
    call(compile_shared([func], tmp_path), func, [a, b, out])
    assert out[0] == int((a[::stride].astype(np.int64) * b).sum())


@pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
    reason="qemu-system-arm / gcc-arm-none-eabi not installed (make setup installs them)",
)
def test_smlad_path_is_bit_exact_and_profiled_on_cortex_m4(tmp_path, kws_w4a8):
    """KWS W4A8 on mps2-an386 (SMLAD dot products) equals the host C build; the per-layer
    profile accounts for the whole inference."""
    from tvmq.backend.qemu import run_on_device

    aot = generate_aot(kws_w4a8.fused())
    x = np.random.default_rng(2).uniform(-50, 50, (1, 1, 49, 10, 1)).astype(np.float32)
    res = run_on_device(aot, x, tmp_path / "dev", "mps2-an386")
    host = HostModel(aot, tmp_path / "host").run(x[0])
    np.testing.assert_array_equal(res.outputs[0].view(np.uint32), host.view(np.uint32))
    assert len(res.layer_instructions) == len(aot.layers)
    total = res.instructions[0]
    # the hook costs a few instructions per layer; SysTick has 40-instruction resolution
    assert abs(sum(res.layer_instructions) - total) < 0.01 * total
    # measured 13.5 M with the schedule (47.1 M with TE's default schedule)
    assert total < 20e6


def test_nhwc_conversion_keeps_results_and_feeds_dot_products(tmp_path):
    """``layout="NHWC"`` (ConvertLayout + weights folded) gives the same model; its 3x3
    convolutions reduce over contiguous input channels, so they become dot products."""
    from test_integer_path import calib_batches

    x = np.random.default_rng(5).standard_normal((1, 3, 12, 12)).astype(np.float32)
    nchw = tvmq.quantize(onnx_model(), fixed("w4-kmeans-a8"), calib=calib_batches(4))
    nhwc = tvmq.quantize(onnx_model(), fixed("w4-kmeans-a8"), calib=calib_batches(4), layout="NHWC")
    a, b = nchw.build().run(x), nhwc.build().run(x)
    # same codebooks and ranges up to float reassociation: agree to a fraction of a code
    np.testing.assert_allclose(a, b, rtol=0.05, atol=0.05 * np.abs(a).max())
    aot = generate_aot(nhwc.fused())
    assert "tvmq_dot_s8(" in aot.source
    np.testing.assert_allclose(HostModel(aot, tmp_path).run(x), b, rtol=1e-6, atol=1e-7)
    with pytest.raises(tvmq.TvmqError, match="layout must be one of"):
        tvmq.quantize(onnx_model(), "w4-kmeans", layout="NCWH")


def test_global_average_pool_fuses_into_the_last_conv(kws_w4a8, mlperf_model, monkeypatch):
    """Before: KWS's last pointwise conv keeps a float epilogue and writes a 25x5x64 fp32
    map (32 KB) that avg_pool2d reads. Expected: one ``lut_conv_int_avgpool`` kernel that
    sums each channel block's pixels as they are computed, its outputs equal to the
    unfused graph's bit for bit, and an arena of two int8 feature maps."""
    import relay_passes.legalize_lut as legalize

    fused = kws_w4a8.fused()
    names = [gv.name_hint for gv, f in fused.functions_items() if isinstance(f, tirx.PrimFunc)]
    assert any(n.startswith("lut_conv_int_avgpool") for n in names), names
    assert not any("avg_pool" in n and "lut" not in n for n in names), names
    aot = generate_aot(fused)
    assert aot.arena_bytes <= 2 * 25 * 5 * 64 + 1024  # was 40,000 B with the fp32 map
    rng = np.random.default_rng(0)
    calib = [rng.uniform(-50, 50, (1, 49, 10, 1)).astype(np.float32) for _ in range(4)]
    a = kws_w4a8.build()  # (before the patch: the shared fixture memoizes its modules)
    monkeypatch.setattr(legalize, "_is_global_avg_pool", lambda call: False)
    unfused = tvmq.quantize(
        mlperf_model("kws_dscnn_float32.tflite"), fixed("w4-kmeans-a8"), calib=calib
    )
    assert not any(
        gv.name_hint.startswith("lut_conv_int_avgpool")
        for gv, _ in unfused.fused().functions_items()
    )
    b = unfused.build()
    for x in rng.uniform(-50, 50, (3, 1, 49, 10, 1)).astype(np.float32):
        np.testing.assert_array_equal(a.run(x).view(np.uint32), b.run(x).view(np.uint32))


def test_host_depthwise_schedule_vectorizes_channels_and_keeps_results(kws_w4a8):
    """On a host CPU the depthwise kernel walks pixels outside and channels innermost
    (LLVM vectorizes across channels; 12.3 -> 5.2 us per KWS layer once the decoded
    weights are channel-innermost as well); its outputs equal the MCU schedule's exactly."""
    from tvmq.backend.mcu_measure import mcu_target
    from tvmq.backend.schedule import is_mcu_target, schedule_primfunc
    from tvmq.targets import host_llvm

    assert is_mcu_target(mcu_target("mps2-an386")) and not is_mcu_target(host_llvm())
    fused = kws_w4a8.fused()
    depthwise = [
        gv.name_hint
        for gv, f in fused.functions_items()
        if isinstance(f, tirx.PrimFunc) and '"tvmq.depthwise": 1' in f.script()
    ]
    assert len(depthwise) == 1, depthwise  # the four depthwise layers share one kernel
    call = next(
        b.value
        for block in fused["main"].body.blocks
        for b in block.bindings
        if "call_tir" in str(b.value.op) and b.value.args[0].name_hint == depthwise[0]
    )
    consts = [a.value.numpy() for a in call.args[1].fields[1:]]  # the layer's weights etc.
    x = np.random.default_rng(2).integers(
        -128, 128, [int(n) for n in call.args[1].fields[0].ty.shape]
    )
    outs = []
    for host in (False, True):
        isa = "cpu" if host else "mcu"
        prim = schedule_primfunc(fused[depthwise[0]], isa).with_attr("global_symbol", "k")
        assert ("T.vectorized" in prim.script()) == host  # the epilogue across channels
        # on the host the decoded weights are channel-innermost too (no strided gather)
        decoded = "lut_decode_int = T.sblock_alloc_buffer((T.int64(3), T.int64(3), T.int64(1), "
        decoded += "T.int64(64))"
        assert (decoded in prim.script()) == host
        outs.append(_run_kernel(prim, x, consts))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.unique(outs[0]).size > 10


def _run_kernel(prim, x, consts, target=None) -> np.ndarray:
    """The output of kernel ``prim`` (built for ``target``, default this host's exact
    target; float products fenced where it has FMA, as tvmq's pipeline does) on int8
    codes ``x`` and the layer's constant arguments ``consts``."""
    from tvmq.backend.fence import fence_float_products, needs_fences
    from tvmq.targets import host_llvm

    target = target or host_llvm()
    if needs_fences(target):
        prim = fence_float_products(prim)
    lib = tvm.compile(tvm.IRModule({"k": prim}), target=target)
    out = np.zeros([int(n) for n in prim.params[-1].shape], str(prim.params[-1].dtype))
    args = [tvm.runtime.tensor(a) for a in (x.astype(np.int8), *consts, out)]
    lib.mod["k"](*args)
    return args[-1].numpy()


def _kernel_call(fused, name):
    return next(
        b.value
        for block in fused["main"].body.blocks
        for b in block.bindings
        if "call_tir" in str(b.value.op) and b.value.args[0].name_hint == name
    )


@pytest.mark.skipif(
    __import__("tvmq.backend.schedule", fromlist=["x"]).schedule_isa(
        __import__("tvmq.targets", fromlist=["x"]).host_llvm()
    ) not in ("avx2", "avxvnni"),
    reason="this host CPU has no AVX2",
)  # fmt: skip
def test_avx2_schedule_tensorizes_the_regular_convs_and_keeps_results(kws_w4a8):
    """On an AVX2 host every regular conv of KWS (the one-channel first layer, the
    pointwise convs, the one with the fused average pool) accumulates 8 output channels
    per ``vpmaddwd``, the decoded weights stored in input-channel (or kernel-column)
    pairs and sign-extended to int16 when decoded; outputs equal the MCU schedule's bit
    for bit (measured: KWS kernel sum 115 -> 39 us, TE's default 128 us)."""
    from tvmq.backend.schedule import schedule_primfunc

    fused = kws_w4a8.fused()
    regular = [
        gv.name_hint
        for gv, f in fused.functions_items()
        if isinstance(f, tirx.PrimFunc) and '"tvmq.depthwise": 0' in f.script()
        and gv.name_hint.startswith("lut_conv")
    ]  # fmt: skip
    assert len(regular) == 3, regular
    rng = np.random.default_rng(3)
    for name in regular:
        call = _kernel_call(fused, name)
        consts = [a.value.numpy() for a in call.args[1].fields[1:]]
        x = rng.integers(-128, 128, [int(n) for n in call.args[1].fields[0].ty.shape])
        outs = []
        for isa in ("mcu", "avx2"):
            prim = schedule_primfunc(fused[name], isa).with_attr("global_symbol", "k")
            assert ("llvm.x86.avx2.pmadd.wd" in prim.script()) == (isa == "avx2"), name
            outs.append(_run_kernel(prim, x, consts))
        np.testing.assert_array_equal(outs[0], outs[1], err_msg=name)
        assert np.unique(outs[0]).size > 3, name


def _regular_convs(fused) -> list[str]:
    return [
        gv.name_hint
        for gv, f in fused.functions_items()
        if isinstance(f, tirx.PrimFunc) and '"tvmq.depthwise": 0' in f.script()
        and gv.name_hint.startswith("lut_conv")
    ]  # fmt: skip


def _avx512_isas() -> tuple:
    """``("avx512vnni",)`` when tvmq's LUT target for this host has AVX-512 VNNI."""
    from tvmq.backend.schedule import schedule_isa
    from tvmq.targets import lut_host_llvm

    return ("avx512vnni",) if schedule_isa(lut_host_llvm()) == "avx512vnni" else ()


VNNI = pytest.mark.skipif(
    __import__("tvmq.backend.schedule", fromlist=["x"]).schedule_isa(
        __import__("tvmq.targets", fromlist=["x"]).host_llvm()
    ) != "avxvnni",
    reason="this host CPU has no AVX-VNNI",
)  # fmt: skip


def _vnni_kernels_equal_int8_kernels(qm, n_regular: int) -> list[str]:
    """Each conv of ``qm`` (regular and depthwise) legalized with ``unsigned_inputs`` and
    scheduled for AVX-VNNI (and for AVX-512 VNNI where the host has it) gives the int8
    kernel's output (MCU schedule) bit for bit on the same random int8 codes; returns the
    regular convs' names."""
    from tvmq.backend.schedule import schedule_primfunc
    from tvmq.targets import lut_host_llvm

    signed, unsigned = qm.fused(False), qm.fused(True)
    names = _regular_convs(unsigned)
    assert len(names) == n_regular and names == _regular_convs(signed), names
    depthwise = [
        gv.name_hint
        for gv, f in unsigned.functions_items()
        if isinstance(f, tirx.PrimFunc) and '"tvmq.depthwise": 1' in f.script()
    ]
    assert len(depthwise) == 1, depthwise
    rng = np.random.default_rng(4)
    for name in names + depthwise:
        assert "lut_to_uint8" in unsigned[name].script()
        assert "lut_to_uint8" not in signed[name].script()
        shape = [int(n) for n in _kernel_call(signed, name).args[1].fields[0].ty.shape]
        x = rng.integers(-128, 128, shape)
        outs = []
        runs = [(signed, "mcu"), (unsigned, "avxvnni")] + [(unsigned, i) for i in _avx512_isas()]
        for fused, isa in runs:
            prim = schedule_primfunc(fused[name], isa).with_attr("global_symbol", "k")
            assert ("vpdpbusd" in prim.script()) == (isa != "mcu"), name
            consts = [a.value.numpy() for a in _kernel_call(fused, name).args[1].fields[1:]]
            target = lut_host_llvm() if isa == "avx512vnni" else None
            outs.append(_run_kernel(prim, x, consts, target))
        for out in outs[1:]:
            np.testing.assert_array_equal(outs[0], out, err_msg=name)
        assert np.unique(outs[0]).size > 3, name
    return names


@VNNI
def test_vnni_convs_take_uint8_inputs_and_equal_the_int8_kernels(kws_w4a8):
    """On an AVX-VNNI host the regular convs are legalized with ``unsigned_inputs`` (codes
    + 128, the zero point moved with them) and multiply 4 uint8 inputs x 8 output
    channels per ``vpdpbusd`` (KWS: the one-channel 10x4 first layer by kernel columns,
    the pointwise convs by input channels; a depthwise tap is one ``vpdpbusd`` of 8
    zero-extended inputs and int32-held weights); each equals the int8 kernel bit for bit
    (measured: KWS pointwise conv 13.5 -> 8.0 us, depthwise 5.5 -> 4.1 us, whole model
    89 -> 58 us)."""
    from tvmq.backend.schedule import unsigned_inputs_for

    assert unsigned_inputs_for("avxvnni") and not unsigned_inputs_for("avx2")
    assert unsigned_inputs_for("avx512vnni")
    names = _vnni_kernels_equal_int8_kernels(kws_w4a8, 3)
    # KWS has 64 channels everywhere: on AVX-512 VNNI each vpdpbusd takes 16 of them
    from tvmq.backend.schedule import schedule_primfunc

    for name in names:
        script = schedule_primfunc(kws_w4a8.fused(True)[name], "avx512vnni").script()
        assert "llvm.x86.avx512.vpdpbusd.512" in script, name
        assert "llvm.x86.avx512.vpdpbusd.256" not in script, name


@VNNI
def test_vnni_pads_three_input_channels_to_four():
    """A 3-channel first conv (an RGB input) gets its channels padded to 4 inside the
    kernel (the input with its zero point, the weights with zeros), so it takes the VNNI
    path too, with the same results (IC ResNet-8's first conv: 47 -> 7.7 us)."""
    calib = [np.random.default_rng(i).uniform(-1, 1, (1, 3, 12, 12)).astype(np.float32)
             for i in range(4)]  # fmt: skip
    qm = tvmq.quantize(onnx_model(), fixed("w4-kmeans-a8"), calib=calib, layout="NHWC")
    (name,) = _vnni_kernels_equal_int8_kernels(qm, 1)
    script = qm.fused(True)[name].script()
    assert '(T.int64(1), T.int64(12), T.int64(12), T.int64(4)), "uint8"' in script, script
