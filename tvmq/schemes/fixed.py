"""Standard fixed point (Qm.n): the baseline the TENT paper (seed 002, Table 2) compares
tapered fixed point against.

A ``b``-bit two's complement code ``k`` in ``[-2^(b-1), 2^(b-1) - 1]`` stands for
``k * 2^-n``: a uniform symmetric grid whose step is a power of two, so rescaling is a
shift. ``n`` (the fraction bits; negative for large values) is the one of
``[n_min, n_max]`` with the least (importance-weighted) squared error on the group: the
smallest ``n`` covering the range, or a larger one that clips a few outliers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .base import GroupFit, SchemeConfig, finalize_levels, register_scheme


def fixed_point_levels(bits: int, frac_bits: int) -> np.ndarray:
    """All ``2**bits`` levels of the Q(bits - 1 - frac_bits).frac_bits format."""
    half = 1 << (bits - 1)
    return np.arange(-half, half, dtype=np.float64) * 2.0**-frac_bits


@register_scheme("fixed")
@dataclass(frozen=True, kw_only=True)
class FixedPointConfig(SchemeConfig):
    """Qm.n fixed point; the fraction bits are searched in ``[n_min, n_max]``."""

    n_min: int = -16
    n_max: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_min > self.n_max:
            raise ConfigError(f"n_min ({self.n_min}) must not exceed n_max ({self.n_max})")

    def param_bytes(self) -> int:
        return 1  # the fraction bits n

    def fit_group(self, x: np.ndarray, w: np.ndarray | None) -> GroupFit:
        amax = float(np.max(np.abs(x)))
        if amax == 0.0:
            return GroupFit(np.array([0.0]), meta={"frac_bits": 0})
        half = 1 << (self.bits - 1)
        # the smallest n whose range still covers amax; larger n clip, smaller n waste codes
        cover = int(np.floor(np.log2((half - 1) / amax))) if amax > 0 else self.n_max
        best, best_err = None, np.inf
        weights = np.ones_like(x) if w is None else w
        for n in range(max(self.n_min, cover), min(self.n_max, cover + 4) + 1):
            step = 2.0**-n
            q = np.clip(np.round(x / step), -half, half - 1) * step
            err = float((weights * (x - q) ** 2).sum())
            if err < best_err:
                best, best_err = n, err
        if best is None:  # the range lies outside [n_min, n_max]: take the nearest bound
            best = self.n_min if cover < self.n_min else self.n_max
        return GroupFit(
            finalize_levels(fixed_point_levels(self.bits, best)), meta={"frac_bits": best}
        )
