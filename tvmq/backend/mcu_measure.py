"""Measuring one kernel on an emulated Cortex-M: the cost MetaSchedule tunes against for
``tvmq tune --target qemu:BOARD``.

A (scheduled) PrimFunc is lowered through tvmq's plain-C path (the same code the deployed
model runs; vectorized loops stay scalar: ``tirx.disable_vectorize``), wrapped in a
harness that fills its buffers with seeded pseudo-random data, calls it once to warm up
and once between two SysTick reads, cross-compiled for the board and run in QEMU with
``-icount shift=0``. The cost is instructions per call (ticks x instructions per tick, so
resolution one tick): deterministic, so identical candidates cost the same.

:class:`QemuBuilder` and :class:`QemuRunner` plug this into MetaSchedule: the builder
turns each candidate into its C file (a candidate the C path cannot print fails to build
and is skipped by the search), the runner compiles and runs it and reports instructions
as ``run_secs`` scaled by 1e-9 (one instruction = 1 ns of QEMU's virtual time).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import tvm

from ..errors import TvmqError
from .c_codegen import C_PRELUDE, CFunction, CodegenError, ctype, lower_for_c, print_function
from .qemu import COMMON_FLAGS, _tool, board, link_flags, run_elf

_CPU = {"mps2-an385": "cortex-m3", "mps2-an386": "cortex-m4", "mps2-an500": "cortex-m7",
        "mps3-an547": "cortex-m55"}  # fmt: skip


def mcu_target(board_name: str) -> tvm.target.Target:
    """The tuning target for a QEMU board: LLVM's description of its core, one core.
    MetaSchedule has no schedule rules for the ``c`` target kind; the candidates are
    printed as C by tvmq (:func:`kernel_c`), never compiled by LLVM."""
    board(board_name)  # unknown board -> UnknownNameError listing the known ones
    mcpu = _CPU[board_name]
    return tvm.target.Target(
        {"kind": "llvm", "mtriple": "thumbv7em-none-eabi", "mcpu": mcpu, "num-cores": 1}
    )


def kernel_c(mod: tvm.IRModule, name: str = "tvmq_kernel") -> CFunction:
    """Plain C of the single PrimFunc of ``mod`` as scheduled (no tvmq MCU schedule)."""
    funcs = [(gv, f) for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    if len(funcs) != 1:
        raise TvmqError(f"expected one PrimFunc, got {len(funcs)}")
    lowered = lower_for_c(tvm.IRModule({name: funcs[0][1]}), scalar=True)
    return print_function(name, lowered[name])


def harness(cf: CFunction, seed: int = 1) -> str:
    """A bare-metal ``main`` timing one call of ``cf`` with SysTick; prints ``TICKS n``."""
    lines = [C_PRELUDE, "#include <stdio.h>\n#include <stdlib.h>\n", "static " + cf.source]
    args = []
    for i, (_, dtype, numel) in enumerate(cf.params):
        lines.append(f"static {ctype(dtype)} a{i}[{max(numel, 1)}] __attribute__((aligned(8)));")
        args.append(f"a{i}")
    if cf.workspace:
        lines.append(f"static uint8_t ws[{cf.workspace}] __attribute__((aligned(8)));")
        args.append("ws")
    fills = []
    for i, (_, dtype, numel) in enumerate(cf.params[:-1]):
        if dtype.startswith("float"):
            value = "(float)((int32_t)(rnd() % 2001u) - 1000) * 0.001f"
        elif dtype == "int32":
            value = "(int32_t)(rnd() % 2001u) - 1000"
        else:  # int8 / uint8 codes and activations: any byte is valid
            value = f"({ctype(dtype)})rnd()"
        fills.append(f"  for (int32_t i = 0; i < {numel}; ++i) a{i}[i] = {value};")
    call = f"tvmq_kernel({', '.join(args)});"
    lines.append(
        f"static uint32_t lcg = {seed}u;\n"
        "static uint32_t rnd(void) { lcg = lcg * 1664525u + 1013904223u; return lcg >> 8; }\n"
        "#define CSR (*(volatile uint32_t*)0xE000E010)\n"
        "#define RVR (*(volatile uint32_t*)0xE000E014)\n"
        "#define CVR (*(volatile uint32_t*)0xE000E018)\n"
        "int main(void) {\n" + "\n".join(fills) + "\n"
        f"  {call}\n"
        "  RVR = 0xFFFFFF; CVR = 0; CSR = 5;\n"
        "  uint32_t t0 = CVR;\n"
        f"  {call}\n"
        "  uint32_t t1 = CVR;\n"
        '  printf("TICKS %lu\\n", (unsigned long)((t0 - t1) & 0xFFFFFF));\n'
        "  exit(0);\n}\n"
    )
    return "\n".join(lines)


def instructions(cf: CFunction, board_name: str, workdir: Path, timeout: float = 60.0) -> int:
    """Instructions one call of ``cf`` takes on ``board_name`` (see the module doc)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "kernel.c"
    src.write_text(harness(cf))
    return _compile_and_run(src, board_name, timeout)


