"""Helpers shared by schemes: nearest-level MSE and clipping-range search."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def nearest_mse(x: np.ndarray, levels: np.ndarray, w: np.ndarray | None = None) -> float:
    """(Weighted) mean squared error of ``x`` encoded to its nearest level (levels sorted)."""
    lv = np.asarray(levels, dtype=np.float64)
    thr = (lv[:-1] + lv[1:]) / 2.0
    err = (x - lv[np.searchsorted(thr, x, side="left")]) ** 2
    if w is None:
        return float(np.mean(err))
    total = float(np.sum(w))
    return float(np.sum(w * err) / total) if total > 0 else float(np.mean(err))


def best_clip(
    x: np.ndarray,
    w: np.ndarray | None,
    make_levels: Callable[[float], np.ndarray],
    grid: int,
    lo: float = 0.05,
) -> tuple[float, np.ndarray]:
    """Search the clipping ratio ``alpha`` in ``[lo, 1]`` minimizing nearest-level MSE.

    ``make_levels(alpha)`` returns the level set for a range shrunk by ``alpha``; ``alpha =
    1`` (no clipping, the min-max choice) is always a candidate, so the result is never
    worse than min-max. Ties go to the larger ``alpha``.
    """
    best_alpha, best_levels = 1.0, make_levels(1.0)
    best = nearest_mse(x, best_levels, w)
    for alpha in np.linspace(1.0, lo, grid)[1:]:
        lv = make_levels(float(alpha))
        err = nearest_mse(x, lv, w)
        if err < best:
            best, best_alpha, best_levels = err, float(alpha), lv
    return best_alpha, best_levels
