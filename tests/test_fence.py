"""The float-product fences that keep an FMA build bit-exact (tvmq.backend.fence)."""

import platform

import numpy as np
import pytest
import tvm
from tvm.script import tirx as T

from tvmq.backend.fence import fence_float_products, needs_fences

X86 = platform.machine().lower() in ("x86_64", "amd64")


@T.prim_func
def _before(x: T.Buffer((64,), "float32"), q: T.Buffer((64,), "int32"),
            y: T.Buffer((64,), "float32"), r: T.Buffer((64,), "int32")):  # fmt: skip
    for i in range(64):
        y[i] = x[i] * T.float32(3.0999999046325684) + T.float32(0.5)
        r[i] = q[i] * 3 + 1


@T.prim_func
def _expected(x: T.Buffer((64,), "float32"), q: T.Buffer((64,), "int32"),
              y: T.Buffer((64,), "float32"), r: T.Buffer((64,), "int32")):  # fmt: skip
    for i in range(64):
        y[i] = T.call_llvm_pure_intrin(
            "float32", "llvm.arithmetic.fence", x[i] * T.float32(3.0999999046325684)
        ) + T.float32(0.5)
        r[i] = q[i] * 3 + 1


def test_float_products_are_fenced_and_integer_ones_are_not():
    tvm.ir.assert_structural_equal(
        fence_float_products(_before).with_attr("global_symbol", "_expected"), _expected
    )


@pytest.mark.skipif(not X86, reason="llvm.arithmetic.fence is lowered on x86")
def test_fenced_build_on_an_fma_target_rounds_like_c():
    """On an FMA target (AVX-512) the unfenced ``x * s + b`` compiles to a fused
    multiply-add; fenced, to a multiply and an add whose results equal numpy's (two
    roundings, what C with ``-ffp-contract=off`` computes) bit for bit."""
    target = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})
    assert needs_fences(target)
    assert not needs_fences(tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512",
                                               "mattr": ["-fma"]}))  # fmt: skip

    def asm(func):
        rt = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                         target=target)  # fmt: skip
        return rt, rt.mod.inspect_source("asm")

    _, plain = asm(_before)
    rt, fenced = asm(fence_float_products(_before))
    assert "vfmadd" in plain
    assert "vfmadd" not in fenced
    if "avx512f" not in open("/proc/cpuinfo").read():
        return  # compiled for AVX-512: run it only where it runs
    rng = np.random.default_rng(0)
    x = rng.standard_normal(64).astype(np.float32)
    q = rng.integers(-1000, 1000, 64).astype(np.int32)
    outs = [tvm.runtime.tensor(np.zeros(64, t)) for t in ("float32", "int32")]
    rt["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(q), *outs)
    want = (x * np.float32(3.0999999046325684)).astype(np.float32) + np.float32(0.5)
    np.testing.assert_array_equal(outs[0].numpy().view(np.uint32), want.view(np.uint32))
    np.testing.assert_array_equal(outs[1].numpy(), q * 3 + 1)
