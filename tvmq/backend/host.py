"""Compile generated C for this machine and call it through ctypes (tests, host runs)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..errors import TvmqError
from .c_codegen import C_PRELUDE, CFunction


class ToolchainError(TvmqError):
    """A compiler or emulator is missing or failed; the message names the package."""


def compile_shared(funcs: list[CFunction], workdir: Path, name: str = "kernels") -> ctypes.CDLL:
    """Write ``funcs`` to ``workdir/name.c``, build ``name.so`` with gcc -O2, load it."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ToolchainError("gcc not found: install the Debian package 'gcc'")
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / f"{name}.c"
    lib = workdir / f"{name}.so"
    src.write_text(C_PRELUDE + "\n" + "\n".join(f.source for f in funcs))
    cmd = [
        gcc,
        "-O2",
        "-std=c99",
        "-Wall",
        "-Werror",
        "-shared",
        "-fPIC",
        str(src),
        "-o",
        str(lib),
        "-lm",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise ToolchainError(f"gcc failed on generated C:\n{res.stderr[-3000:]}")
    return ctypes.CDLL(str(lib))


def call(lib: ctypes.CDLL, func: CFunction, arrays: list[np.ndarray]) -> None:
    """Call ``func`` on contiguous numpy ``arrays`` (inputs then output), with a workspace."""
    if len(arrays) != len(func.params):
        raise TvmqError(f"{func.name} takes {len(func.params)} tensors, got {len(arrays)}")
    args = []
    for (pname, dtype, numel), a in zip(func.params, arrays):
        if a.dtype != np.dtype(dtype) or a.size != numel or not a.flags.c_contiguous:
            raise TvmqError(f"{func.name}: {pname} must be {numel} contiguous {dtype}")
        args.append(ctypes.c_void_p(a.ctypes.data))
    if func.workspace:
        ws = np.zeros(func.workspace, np.uint8)
        args.append(ctypes.c_void_p(ws.ctypes.data))
    getattr(lib, func.name)(*args)


class HostModel:
    """An AOT model (:func:`tvmq.backend.aot.generate_aot`) built with gcc for this machine."""

    def __init__(self, aot, workdir: Path):
        gcc = shutil.which("gcc")
        if gcc is None:
            raise ToolchainError("gcc not found: install the Debian package 'gcc'")
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "tvmq_model.c").write_text(aot.source)
        (workdir / "tvmq_model.h").write_text(aot.header)
        lib = workdir / "tvmq_model.so"
        cmd = [gcc, "-O2", "-std=c99", "-ffp-contract=off", "-Wall", "-Werror", "-shared", "-fPIC",
               str(workdir / "tvmq_model.c"), "-o", str(lib), "-lm"]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise ToolchainError(f"gcc failed on the generated model:\n{res.stderr[-3000:]}")
        self.aot = aot
        self._lib = ctypes.CDLL(str(lib))

    def run(self, x: np.ndarray) -> np.ndarray:
        """One inference: ``x`` shaped like the model input."""
        x = np.ascontiguousarray(x, dtype=self.aot.input_dtype)
        if x.shape != self.aot.input_shape:
            raise TvmqError(f"input must have shape {self.aot.input_shape}, got {x.shape}")
        out = np.zeros(self.aot.output_shape, self.aot.output_dtype)
        rc = self._lib.tvmq_model_run(
            ctypes.c_void_p(x.ctypes.data), ctypes.c_void_p(out.ctypes.data)
        )
        if rc != 0:
            raise TvmqError(f"tvmq_model_run returned {rc}")
        return out
