"""Models on emulated Cortex-M boards (QEMU, bare metal): bit-exact, deterministic."""

import shutil
import subprocess

import numpy as np
import pytest
from test_integer_path import calib_batches
from test_quantize_e2e import onnx_model

import tvmq
from tvmq.backend.aot import generate_aot
from tvmq.backend.host import HostModel, ToolchainError
from tvmq.backend.qemu import BOARDS, board, build_elf, link_flags, run_elf, run_on_device
from tvmq.config import fixed_point

pytestmark = pytest.mark.skipif(
    not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")),
    reason="qemu-system-arm / gcc-arm-none-eabi not installed (make setup installs them)",
)


fixed = fixed_point


@pytest.fixture(scope="module")
def w4a8_fixed():
    qm = tvmq.quantize(onnx_model(), fixed("w4-kmeans-a8"), calib=calib_batches(4))
    return qm, generate_aot(qm.fused())


INPUTS = np.random.default_rng(3).standard_normal((3, 1, 3, 12, 12)).astype(np.float32)


@pytest.mark.parametrize("board_name", list(BOARDS))
def test_device_outputs_are_bit_identical_to_host(tmp_path, w4a8_fixed, board_name):
    qm, aot = w4a8_fixed
    host = HostModel(aot, tmp_path / "host")
    expected = np.stack([host.run(x) for x in INPUTS])
    res = run_on_device(aot, INPUTS, tmp_path / "dev", board_name)
    np.testing.assert_array_equal(res.outputs.view(np.uint32), expected.view(np.uint32))
    np.testing.assert_allclose(res.outputs[0], qm.build().run(INPUTS[0]), rtol=1e-6, atol=1e-7)
    # plausible, not a speed goal (those are in make bench): 0.19 M on the M55 now
    assert all(5e4 < n < 1e7 for n in res.instructions), res.instructions
    assert res.ram_bytes >= aot.arena_bytes and res.flash_bytes >= aot.const_bytes
    # tensors live in the static arena: the stack holds only call frames (measured: 304 B)
    assert 64 < res.stack_bytes < 2048


def test_instruction_counts_are_deterministic(tmp_path, w4a8_fixed):
    _, aot = w4a8_fixed
    first = run_on_device(aot, INPUTS[:2], tmp_path / "a").instructions
    again = run_on_device(aot, INPUTS[:2], tmp_path / "b").instructions
    assert first == again


@pytest.mark.parametrize("board_name", list(BOARDS))
def test_systick_instruction_ratio(tmp_path, board_name):
    """A loop of known length (2 instructions per iteration) calibrates the tick."""
    src = tmp_path / "loop.c"
    src.write_text(
        "#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n"
        "#define CSR (*(volatile uint32_t*)0xE000E010)\n"
        "#define RVR (*(volatile uint32_t*)0xE000E014)\n"
        "#define CVR (*(volatile uint32_t*)0xE000E018)\n"
        "int main(void) { RVR = 0xFFFFFF; CVR = 0; CSR = 5;\n"
        "  uint32_t n = 1000000, t0 = CVR;\n"
        '  __asm volatile("1: subs %0, %0, #1\\n bne 1b" : "+r"(n));\n'
        "  uint32_t t1 = CVR;\n"
        '  printf("TICKS %lu\\n", (unsigned long)((t0 - t1) & 0xFFFFFF)); exit(0); }\n'
    )
    b = board(board_name)
    elf = tmp_path / "loop.elf"
    subprocess.run(
        ["arm-none-eabi-gcc", "-O2", *link_flags(b), str(src), "-o", str(elf)], check=True
    )
    ticks = int(run_elf(elf, board_name, timeout=30).split("TICKS ")[1].split()[0])
    assert abs(2_000_000 / ticks - b.instructions_per_tick) < 0.01 * b.instructions_per_tick


def test_hung_device_times_out_with_log_tail(tmp_path, w4a8_fixed):
    src = tmp_path / "hang.c"
    src.write_text('#include <stdio.h>\nint main(void){ puts("booted"); for(;;){} }\n')
    elf = tmp_path / "hang.elf"
    b = board("mps2-an386")
    subprocess.run(
        ["arm-none-eabi-gcc", "-O2", *link_flags(b), str(src), "-o", str(elf)], check=True
    )
    with pytest.raises(tvmq.TvmqError, match=r"timed out(.|\n)*booted"):
        run_elf(elf, "mps2-an386", timeout=3)


def test_missing_toolchain_names_the_package(tmp_path, w4a8_fixed, monkeypatch):
    _, aot = w4a8_fixed
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainError, match="gcc-arm-none-eabi"):
        build_elf(aot, INPUTS[:1], tmp_path / "x")
    with pytest.raises(tvmq.UnknownNameError, match="known boards"):
        board("esp32")
