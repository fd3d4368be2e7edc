"""Lloyd-Max quantization: 1-D k-means on the values, optionally importance-weighted.

Initialization is deterministic: Lloyd runs from the equal-mass quantile levels, the
MSE-searched uniform grid and the NormalFloat levels, and the best result is kept (from a
uniform grid whose outer levels sit in empty tails Lloyd crawls to a worse local optimum).
Lloyd iterations never increase the MSE, an empty cell is re-seeded at the value with the
largest weighted error (which strictly lowers it), and the float32 levels returned are
compared with the float32 starting levels, so the result is never worse than any start.
With ``importance`` (a diagonal Hessian, input-activation energy, ...) the objective is
``sum w * (x - q(x))**2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ._search import nearest_mse
from .base import GroupFit, SchemeConfig, finalize_levels, register_scheme
from .nf import NFConfig
from .quantile import QuantileConfig
from .uniform import UniformConfig


def lloyd(
    x: np.ndarray, levels: np.ndarray, w: np.ndarray | None, max_iter: int, tol: float
) -> np.ndarray:
    """Run Lloyd-Max iterations from ``levels``; returns sorted float64 levels."""
    lv = np.sort(np.asarray(levels, dtype=np.float64))
    k = lv.size
    wt = np.ones_like(x) if w is None else w
    prev = np.inf
    for _ in range(max_iter):
        thr = (lv[:-1] + lv[1:]) / 2.0
        cell = np.searchsorted(thr, x, side="left")
        mass = np.bincount(cell, weights=wt, minlength=k)
        moment = np.bincount(cell, weights=wt * x, minlength=k)
        filled = mass > 0
        lv = np.where(filled, moment / np.where(filled, mass, 1.0), lv)
        if not filled.all() and x.size > k:
            err = wt * (x - lv[cell]) ** 2
            for j in np.flatnonzero(~filled):
                worst = int(np.argmax(err))
                if err[worst] <= 0:
                    break
                lv[j] = x[worst]
                err[worst] = 0.0
        lv = np.sort(lv)
        cur = nearest_mse(x, lv, w)
        if np.isfinite(prev) and prev - cur <= tol * prev:
            break
        prev = cur
    return lv


@register_scheme("kmeans")
@dataclass(frozen=True, kw_only=True)
class KMeansConfig(SchemeConfig):
    """Lloyd-Max levels. ``max_iter``: iteration cap; ``tol``: relative MSE change to stop."""

    max_iter: int = 200
    tol: float = 1e-9

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_iter < 0 or self.tol < 0:
            raise ConfigError("max_iter and tol must be non-negative")

    def fit_group(self, x: np.ndarray, w: np.ndarray | None) -> GroupFit:
        starts = [
            finalize_levels(QuantileConfig(bits=self.bits).fit_group(x, w).levels),
            finalize_levels(UniformConfig(bits=self.bits).fit_group(x, w).levels),
            finalize_levels(NFConfig(bits=self.bits).fit_group(x, w).levels),
        ]
        found = [finalize_levels(lloyd(x, s, w, self.max_iter, self.tol)) for s in starts]
        return GroupFit(min([*found, *starts], key=lambda lv: nearest_mse(x, lv, w)))
