"""Run an AOT model on Cortex-M boards emulated by QEMU (bare metal, picolibc semihosting).

The generated ``main.c`` embeds the input samples, times each ``tvmq_model_run`` with
SysTick and prints the output bytes in hex (bit-exact transfer). QEMU runs with
``-icount shift=0``: one instruction takes 1 ns of virtual time, and SysTick counts the
board's reference clock, so one tick is 40 instructions on the MPS2 boards (25 MHz) and
31.25 on MPS3 AN547 (32 MHz)
(:data:`BOARDS`; ``tests/test_qemu.py`` measures it per board with a loop of known
length). Counts are deterministic: the same binary and inputs give the same numbers on
every run. Their resolution is one tick (40 instructions): the same input measured at a
different point of a run can differ by one tick, as the counter's phase differs.

Toolchains come from Debian: ``gcc-arm-none-eabi``, ``picolibc-arm-none-eabi``,
``qemu-system-arm``. Floating-point contraction is disabled (``-ffp-contract=off``) on the
device and the host alike so float epilogues round identically.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TvmqError
from .host import ToolchainError


@dataclass(frozen=True)
class Board:
    """A QEMU machine and the compiler flags for its core."""

    machine: str
    cpu_flags: tuple[str, ...]
    flash: int = 0x00000000
    flash_size: int = 0x400000
    ram: int = 0x20000000
    ram_size: int = 0x400000
    instructions_per_tick: float = 40.0


_FPU_M4 = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
BOARDS = {
    "mps2-an385": Board("mps2-an385", ("-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft")),
    "mps2-an386": Board("mps2-an386", _FPU_M4),
    "mps2-an500": Board(
        "mps2-an500", ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16")
    ),
    # MPS3 AN547: 512 KiB ITCM at 0 (code), 512 KiB DTCM at 0x20000000, SysTick at 32 MHz.
    "mps3-an547": Board(
        "mps3-an547",
        ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"),
        flash_size=0x80000,
        ram_size=0x80000,
        instructions_per_tick=31.25,
    ),
}
DEFAULT_BOARD = "mps2-an386"
COMMON_FLAGS = ("-O2", "-std=c99", "-ffp-contract=off", "-Wall", "-Werror")


def board(name: str) -> Board:
    if name not in BOARDS:
        from ..errors import UnknownNameError

        raise UnknownNameError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}")
    return BOARDS[name]


def link_flags(b: Board) -> list[str]:
    """Core flags, picolibc semihosting, and the board's memory map for the linker."""
    return [
        *b.cpu_flags, "--specs=picolibc.specs", "--oslib=semihost",
        f"-Wl,--defsym=__flash={b.flash}", f"-Wl,--defsym=__flash_size={b.flash_size}",
        f"-Wl,--defsym=__ram={b.ram}", f"-Wl,--defsym=__ram_size={b.ram_size}",
    ]  # fmt: skip


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolchainError(f"{name} not found: install the Debian package '{package}'")
    return path


def _hex_array(name: str, arr: np.ndarray) -> str:
    data = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
    body = ",".join(f"0x{b:02x}" for b in data)
    return f"static const uint8_t {name}[{data.size}] __attribute__((aligned(16))) = {{{body}}};\n"


_MAIN = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tvmq_model.h"

#define SYST_CSR (*(volatile uint32_t*)0xE000E010)
#define SYST_RVR (*(volatile uint32_t*)0xE000E014)
#define SYST_CVR (*(volatile uint32_t*)0xE000E018)

%(inputs)s
static tvmq_output_t out[TVMQ_OUTPUT_SIZE];

/* Per-layer profile: the executor calls tvmq_layer_mark(i) after kernel i. */
static volatile int profiling;
static uint32_t layer_t0, layer_ticks[%(n_layers)d];
void tvmq_layer_mark(int i) {
  if (!profiling) return;
  uint32_t t = SYST_CVR;
  layer_ticks[i] = (layer_t0 - t) & 0xFFFFFF;
  layer_t0 = SYST_CVR;
}

