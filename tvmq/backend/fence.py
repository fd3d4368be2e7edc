"""Keep every float product rounded on its own: what makes an FMA target bit-exact.

TVM's LLVM backend always allows floating-point contraction (``AllowFPOpFusion::Fast``),
so on a CPU with FMA ``x * s + b`` becomes one fused multiply-add that rounds once, where
the C the device runs (``-ffp-contract=off``) rounds the product and then the sum: the
float epilogues of a LUT model then differ in the last bits (6e-8 on the test model).
Leaving out the ``fma`` feature avoids that, but LLVM's AVX-512 depends on it, so the
integer kernels would lose the 16-lane ``vpdpbusd``.

:func:`fence_float_products` wraps every float multiply in ``llvm.arithmetic.fence``
(the intrinsic behind clang's ``__arithmetic_fence``): LLVM must not fuse or reassociate
across it, so the product is rounded as written and the add after it is a separate
instruction, while the target keeps FMA and AVX-512 for everything else. Integer
arithmetic is untouched. Measured on the test model: bit-identical to the C with
AVX-512 on; an unfenced fused build differs in the last bits.

Limit: the pass runs on the PrimFuncs of the Relax pipeline; float products that TVM's
own lowering creates later (``LowerIntrin`` expanding e.g. ``tanh``) are not fenced. The
LUT models' float parts (input quantize, float epilogues, average pools, softmax) have
none of those.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx
from tvm.ir.prim.expr import Mul

FENCE = "llvm.arithmetic.fence"


def _fence(e):
    dtype = str(e.ty.dtype)
    if not dtype.startswith(("float", "bfloat")):
        return e
    return tirx.call_llvm_pure_intrin(dtype, FENCE, e)


def fence_float_products(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with every float ``a * b`` replaced by ``fence(a * b)`` (unchanged when
    it has no float product)."""
    return tvm_ffi.structural_map(func, (Mul, _fence))


def needs_fences(target) -> bool:
    """Whether an LLVM ``target`` may contract float products: an x86 CPU with FMA."""
    if target is None or target.kind.name != "llvm":
        return False
    from tvm.target.codegen import llvm_cpu_has_features

    try:
        return bool(llvm_cpu_has_features(["fma"], target))
    except tvm.TVMError:  # not an x86 LLVM target (the intrinsic is x86-only in LLVM)
        return False


def fence_module(mod: tvm.IRModule) -> tvm.IRModule:
    """:func:`fence_float_products` on every PrimFunc of ``mod`` (other functions kept)."""
    out = {}
    for gv, f in mod.functions_items():
        out[gv] = fence_float_products(f) if isinstance(f, tirx.PrimFunc) else f
    return tvm.IRModule(out, attrs=mod.attrs)


def FenceFloatProducts() -> tvm.transform.Pass:
    """The module pass of :func:`fence_module`."""

    @tvm.transform.module_pass(opt_level=0, name="TvmqFenceFloatProducts")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return fence_module(mod)

    return _pass
