"""Equal-mass (quantile) bins, the idea of seed 000.

Uniform quantization gives every code an equal share of the *range*; here every code gets
an equal share of the *values* (or of the importance mass, when given). The sorted values
are cut into ``2**bits`` contiguous bins of ``ceil``/``floor`` ``N / 2**bits`` elements,
never splitting a run of equal values; each bin's level is its (weighted) mean, and the
decision thresholds are the midpoints between neighbouring bins' extreme values, so encoding
reproduces the bins exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import GroupFit, SchemeConfig, register_scheme


def equal_mass_bounds(xs: np.ndarray, k: int, ws: np.ndarray | None = None) -> np.ndarray:
    """Bin boundaries (indices into sorted ``xs``) for ``k`` equal-mass bins.

    Returns strictly increasing indices starting with 0 and ending with ``len(xs)``. A
    boundary that would split equal values moves to the nearer edge of their run.
    """
    n = xs.size
    j = np.arange(1, k)
    if ws is None:
        cuts = np.ceil(j * n / k).astype(np.int64)
    else:
        cum = np.cumsum(ws)
        cuts = np.searchsorted(cum, j * cum[-1] / k, side="left") + 1
    cuts = np.clip(cuts, 1, n - 1) if n > 1 else cuts[:0]
    fixed = []
    for c in cuts:
        if xs[c - 1] == xs[c]:
            left = int(np.searchsorted(xs, xs[c], side="left"))
            right = int(np.searchsorted(xs, xs[c], side="right"))
            c = left if c - left <= right - c else right
        if 0 < c < n:
            fixed.append(int(c))
    return np.unique(np.array([0, *fixed, n], dtype=np.int64))


@register_scheme("quantile")
@dataclass(frozen=True, kw_only=True)
class QuantileConfig(SchemeConfig):
    """Equal-mass bins with bin-mean levels (no extra options)."""

    def fit_group(self, x: np.ndarray, w: np.ndarray | None) -> GroupFit:
        order = np.argsort(x, kind="stable")
        xs = x[order]
        ws = None if w is None else w[order]
        bounds = equal_mass_bounds(xs, 1 << self.bits, ws)
        levels = np.empty(bounds.size - 1)
        for b in range(bounds.size - 1):
            seg = slice(bounds[b], bounds[b + 1])
            wseg = None if ws is None else ws[seg]
            if wseg is not None and wseg.sum() > 0:
                levels[b] = np.average(xs[seg], weights=wseg)
            else:
                levels[b] = xs[seg].mean()
        inner = bounds[1:-1]
        thresholds = (xs[inner - 1] + xs[inner]) / 2.0
        # Bin means rounded to float32 stay strictly increasing unless two bins are closer
        # than float32 resolution; merge those (the codebook forbids inner repeats).
        lv32 = levels.astype(np.float32)
        keep = np.concatenate([[True], np.diff(lv32) > 0])
        if not keep.all():
            thresholds = thresholds[keep[1:]]
            lv32 = lv32[keep]
        return GroupFit(lv32.astype(np.float64), thresholds)