/* Stack high-water mark: paint the free RAM between the end of bss and the stack pointer,
 * run, and find the lowest word the stack overwrote (picolibc's linker script symbols). */
extern char __end[], __stack[];
#define PAINT 0xA5A5A5A5u
static uint32_t* paint_base(void) { return (uint32_t*)(((uintptr_t)__end + 3) & ~(uintptr_t)3); }
static void paint_stack(void) {
  uint32_t* sp;
  __asm volatile("mov %%0, sp" : "=r"(sp));
  for (uint32_t* p = paint_base(); p < sp - 64; ++p) *p = PAINT;
}
static unsigned long stack_used(void) {
  uint32_t* p = paint_base();
  while (*p == PAINT) ++p;
  return (unsigned long)(__stack - (char*)p);
}

int main(void) {
  paint_stack();
  SYST_RVR = 0xFFFFFF;
  SYST_CVR = 0;
  SYST_CSR = 5; /* core clock source, counter on, no interrupt */
  /* the first inference runs before any printf, so the mark is main + the model */
  int rc0 = tvmq_model_run((const tvmq_input_t*)samples, out);
  unsigned long stack = stack_used();
  printf("STACK %%lu rc %%d\n", stack, rc0);
  for (int s = 0; s < %(n)d; ++s) {
    const tvmq_input_t* x =
        (const tvmq_input_t*)(samples + s * sizeof(tvmq_input_t) * TVMQ_INPUT_SIZE);
    uint32_t t0 = SYST_CVR;
    int rc = tvmq_model_run(x, out);
    uint32_t t1 = SYST_CVR;
    printf("RUN %%d rc %%d ticks %%lu\n", s, rc, (unsigned long)((t0 - t1) & 0xFFFFFF));
    const uint8_t* b = (const uint8_t*)out;
    printf("OUT %%d ", s);
    for (unsigned i = 0; i < sizeof(out); ++i) printf("%%02x", b[i]);
    printf("\n");
  }
  /* one more inference, profiled layer by layer */
  profiling = 1;
  layer_t0 = SYST_CVR;
  tvmq_model_run((const tvmq_input_t*)samples, out);
  profiling = 0;
  for (int i = 0; i < %(n_layers)d; ++i)
    printf("LAYER %%d ticks %%lu\n", i, (unsigned long)layer_ticks[i]);
  fflush(stdout);
  exit(0);
}
"""


@dataclass
class DeviceResult:
    """What a device run reports: outputs (bit-exact), instructions per inference,
    flash (text + data), static RAM (data + bss, the arena included) and the stack
    high-water mark of ``main`` plus one inference."""

    outputs: np.ndarray
    instructions: list[int]
    flash_bytes: int
    ram_bytes: int
    stack_bytes: int
    log: str
    layer_instructions: list[int] = field(default_factory=list)
    """Instructions per kernel call (``aot.layers``), from one profiled inference; each
    includes the few instructions of the profiling hook and has one-tick resolution."""


def build_elf(aot, inputs: np.ndarray, workdir: Path, board_name: str = DEFAULT_BOARD) -> Path:
    """Cross-compile the model and a driver embedding ``inputs`` (N, *input_shape)."""
    b = board(board_name)
    gcc = _tool("arm-none-eabi-gcc", "gcc-arm-none-eabi")
    if not Path("/usr/lib/picolibc/arm-none-eabi/picolibc.specs").exists():
        raise ToolchainError(
            "picolibc not found: install the Debian package 'picolibc-arm-none-eabi'"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    inputs = np.ascontiguousarray(inputs, dtype=aot.input_dtype)
    if inputs.shape[1:] != aot.input_shape:
        raise TvmqError(f"inputs must be (N, *{aot.input_shape}), got {inputs.shape}")
    (workdir / "tvmq_model.c").write_text(aot.source)
    (workdir / "tvmq_model.h").write_text(aot.header)
    (workdir / "main.c").write_text(
        _MAIN
        % {
            "inputs": _hex_array("samples", inputs),
            "n": inputs.shape[0],
            "n_layers": max(1, len(getattr(aot, "layers", []))),
        }
    )
    elf = workdir / f"tvmq_{b.machine}.elf"
    cmd = [
        gcc, *COMMON_FLAGS, "-DTVMQ_PROFILE", *link_flags(b),
        str(workdir / "main.c"), str(workdir / "tvmq_model.c"), "-o", str(elf), "-lm",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise ToolchainError(f"arm-none-eabi-gcc failed:\n{res.stderr[-3000:]}")
    return elf


def elf_sizes(elf: Path) -> tuple[int, int]:
    """``(flash, ram)``: text + data, and data + bss (static RAM, arena included)."""
    size = _tool("arm-none-eabi-size", "binutils-arm-none-eabi")
    out = subprocess.run([size, str(elf)], capture_output=True, text=True, check=True).stdout
    text, data, bss = (int(v) for v in out.splitlines()[1].split()[:3])
    return text + data, data + bss


def run_elf(elf: Path, board_name: str = DEFAULT_BOARD, timeout: float = 120.0) -> str:
    """Run ``elf`` in QEMU with deterministic instruction counting; returns its output."""
    qemu = _tool("qemu-system-arm", "qemu-system-arm")
    cmd = [
        qemu, "-M", board(board_name).machine, "-nographic",
        "-semihosting-config", "enable=on,target=native", "-icount", "shift=0",
        "-kernel", str(elf),
    ]  # fmt: skip
    try:
        res = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        parts = [exc.stdout or b"", exc.stderr or b""]
        tail = "".join(p.decode(errors="replace") if isinstance(p, bytes) else p for p in parts)
        tail = tail[-2000:]
        raise TvmqError(
            f"QEMU ({board_name}) timed out after {timeout} s; log tail:\n{tail}"
        ) from None
    if res.returncode != 0:
        raise TvmqError(
            f"QEMU ({board_name}) exited with {res.returncode}; log tail:\n"
            f"{(res.stdout + res.stderr)[-2000:]}"
        )
    return res.stdout + res.stderr  # semihosting console output lands on stderr


def run_on_device(
    aot, inputs: np.ndarray, workdir: Path, board_name: str = DEFAULT_BOARD
) -> DeviceResult:
    """Build, run in QEMU, parse outputs (bit-exact) and per-inference instruction counts."""
    elf = build_elf(aot, inputs, workdir, board_name)
    log = run_elf(elf, board_name)
    b = board(board_name)
    n = inputs.shape[0]
    outs, counts = [], []
    for s in range(n):
        run = re.search(rf"^RUN {s} rc (-?\d+) ticks (\d+)$", log, re.M)
        out = re.search(rf"^OUT {s} ([0-9a-f]*)$", log, re.M)
        if run is None or out is None:
            raise TvmqError(f"device output for sample {s} is missing; log tail:\n{log[-2000:]}")
        if int(run.group(1)) != 0:
            raise TvmqError(f"tvmq_model_run returned {run.group(1)} on the device")
        counts.append(round(int(run.group(2)) * b.instructions_per_tick))
        raw = bytes.fromhex(out.group(1))
        outs.append(np.frombuffer(raw, dtype=aot.output_dtype).reshape(aot.output_shape))
    flash, ram = elf_sizes(elf)
    stack = re.search(r"^STACK (\d+) rc 0$", log, re.M)
    if stack is None:
        raise TvmqError(f"device did not report its stack use; log tail:\n{log[-2000:]}")
    layers = [
        round(int(m.group(2)) * b.instructions_per_tick)
        for m in re.finditer(r"^LAYER (\d+) ticks (\d+)$", log, re.M)
    ]
    return DeviceResult(np.stack(outs), counts, flash, ram, int(stack.group(1)), log, layers)
