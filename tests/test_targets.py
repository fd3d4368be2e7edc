"""The host LLVM target: this CPU, and no FMA contraction unless asked for."""

import platform

import numpy as np
import pytest
from test_integer_path import calib_batches
from test_quantize_e2e import onnx_model

import tvmq
from tvmq import targets
from tvmq.backend.aot import generate_aot
from tvmq.backend.host import HostModel
from tvmq.config import fixed_point

X86 = platform.machine().lower() in ("x86_64", "amd64")


def test_host_target_names_this_cpu(monkeypatch):
    cpu = targets.host_cpu()
    t = targets.host_llvm()
    assert int(t.attrs["num-cores"]) == 1
    if cpu is None:
        pytest.skip("LLVM does not know this CPU")
    assert str(t.attrs["mcpu"]) == cpu
    if X86:
        mattr = [str(a) for a in t.attrs["mattr"]]
        assert "-fma" in mattr
        # AVX-VNNI back on whenever this CPU has it (it does not need FMA)
        assert ("+avxvnni" in mattr) == targets._host_has("avxvnni")
        assert "mattr" not in targets.host_llvm(exact=False).attrs
    monkeypatch.setenv("TVMQ_HOST_MCPU", "generic")
    targets.host_cpu.cache_clear()
    try:
        assert "mcpu" not in targets.host_llvm().attrs
    finally:
        monkeypatch.undo()
        targets.host_cpu.cache_clear()


def test_lut_target_keeps_avx512_only_where_the_cpu_has_vnni():
    """tvmq's LUT target keeps FMA (and with it AVX-512) exactly when this CPU has AVX-512
    VNNI; otherwise it is the exact target; ``TVMQ_HOST_MCPU`` turns it off."""
    from tvmq.backend.fence import needs_fences

    t = targets.lut_host_llvm(2)
    assert int(t.attrs["num-cores"]) == 2
    wide = X86 and all(
        targets._host_has(f) for f in ("avx512vnni", "avx512bw", "avx512vl", "fma")
    ) and targets.host_cpu() is not None  # fmt: skip
    assert needs_fences(t) == wide
    if not wide:
        assert str(t) == str(targets.host_llvm(2))
    assert not needs_fences(targets.host_llvm())


@pytest.mark.skipif(not X86, reason="FMA contraction is only switched off on x86")
def test_exact_host_build_equals_the_c_bit_for_bit(tmp_path):
    """The default build and the generated C agree exactly (float epilogues included);
    with FMA allowed they differ in the last bits, which is why it is not the default."""
    qm = tvmq.quantize(onnx_model(), fixed_point("w4-kmeans-a8"), calib=calib_batches(4))
    host = HostModel(generate_aot(qm.fused()), tmp_path)
    xs = np.random.default_rng(3).standard_normal((6, 1, 3, 12, 12)).astype(np.float32)
    c = np.stack([host.run(x) for x in xs])
    exact = np.stack([qm.build().run(x) for x in xs])
    np.testing.assert_array_equal(exact.view(np.uint32), c.view(np.uint32))
    if targets.host_cpu() is not None:
        qm._vms.clear()
        fast = qm.build(targets.host_llvm(exact=False))
        fused = np.stack([fast.run(x) for x in xs])
        np.testing.assert_allclose(fused, c, rtol=1e-5, atol=1e-7)


def test_schedule_isa_follows_the_targets_cpu():
    """The host schedule is chosen from the target's CPU features, not from this machine:
    an AVX2 x86 CPU gets the vpmaddwd convs, baseline x86-64 and an Arm host the generic
    vector schedule, a Cortex-M board the MCU one."""
    import tvm

    from tvmq.backend.mcu_measure import mcu_target
    from tvmq.backend.schedule import schedule_isa

    def isa(spec):
        return schedule_isa(tvm.target.Target(spec))

    assert isa({"kind": "llvm", "mcpu": "haswell"}) == "avx2"
    assert isa({"kind": "llvm", "mcpu": "alderlake"}) == "avxvnni"
    assert isa({"kind": "llvm", "mcpu": "haswell", "mattr": ["+avxvnni"]}) == "avxvnni"
    assert isa({"kind": "llvm", "mcpu": "icelake-server"}) == "avx512vnni"
    # without FMA LLVM drops AVX-512 (it depends on it): the exact target's VEX VNNI
    assert isa({"kind": "llvm", "mcpu": "icelake-server", "mattr": ["-fma"]}) == "avx2"
    assert isa({"kind": "llvm", "mcpu": "x86-64"}) == "cpu"
    assert isa({"kind": "llvm", "mtriple": "aarch64-linux-gnu"}) == "cpu"
    assert schedule_isa(mcu_target("mps2-an386")) == "mcu"
    assert schedule_isa(None) == "mcu"
