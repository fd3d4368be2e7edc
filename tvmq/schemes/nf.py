"""NormalFloat: levels at quantiles of a standard normal, scaled by the group's absmax.

The construction of QLoRA's NF4, generalized to ``b`` bits: ``2**(b-1)`` positive and
``2**(b-1) - 1`` negative normal quantiles plus an exact zero, normalized to [-1, 1]. The
outermost quantile probability is ``offset = (1 - 1/(2(2^b - 1)) + 1 - 1/(2^(b+1))) / 2``
(0.9677 for 4 bits, as in NF4).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy.stats import norm

from .base import GroupFit, SchemeConfig, finalize_levels, register_scheme


@cache
def nf_levels(bits: int) -> tuple[float, ...]:
    """The ``2**bits`` normalized NormalFloat levels in [-1, 1], ascending."""
    half = 1 << (bits - 1)
    n = 1 << bits
    offset = 0.5 * ((1 - 1 / (2 * (n - 1))) + (1 - 1 / (2 * n)))
    pos = norm.ppf(np.linspace(offset, 0.5, half + 1)[:-1])
    neg = -norm.ppf(np.linspace(offset, 0.5, half)[:-1])
    v = np.concatenate([pos, [0.0], neg])
    return tuple(np.sort(v / v.max()))


@register_scheme("nf")
@dataclass(frozen=True, kw_only=True)
class NFConfig(SchemeConfig):
    """NormalFloat levels scaled by absmax (no extra options)."""

    def param_bytes(self) -> int:
        return 4  # fp32 absmax

    def fit_group(self, x: np.ndarray, w: np.ndarray | None) -> GroupFit:
        amax = float(np.max(np.abs(x)))
        if amax == 0.0:
            return GroupFit(np.array([0.0]), meta={"absmax": 0.0})
        return GroupFit(
            finalize_levels(np.asarray(nf_levels(self.bits)) * amax), meta={"absmax": amax}
        )