def qemu_builder_runner(board_name: str):
    """``(builder, runner)`` measuring candidates on ``board_name`` (see the module doc)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class QemuBuilder(ms.builder.PyBuilder):
        """Candidate -> its plain-C source file (the artifact the runner compiles)."""

        def build(self, build_inputs):
            results = []
            for inp in build_inputs:
                try:
                    cf = kernel_c(inp.mod)
                    d = Path(tempfile.mkdtemp(prefix="tvmq-mcu-cand-"))
                    path = d / "kernel.c"
                    path.write_text(harness(cf))
                    results.append(ms.builder.BuilderResult(str(path), None))
                except Exception as exc:  # a candidate the C path cannot print
                    results.append(ms.builder.BuilderResult(None, f"{type(exc).__name__}: {exc}"))
            return results

    @derived_object
    class QemuRunner(ms.runner.PyRunner):
        """Compile each candidate for ``board_name``, run it in QEMU, cost = instructions."""

        def run(self, runner_inputs):
            futures = []
            for inp in runner_inputs:
                src = Path(inp.artifact_path)
                try:
                    n = _compile_and_run(src, board_name)
                    result = ms.runner.RunnerResult([n * 1e-9], None)
                except Exception as exc:
                    result = ms.runner.RunnerResult(None, f"{type(exc).__name__}: {exc}")
                # (MetaSchedule's RemoveBuildArtifact callback deletes the candidate's dir)
                futures.append(ms.runner.RunnerFuture(lambda: True, lambda r=result: r))
            return futures

    board(board_name)  # unknown board -> UnknownNameError before any search
    return QemuBuilder(), QemuRunner()


def _compile_and_run(src: Path, board_name: str, timeout: float = 60.0) -> int:
    b = board(board_name)
    elf = src.with_suffix(".elf")
    gcc = _tool("arm-none-eabi-gcc", "gcc-arm-none-eabi")
    res = subprocess.run(
        [gcc, *COMMON_FLAGS, "-Wno-unused-function", "-Wno-unused-variable", *link_flags(b),
         str(src), "-o", str(elf)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if res.returncode != 0:
        raise TvmqError(f"kernel harness does not compile: {res.stderr[-800:]}")
    out = run_elf(elf, board_name, timeout=timeout)
    try:
        ticks = int(out.split("TICKS ")[1].split()[0])
    except (IndexError, ValueError):
        raise TvmqError(f"kernel harness printed no tick count: {out[-300:]!r}") from None
    return round(ticks * b.instructions_per_tick)


def measure_kernels(
    mod: tvm.IRModule, board_name: str, names: list[str], skip_unprintable: bool = False
) -> dict[str, int | None]:
    """Instructions per call of each named PrimFunc of ``mod`` as it is scheduled. With
    ``skip_unprintable`` a kernel the plain-C path cannot print gets None (TE's default
    schedule of some integer kernels lowers to a dtype-changing buffer view, which never
    ships: deployments use tvmq's schedule or a tuned one)."""
    out: dict[str, int | None] = {}
    for name in names:
        with tempfile.TemporaryDirectory(prefix="tvmq-mcu-") as d:
            try:
                cf = kernel_c(tvm.IRModule({"main": mod[name]}))
            except CodegenError:
                if not skip_unprintable:
                    raise
                out[name] = None
                continue
            out[name] = instructions(cf, board_name, Path(d))
    return out
