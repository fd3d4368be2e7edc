"""Tapered fixed-point TFX(n, IS, SC), exactly as in TENT (seed 002).

Format
------
An ``n``-bit pattern is read from its most significant bit. The first bit is the flipped
sign ``i = not s`` and also the first bit of the integer field, which is a run of ``m``
identical bits ``i...i`` ended by a terminating bit ``not i``, by the ``IS``-bit cap on the
run, or by the end of the pattern. The integer is ``I = m - 1`` for a run of 1s and
``I = -m`` for a run of 0s; the ``fs`` bits after the run (and its terminator, if any) are
the fraction ``f``, and the value is ``X = (I + f / 2**fs) * 2**SC`` (paper eqs. 2-3).
``IS = 1`` is plain fixed point in [-1, 1); larger ``IS`` widens the range and tapers the
precision. Example from the paper: 3.875 in TFX(8, 8, 0) is ``0b11110111``.

Read as unsigned integers, patterns are ordered by value (``0`` is the most negative,
``2**n - 1`` the largest), so a pattern *is* the index into the sorted level table and
round-to-nearest-even with clipping (paper eq. 4) is a nearest-level search with ties to
the even pattern: the :class:`~tvmq.codebook.Codebook` with ``tie="even"``.

Parameter choice
----------------
:func:`tfx_select` is the paper's Algorithm 1 (``IS = floor(max|w|) + 1`` capped at ``n``;
``SC = floor(log2 max|w|) + 1`` when ``max|w| < 0.5``, else 0). ``select="mse"`` instead
searches ``IS`` in [1, n] and ``SC`` around ``log2 max|w|`` for the lowest MSE, as the
paper's experiments sweep IS and SC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from ..codebook import Codebook
from ..errors import ConfigError
from ._search import nearest_mse
from .base import GroupFit, SchemeConfig, register_scheme


def _check(n: int, IS: int, SC: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= 8:
        raise ConfigError(f"TFX n must be an int in [2, 8], got {n!r}")
    if isinstance(IS, bool) or not isinstance(IS, int) or not 1 <= IS <= n:
        raise ConfigError(f"TFX IS must be an int in [1, n={n}], got {IS!r}")
    if isinstance(SC, bool) or not isinstance(SC, int) or abs(SC) > 64:
        raise ConfigError(f"TFX SC must be an int in [-64, 64], got {SC!r}")


def tfx_decode_pattern(p: int, n: int, IS: int) -> float:
    """Value of one ``n``-bit pattern at ``SC = 0``, decoded bit by bit."""
    bits = [(p >> (n - 1 - j)) & 1 for j in range(n)]
    i = bits[0]
    m = 1
    while m < IS and bits[m] == i:
        m += 1
    terminated = m < IS  # the loop stopped on a terminating bit, not on the IS cap
    pos = m + 1 if terminated else m
    fs = n - pos
    f = 0
    for b in bits[pos:]:
        f = (f << 1) | b
    integer = m - 1 if i == 1 else -m
    return integer + f / (1 << fs)


@cache
def _table(n: int, IS: int, SC: int) -> tuple[float, ...]:
    return tuple(math.ldexp(tfx_decode_pattern(p, n, IS), SC) for p in range(1 << n))


def tfx_levels(*, n: int, IS: int, SC: int) -> np.ndarray:
    """All ``2**n`` TFX values, indexed by pattern (ascending), float64."""
    _check(n, IS, SC)
    return np.array(_table(n, IS, SC))


def tfx_decode(codes, *, n: int, IS: int, SC: int) -> np.ndarray:
    """Values of TFX bit patterns ``codes`` (integers in [0, 2**n)), float64."""
    table = tfx_levels(n=n, IS=IS, SC=SC)
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or codes.max() >= table.size):
        raise ConfigError(f"TFX({n}) patterns must be in [0, {table.size})")
    return table[codes.astype(np.intp)]


def tfx_encode(x, *, n: int, IS: int, SC: int) -> np.ndarray:
    """Round ``x`` to TFX(n, IS, SC) patterns (nearest, ties to even, clip), ``uint8``."""
    return tfx_codebook(n=n, IS=IS, SC=SC).encode(x)


def tfx_codebook(*, n: int, IS: int, SC: int) -> Codebook:
    """Per-tensor codebook of TFX(n, IS, SC): codes are the bit patterns."""
    return Codebook(
        bits=n,
        levels=tfx_levels(n=n, IS=IS, SC=SC),
        tie="even",
        scheme="tfx",
        meta={"IS": IS, "SC": SC},
    )


def tfx_select(amax: float, n: int) -> tuple[int, int]:
    """Algorithm 1 of TENT: ``(IS, SC)`` for a layer whose largest magnitude is ``amax``.
    ``SC`` is stored in 7 bits: below 2**-64 (denormal-sized weights) it stays at -64."""
    IS = math.floor(amax) + 1 if math.floor(amax) + 1 <= n else n
    SC = math.floor(math.log2(amax)) + 1 if 0 < amax < 0.5 else 0
    return IS, max(SC, -64)


@register_scheme("tfx")
@dataclass(frozen=True, kw_only=True)
class TFXConfig(SchemeConfig):
    """TFX(n = bits, IS, SC). Fixed ``IS``/``SC`` if given, else chosen per group by
    ``select``: "algorithm1" (the paper's) or "mse" (sweep for the lowest error)."""

    tie = "even"
    IS: int | None = None
    SC: int | None = None
    select: str = "algorithm1"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.select not in ("algorithm1", "mse"):
            raise ConfigError(f"tfx select must be 'algorithm1' or 'mse', got {self.select!r}")
        _check(self.bits, self.IS or 1, self.SC or 0)

    def param_bytes(self) -> int:
        return 2  # IS (3 bits) and SC (7 bits)

    def fit_group(self, x: np.ndarray, w: np.ndarray | None) -> GroupFit:
        amax = float(np.max(np.abs(x)))
        IS, SC = tfx_select(amax, self.bits)
        if self.select == "mse" and amax > 0:
            e = math.floor(math.log2(amax))
            cands = [
                (i, s)
                for i in range(1, self.bits + 1)
                for s in range(e - math.ceil(math.log2(i)) - 2, e + 3)
                if abs(s) <= 64
            ] or [(IS, SC)]  # amax below 2**-64: only Algorithm 1's clamped choice
            IS, SC = min(
                cands, key=lambda c: nearest_mse(x, tfx_levels(n=self.bits, IS=c[0], SC=c[1]), w)
            )
        IS = self.IS if self.IS is not None else IS
        SC = self.SC if self.SC is not None else SC
        return GroupFit(tfx_levels(n=self.bits, IS=IS, SC=SC), meta={"IS": IS, "SC": SC})
