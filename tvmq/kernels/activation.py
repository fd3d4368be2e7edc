"""Uniform activation quantize / dequantize: TE computes and their numpy references.

Rounding is half up on ``x * (1 / scale)`` with the reciprocal taken in float32, written
the same way in TE and numpy so both give identical codes.
"""

from __future__ import annotations

import numpy as np


def qrange(bits: int) -> tuple[int, int]:
    """Signed code range of a ``bits``-bit activation stored as int8."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def quantize_compute(x, scale: float, zero_point: int, bits: int):
    """TE: int8 codes of float32 ``x``."""
    import tvm
    from tvm import te, tirx

    lo, hi = qrange(bits)
    inv = tirx.const(float(np.float32(1.0) / np.float32(scale)), "float32")

    def f(*i):
        v = tvm.tirx.floor(x(*i) * inv + tirx.const(0.5, "float32")).astype("int32") + zero_point
        return tvm.tirx.max(tvm.tirx.min(v, hi), lo).astype("int8")

    return te.compute(x.shape, f, name="quantize")


def dequantize_compute(q, scale: float, zero_point: int):
    """TE: float32 values of int8 codes."""
    from tvm import te, tirx

    s = tirx.const(float(np.float32(scale)), "float32")
    return te.compute(
        q.shape, lambda *i: (q(*i).astype("int32") - zero_point).astype("float32") * s, name="deq"
    )


def quantize_reference(x: np.ndarray, scale: float, zero_point: int, bits: int) -> np.ndarray:
    """numpy: the codes :func:`quantize_compute` produces."""
    lo, hi = qrange(bits)
    inv = np.float32(1.0) / np.float32(scale)
    v = np.floor(x.astype(np.float32) * inv + np.float32(0.5)).astype(np.int64) + zero_point
    return np.clip(v, lo, hi).astype(np.int8)


def dequantize_reference(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """numpy: the values :func:`dequantize_compute` produces."""
    return (q.astype(np.int32) - zero_point).astype(np.float32) * np.float32(scale)
