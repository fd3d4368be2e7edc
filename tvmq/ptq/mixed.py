"""Mixed precision: per-layer bit widths under a weight-size budget.

Each layer offers a few bit widths, each with its exact size (codes + codebooks, what
:func:`relay_passes.annotate_quant` stores) and a measured sensitivity: the layer's
relative output error ``||X (W - W_hat)^T||^2 / ||X W^T||^2`` on calibration rows (or the
relative weight error when a layer has none). Relative errors of successive layers add up
to first order in the network's output noise, so the choice minimizing their sum under
the budget is a multiple-choice knapsack, solved exactly here by dynamic programming over
sizes rounded *up* to a unit of at most 1/4096 of the budget (so the budget always holds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True)
class Option:
    """One bit width of one layer."""

    bits: int
    nbytes: int
    error: float


def choose_bits(options: list[list[Option]], budget: int) -> list[Option]:
    """The option per layer with the least total error whose sizes sum to <= ``budget``.

    Raises
    ------
    ConfigError
        Even the smallest option of every layer does not fit.
    """
    if not options:
        return []
    smallest = sum(min(o.nbytes for o in opts) for opts in options)
    if smallest > budget:
        raise ConfigError(
            f"weight budget {budget} bytes is below the smallest possible size, {smallest} "
            "bytes (every layer at its fewest bits)"
        )
    unit = max(1, -(-budget // 4096))
    cap = budget // unit
    inf = np.inf
    best = np.zeros(cap + 1)  # best[c]: least error of the layers so far within c units
    picks = []
    for opts in options:
        new = np.full(cap + 1, inf)
        pick = np.full(cap + 1, -1, dtype=np.int64)
        for j, o in enumerate(opts):
            cost = -(-o.nbytes // unit)
            if cost > cap:
                continue
            cand = np.full(cap + 1, inf)
            cand[cost:] = best[: cap + 1 - cost] + o.error
            better = cand < new
            new[better], pick[better] = cand[better], j
        best = new
        picks.append(pick)
    c = int(np.argmin(best))
    if not np.isfinite(best[c]):  # rounding up made it infeasible: take the smallest
        return [min(opts, key=lambda o: o.nbytes) for opts in options]
    chosen = []
    for opts, pick in zip(reversed(options), reversed(picks), strict=True):
        o = opts[int(pick[c])]
        chosen.append(o)
        c -= -(-o.nbytes // unit)
    return chosen[::-1]
