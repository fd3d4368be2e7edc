"""Uniform (affine or symmetric) quantization: the baseline every table shows.

The grid has all ``2**bits`` levels: symmetric ``s * (k - 2**(bits-1))`` (an int-like grid
with an exact zero, as int8's [-128, 127]) or affine ``s * (k - z)`` with integer zero point
``z`` so that zero is exact. ``init="minmax"`` covers the data range; ``init="mse"``
searches a clipping ratio of that range for the lowest (importance-weighted) MSE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ._search import best_clip
from .base import GroupFit, SchemeConfig, finalize_levels, register_scheme


def uniform_grid(lo: float, hi: float, bits: int, symmetric: bool) -> tuple[np.ndarray, float, int]:
    """Levels, scale and zero point of the uniform grid covering ``[lo, hi]``."""
    n = 1 << bits
    if symmetric:
        half = n // 2
        scale = max(hi / (half - 1) if hi > 0 else 0.0, -lo / half if lo < 0 else 0.0)
        zero = half
    else:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = (hi - lo) / (n - 1)
        zero = int(np.clip(np.round(-lo / scale), 0, n - 1)) if scale > 0 else 0
    return scale * (np.arange(n) - zero), scale, zero


@register_scheme("uniform")
@dataclass(frozen=True, kw_only=True)
class UniformConfig(SchemeConfig):
    """Uniform grid. ``symmetric``: zero point fixed at the middle code; ``init``: "minmax"
    or "mse" (clipping-ratio search over ``grid`` points)."""

    symmetric: bool = True
    init: str = "mse"
    grid: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init not in ("minmax", "mse"):
            raise ConfigError(f"uniform init must be 'minmax' or 'mse', got {self.init!r}")
        if self.grid < 2:
            raise ConfigError(f"grid must be >= 2, got {self.grid}")

    def param_bytes(self) -> int:
        return 4 if self.symmetric else 5  # fp32 scale (+ uint8 zero point)

    def fit_group(self, x: np.ndarray, w: np.ndarray | None) -> GroupFit:
        lo, hi = float(x.min()), float(x.max())
        if lo == hi == 0.0:
            return GroupFit(np.array([0.0]), meta={"scale": 0.0, "zero_point": 0, "clip": 1.0})

        def levels(alpha: float) -> np.ndarray:
            return uniform_grid(alpha * lo, alpha * hi, self.bits, self.symmetric)[0]

        alpha = best_clip(x, w, levels, self.grid)[0] if self.init == "mse" else 1.0
        grid, scale, zero = uniform_grid(alpha * lo, alpha * hi, self.bits, self.symmetric)
        return GroupFit(
            finalize_levels(grid),
            meta={"scale": float(scale), "zero_point": int(zero), "clip": alpha},
        )
