"""Activation quantize / dequantize: TE computes and their numpy references.

Rounding is half up on ``x * (1 / scale)`` with the reciprocal taken in float32, written
the same way in TE and numpy so both give identical codes.

Non-uniform activations (``ActivationConfig(scheme="kmeans")``) are codes of an 8-bit
grid restricted to ``2**bits`` levels placed where the values are: the grid code ``c`` is
mapped through a 256-entry ``snap`` table (``snap[c + 128]``, int8, the nearest level).
Consumers read them as ordinary 8-bit codes of the grid (same scale and zero point), so
only the producer changes: one table lookup after the clamp.
"""

from __future__ import annotations

import numpy as np


def qrange(bits: int) -> tuple[int, int]:
    """Signed code range of a ``bits``-bit activation stored as int8."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


SNAP_SIZE = 256


def code_range(bits: int, snapped: bool) -> tuple[int, int]:
    """The clamp range of a quantize: the 8-bit grid's when a snap table follows."""
    return qrange(8 if snapped else bits)


def snap_expr(snap, v):
    """TE: the level code of grid code ``v`` (int32, already clamped to int8)."""
    return snap[v + (SNAP_SIZE // 2)]


def quantize_compute(x, scale: float, zero_point: int, bits: int, snap=None):
    """TE: int8 codes of float32 ``x`` (``snap``: the int8 table of a non-uniform
    quantizer, see the module doc)."""
    import tvm
    from tvm import te, tirx

    lo, hi = code_range(bits, snap is not None)
    inv = tirx.const(float(np.float32(1.0) / np.float32(scale)), "float32")

    def f(*i):
        v = tvm.tirx.floor(x(*i) * inv + tirx.const(0.5, "float32")).astype("int32") + zero_point
        v = tvm.tirx.max(tvm.tirx.min(v, hi), lo)
        return (v if snap is None else snap_expr(snap, v)).astype("int8")

    return te.compute(x.shape, f, name="quantize")


def dequantize_compute(q, scale: float, zero_point: int):
    """TE: float32 values of int8 codes."""
    from tvm import te, tirx

    s = tirx.const(float(np.float32(scale)), "float32")
    return te.compute(
        q.shape, lambda *i: (q(*i).astype("int32") - zero_point).astype("float32") * s, name="deq"
    )


def quantize_reference(
    x: np.ndarray, scale: float, zero_point: int, bits: int, snap: np.ndarray | None = None
) -> np.ndarray:
    """numpy: the codes :func:`quantize_compute` produces."""
    lo, hi = code_range(bits, snap is not None)
    inv = np.float32(1.0) / np.float32(scale)
    v = np.floor(x.astype(np.float32) * inv + np.float32(0.5)).astype(np.int64) + zero_point
    v = np.clip(v, lo, hi)
    if snap is not None:
        v = np.asarray(snap)[v + SNAP_SIZE // 2]
    return v.astype(np.int8)


def snap_table(levels: np.ndarray) -> np.ndarray:
    """The int8 ``snap`` table of sorted integer level codes: each grid code to its
    nearest level (a tie to the lower one)."""
    levels = np.unique(np.asarray(levels, np.int64))
    if levels.size == 0 or levels.min() < -128 or levels.max() > 127:
        raise ValueError(f"activation levels must be int8 codes, got {levels}")
    codes = np.arange(-128, 128)
    mid = (levels[1:] + levels[:-1]) / 2.0
    return levels[np.searchsorted(mid, codes, side="left")].astype(np.int8)


def fit_levels(
    codes: np.ndarray, zero_point: int, count: int, init: np.ndarray | None = None, iters: int = 50
) -> np.ndarray:
    """At most ``count`` integer level codes of the 8-bit grid lowering the squared error
    of ``codes`` (grid codes of a calibration sample): Lloyd-Max on their histogram from
    ``init`` (default: uniform levels over the codes' range; the calibration passes the
    MSE-clipped uniform quantizer's levels), rounded to grid codes at each step, with
    ``zero_point`` always a level (real zero stays exact: ReLU outputs, padding)."""
    hist = np.bincount(np.asarray(codes, np.int64).ravel() + 128, minlength=256).astype(np.float64)
    grid = np.arange(-128, 128, dtype=np.float64)
    used = grid[hist > 0]
    if used.size <= count:
        return np.union1d(used, [zero_point]).astype(np.int64)
    levels = np.linspace(used[0], used[-1], count) if init is None else np.asarray(init, float)
    levels = np.clip(levels, -128, 127)
    for _ in range(iters):
        levels = _grid_levels(levels, zero_point)
        cell = np.searchsorted((levels[1:] + levels[:-1]) / 2.0, grid, side="left")
        mass = np.bincount(cell, hist, minlength=levels.size)
        moment = np.bincount(cell, hist * grid, minlength=levels.size)
        new = np.where(mass > 0, moment / np.maximum(mass, 1e-300), levels)
        if np.array_equal(np.round(new), levels):
            break
        levels = np.round(new)
    return _grid_levels(levels, zero_point).astype(np.int64)


def _grid_levels(levels: np.ndarray, zero_point: int) -> np.ndarray:
    """``levels`` rounded to grid codes, the one nearest ``zero_point`` moved onto it,
    sorted and without repeats."""
    levels = np.unique(np.round(levels))
    levels[np.argmin(np.abs(levels - zero_point))] = zero_point
    return np.unique(levels)


def dequantize_reference(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """numpy: the values :func:`dequantize_compute` produces."""
    return (q.astype(np.int32) - zero_point).astype(np.float32) * np.float32(scale)
