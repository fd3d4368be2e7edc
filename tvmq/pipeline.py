"""The Relax build pipeline tvmq uses: TVM's CPU pipeline without ``FoldConstant``.

TVM's default CPU pipeline runs ``FoldConstant`` right after ``LegalizeOps``. A
``quant.lut_decode`` that no LUT kernel absorbed legalizes to a ``call_tir`` whose
arguments are all constants, and ``FoldConstant`` would evaluate it at build time, storing
the float weight again. This pipeline keeps everything else (legalization, TIR op
patterns, fusion of bias / ReLU / next-layer quantize into the LUT kernels, memory
planning) and drops that one pass; it also applies tvmq's schedule to the integer LUT
kernels.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu


def fusion_passes() -> list:
    """Legalize, annotate op patterns, fuse: the IR a deployment generates code from."""
    return [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ]


def _schedule_integer_kernels(target=None) -> tvm.transform.Pass:
    """The integer LUT kernels' schedule (:mod:`tvmq.backend.schedule`): decoding each
    output channel's weights once instead of once per multiply-accumulate pays on any CPU,
    not only on an MCU; on a host CPU depthwise convs vectorize across channels, on AVX2
    regular convs accumulate 8 channels per ``vpmaddwd``, on AVX-VNNI every conv uses
    ``vpdpbusd`` (:func:`tvmq.backend.schedule.schedule_isa`)."""
    from .backend.schedule import schedule_isa, schedule_mcu

    isa = schedule_isa(target)

    @tvm.transform.module_pass(opt_level=0, name="TvmqScheduleIntegerKernels")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return schedule_mcu(mod, isa)

    return _pass


def lut_pipeline(target: tvm.target.Target, tuning: str | None = None) -> tvm.transform.Pass:
    """The full Relax pipeline for ``target`` (a CPU target), without ``FoldConstant``;
    with ``tuning`` (a MetaSchedule work directory) the tuned schedules are applied first.
    On a target that may contract float products (x86 with FMA, e.g.
    :func:`tvmq.targets.lut_host_llvm` on an AVX-512 CPU) every float product is fenced
    (:mod:`tvmq.backend.fence`), so the build stays bit-exact with the device's C."""
    from .backend.fence import FenceFloatProducts, needs_fences

    @tvm.transform.module_pass(opt_level=0, name="TvmqLutPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            # the database pass must be created under the target context
            apply_db = [] if tuning is None else [relax.transform.MetaScheduleApplyDatabase(tuning)]
            seq = tvm.transform.Sequential(
                cpu.library_dispatch_passes(target)
                + fusion_passes()
                + apply_db
                + [_schedule_integer_kernels(target)]
                + ([FenceFloatProducts()] if needs_fences(target) else [])
                + cpu.dataflow_lower_passes(target)
                + cpu.finalize_passes(target)
            )
            return seq(mod)

    return _pipeline
