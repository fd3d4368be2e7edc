"""Power-of-two (PoT) and additive powers-of-two (APoT) levels.

PoT: magnitudes ``{0} U {2^0, 2^-1, ..., 2^-(2^(b-1) - 2)}`` times a scale ``alpha``,
both signs: ``2**b - 1`` levels, so a multiply becomes a shift. APoT (Li et al., ICLR 2020):
each magnitude is the sum of two PoT terms, one from even and one from odd exponents
(``{0, 2^0, 2^-2, ...}`` plus ``{0, 2^-1, 2^-3, ...}``), normalized to 1, which spreads
levels more evenly near the top of the range. ``alpha`` is the absmax (``init="minmax"``)
or the clipping that minimizes MSE (``init="mse"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from ..errors import ConfigError
from ._search import best_clip
from .base import GroupFit, SchemeConfig, finalize_levels, register_scheme


@cache
def pot_magnitudes(bits: int, additive: bool) -> tuple[float, ...]:
    """Normalized non-negative magnitudes (max 1) for a ``bits``-bit (A)PoT format."""
    mbits = bits - 1
    if not additive:
        mags = [0.0] + [2.0**-j for j in range((1 << mbits) - 1)]
    else:
        k1, k2 = (mbits + 1) // 2, mbits // 2
        t1 = [0.0] + [2.0 ** (-2 * i) for i in range((1 << k1) - 1)]
        t2 = [0.0] + [2.0 ** (-2 * i - 1) for i in range((1 << k2) - 1)]
        sums = np.unique([a + b for a in t1 for b in t2])
        mags = list(sums / sums.max())
    return tuple(sorted(set(mags)))


@register_scheme("pot")
@dataclass(frozen=True, kw_only=True)
class PoTConfig(SchemeConfig):
    """(A)PoT levels. ``additive``: APoT instead of PoT; ``init``: "minmax" or "mse"."""

    additive: bool = False
    init: str = "mse"
    grid: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init not in ("minmax", "mse"):
            raise ConfigError(f"pot init must be 'minmax' or 'mse', got {self.init!r}")

    def param_bytes(self) -> int:
        return 4  # fp32 alpha

    def fit_group(self, x: np.ndarray, w: np.ndarray | None) -> GroupFit:
        amax = float(np.max(np.abs(x)))
        if amax == 0.0:
            return GroupFit(np.array([0.0]), meta={"alpha": 0.0})
        mags = np.asarray(pot_magnitudes(self.bits, self.additive))
        unit = np.concatenate([-mags[::-1], mags])

        def levels(ratio: float) -> np.ndarray:
            return finalize_levels(unit * ratio * amax)

        ratio = best_clip(x, w, levels, self.grid)[0] if self.init == "mse" else 1.0
        return GroupFit(levels(ratio), meta={"alpha": ratio * amax})
