"""The host LLVM target tvmq builds for: this machine's CPU, one core by default.

TVM's plain ``llvm`` target means baseline x86-64 (SSE2): no AVX2 / AVX-512, so LLVM
cannot vectorize the int8 dot products of the LUT kernels well. tvmq asks LLVM for the
host CPU (``target.llvm_get_system_cpu``, e.g. ``rocketlake``), as ``-mcpu=native``
would. ``TVMQ_HOST_MCPU=generic`` (or another LLVM CPU name) overrides it, e.g. to build
for a different machine. (MetaSchedule's JSON database looks records up by workload,
not by target: schedules tuned for one x86 CPU are applied on another, as valid if not
as fast.)

TVM's LLVM backend always allows floating-point contraction (``AllowFPOpFusion::Fast``;
its ``fast-math-contract`` option does not turn it off), so on a CPU with FMA the float
epilogues round differently from the C the device runs (``-ffp-contract=off``): 6e-8
apart on the test model. ``exact=True`` (the default) builds without the ``fma``
feature, which keeps host and device outputs bit-identical; LLVM then also drops the
AVX-512 extensions that depend on it (measured, KWS W4A8 LUT model on the 2-core Xeon
here: generic x86-64 595 us, this CPU exact 314 us, with FMA 262 us). AVX-VNNI (the VEX
``vpdpbusd``, which needs only AVX2) is added back when the CPU has it: the integer
convs use it (:func:`tvmq.backend.schedule.unsigned_inputs_for`).

LUT models build for :func:`lut_host_llvm` instead: on a CPU with AVX-512 VNNI it keeps
FMA (and so AVX-512: 16 channels per ``vpdpbusd``), and tvmq's pipeline fences every float
product (:mod:`tvmq.backend.fence`), which keeps it bit-exact too.
"""

from __future__ import annotations

import functools
import os
import platform


@functools.cache
def host_cpu() -> str | None:
    """LLVM's name for this machine's CPU (None: unknown or ``TVMQ_HOST_MCPU=generic``)."""
    name = os.environ.get("TVMQ_HOST_MCPU")
    if name is None:
        import tvm

        get = tvm.get_global_func("target.llvm_get_system_cpu", allow_missing=True)
        name = str(get()) if get is not None else "generic"
    return None if name in ("", "generic") else name


def host_llvm(num_cores: int = 1, *, exact: bool = True):
    """The LLVM target of this CPU (``num-cores``; ``exact``: no FMA contraction, see the
    module doc)."""
    import tvm

    spec: dict = {"kind": "llvm", "num-cores": int(num_cores)}
    cpu = host_cpu()
    if cpu is not None:
        spec["mcpu"] = cpu
        if exact and platform.machine().lower() in ("x86_64", "amd64", "i686"):
            spec["mattr"] = ["-fma"]  # (Arm cores fuse multiply-adds whatever the features)
            if "TVMQ_HOST_MCPU" not in os.environ and _host_has("avxvnni"):
                spec["mattr"].append("+avxvnni")  # VEX VNNI needs AVX2 only, not FMA
    return tvm.target.Target(spec)


AVX512_VNNI = ("avx512vnni", "avx512bw", "avx512vl")
"""The LLVM features tvmq's 16-lane ``vpdpbusd`` kernels need
(:func:`tvmq.backend.schedule.schedule_isa`)."""


def lut_host_llvm(num_cores: int = 1):
    """The host target tvmq builds LUT models for (:func:`tvmq.pipeline.lut_pipeline`):
    on an x86 CPU with AVX-512 VNNI (and BW, VL) this CPU with all its features, FMA
    included, since LLVM's AVX-512 depends on it: the integer convs then take 16 channels
    per ``vpdpbusd`` (KWS W4A8 LUT model here: 52.5 -> 46.6 us). Such a target may
    contract float products, so it is exact only through ``lut_pipeline``, which fences
    them (:mod:`tvmq.backend.fence`). Any other CPU, or ``TVMQ_HOST_MCPU`` set:
    :func:`host_llvm`. Builds outside tvmq's pipeline (calibration, the float model) use
    :func:`host_llvm`."""
    cpu = host_cpu()
    if (
        cpu is None
        or "TVMQ_HOST_MCPU" in os.environ
        or platform.machine().lower() not in ("x86_64", "amd64")
        or not all(_host_has(f) for f in (*AVX512_VNNI, "fma"))
    ):
        return host_llvm(num_cores)
    return host_llvm(num_cores, exact=False)


def _host_has(feature: str) -> bool:
    """Whether LLVM detects ``feature`` on this machine's CPU."""
    import tvm

    get = tvm.get_global_func("tvm.codegen.llvm.GetHostCPUFeatures", allow_missing=True)
    return get is not None and bool(dict(get()).get(feature, False))
