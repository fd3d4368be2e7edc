"""The codebook: sorted float levels that codes index into.

A :class:`Codebook` maps a float tensor to ``bits``-bit integer codes and back. It is the
object every scheme produces (:func:`tvmq.fit`), the graph passes store next to the packed
weights, and the kernels turn into lookup tables.

Granularity
-----------
The tensor is viewed as rows: ``axis`` (the output-channel axis) is moved to the front and
the remaining axes are flattened in C order into the reduction dimension ``R``.

* ``axis=None, group_size=None``: one group (per tensor);
* ``axis=a, group_size=None``: one group per channel along ``a`` (per channel);
* ``axis=a, group_size=g``: each channel's ``R`` elements split into ``R // g`` contiguous
  groups of ``g`` (per group; ``R`` must be divisible by ``g``). Group index is
  ``channel * (R // g) + r // g``.

Encoding rule
-------------
Each group has ``K <= 2**bits`` levels, non-decreasing, and ``K - 1`` decision thresholds.
A value ``x`` gets code ``k`` with ``t[k-1] < x <= t[k]`` (so a value exactly on a threshold
goes to the *lower* code, ``tie="low"``), or with ``tie="even"`` to whichever of the two
neighbouring codes is even (round-half-to-even, as TFX requires). By default the
thresholds are the midpoints between neighbouring levels (nearest-level encoding);
schemes such as equal-mass quantile bins pass their own. Levels may repeat only as
padding at the end of a row (when a group has fewer distinct values than codes); their
thresholds are ``+inf`` so encoding never returns a padding code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DataError, FormatError
from .packing import check_bits

CODEBOOK_FORMAT = "tvmq.codebook"
CODEBOOK_VERSION = 1
_TIES = ("low", "even")


def check_finite(values: Any, what: str = "values") -> np.ndarray:
    """Return ``values`` as a float64 array, raising :class:`DataError` if empty or non-finite."""
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} must be numeric, got {type(values).__name__}") from exc
    if x.size == 0:
        raise DataError(f"{what} is empty (shape {x.shape}); nothing to quantize")
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise DataError(f"{what} holds {bad} NaN/inf value(s) out of {x.size}")
    return x


def group_rows(x: np.ndarray, axis: int | None, group_size: int | None) -> np.ndarray:
    """View ``x`` as a 2-D array with one row per quantization group (see module docstring).

    Parameters
    ----------
    x : np.ndarray
        Tensor of any shape.
    axis : int or None
        Channel axis, or None for one group over the whole tensor.
    group_size : int or None
        Contiguous elements per group along each channel's flattened reduction dimension.

    Returns
    -------
    np.ndarray
        Array of shape ``(n_groups, elements_per_group)``.
    """
    if axis is None:
        rows = x.reshape(1, -1)
    else:
        if not -x.ndim <= axis < x.ndim:
            raise DataError(f"axis {axis} is out of range for a tensor of shape {x.shape}")
        moved = np.moveaxis(x, axis, 0)
        rows = moved.reshape(moved.shape[0], -1)
    if group_size is not None:
        n_chan, red = rows.shape
        if red % group_size:
            raise DataError(
                f"reduction size {red} (shape {x.shape}, axis {axis}) is not divisible by "
                f"group_size {group_size}"
            )
        rows = rows.reshape(n_chan * (red // group_size), group_size)
    return rows


def ungroup_rows(rows: np.ndarray, shape: tuple[int, ...], axis: int | None) -> np.ndarray:
    """Inverse of :func:`group_rows` for a tensor of the given ``shape``."""
    if axis is None:
        return rows.reshape(shape)
    moved_shape = (shape[axis], *(s for i, s in enumerate(shape) if i != axis % len(shape)))
    return np.moveaxis(rows.reshape(moved_shape), 0, axis)


def midpoint_thresholds(levels: np.ndarray) -> np.ndarray:
    """Nearest-level decision thresholds for rows of levels; ``+inf`` after padding repeats."""
    lv = np.asarray(levels, dtype=np.float64)
    thr = (lv[:, :-1] + lv[:, 1:]) / 2.0
    thr[lv[:, 1:] == lv[:, :-1]] = np.inf
    return thr


@dataclass(frozen=True, eq=False)
class Codebook:
    """Per-group sorted levels and the thresholds that encode to them.

    Parameters
    ----------
    bits : int
        Code width, 2 to 8; each group has at most ``2**bits`` levels.
    levels : np.ndarray
        ``(n_groups, K)`` float32, each row non-decreasing, repeats only as trailing padding.
    thresholds : np.ndarray, optional
        ``(n_groups, K - 1)`` float64 decision thresholds; midpoints when omitted.
    axis, group_size : int or None
        Granularity, see the module docstring.
    tie : {"low", "even"}
        Which code a value exactly on a threshold gets.
    scheme : str
        Name of the scheme that produced the codebook (informational).
    meta : dict
        JSON-serializable scheme parameters (scales, TFX IS/SC, ...).
    """

    bits: int
    levels: np.ndarray
    thresholds: np.ndarray | None = None
    axis: int | None = None
    group_size: int | None = None
    tie: str = "low"
    scheme: str = "custom"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        bits = check_bits(self.bits)
        lv = np.asarray(self.levels, dtype=np.float32)
        if lv.ndim == 1:
            lv = lv[None, :]
        if lv.ndim != 2 or lv.shape[1] == 0:
            raise DataError(f"levels must be (n_groups, K) with K >= 1, got shape {lv.shape}")
        if lv.shape[1] > (1 << bits):
            raise DataError(
                f"{lv.shape[1]} levels do not fit in {bits}-bit codes (at most {1 << bits})"
            )
        if not np.all(np.isfinite(lv)):
            raise DataError("levels hold NaN/inf")
        steps = np.diff(lv, axis=1)
        if np.any(steps < 0):
            raise DataError("levels must be sorted ascending within each group")
        # A repeat is allowed only as trailing padding: after the first repeat, all repeat.
        dup = steps == 0
        if np.any(dup[:, 1:] < dup[:, :-1]):
            raise DataError("levels repeat in the middle of a group; repeats may only pad the end")
        if self.thresholds is None:
            thr = midpoint_thresholds(lv)
        else:
            thr = np.asarray(self.thresholds, dtype=np.float64)
            if thr.shape != (lv.shape[0], lv.shape[1] - 1):
                raise DataError(
                    f"thresholds must have shape {(lv.shape[0], lv.shape[1] - 1)}, got {thr.shape}"
                )
            if np.any(np.isnan(thr)) or np.any(thr[:, 1:] < thr[:, :-1]):
                raise DataError("thresholds must be sorted ascending and not NaN")
        if self.tie not in _TIES:
            raise DataError(f"tie must be one of {_TIES}, got {self.tie!r}")
        if self.group_size is not None and self.group_size < 1:
            raise DataError(f"group_size must be >= 1, got {self.group_size}")
        lv.flags.writeable = False
        thr.flags.writeable = False
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "levels", lv)
        object.__setattr__(self, "thresholds", thr)

    @property
    def n_groups(self) -> int:
        """Number of groups (rows of ``levels``)."""
        return self.levels.shape[0]

    @property
    def n_levels(self) -> int:
        """Levels per group, ``K`` (padding included)."""
        return self.levels.shape[1]

    @property
    def granularity(self) -> str:
        """``"tensor"``, ``"channel"`` or ``"group"``."""
        if self.group_size is not None:
            return "group"
        return "tensor" if self.axis is None else "channel"

    def _rows(self, x: np.ndarray) -> np.ndarray:
        rows = group_rows(x, self.axis, self.group_size)
        if rows.shape[0] != self.n_groups:
            raise DataError(
                f"tensor of shape {x.shape} has {rows.shape[0]} groups for this codebook "
                f"(axis={self.axis}, group_size={self.group_size}) but the codebook has "
                f"{self.n_groups}"
            )
        return rows

    def encode(self, x: Any) -> np.ndarray:
        """Codes of ``x`` (same shape, ``uint8``) by the encoding rule in the module docstring."""
        x = check_finite(x, "tensor to encode")
        rows = self._rows(x)
        codes = np.empty(rows.shape, dtype=np.uint8)
        for g in range(rows.shape[0]):
            t = self.thresholds[g]
            k = np.searchsorted(t, rows[g], side="left")
            if self.tie == "even":
                inner = k < t.size
                on = np.zeros_like(inner)
                on[inner] = rows[g][inner] == t[k[inner]]
                k = np.where(on & (k % 2 == 1), k + 1, k)
            codes[g] = k
        return ungroup_rows(codes, x.shape, self.axis)

    def decode(self, codes: Any) -> np.ndarray:
        """Levels of ``codes`` (same shape, ``float32``)."""
        codes = np.asarray(codes)
        if codes.dtype.kind not in "iu":
            raise DataError(f"codes must be integers, got dtype {codes.dtype}")
        rows = self._rows(codes)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_levels):
            raise DataError(f"codes out of range [0, {self.n_levels})")
        out = np.take_along_axis(self.levels, rows.astype(np.intp), axis=1)
        return ungroup_rows(out, codes.shape, self.axis)

    def quantize(self, x: Any) -> np.ndarray:
        """``decode(encode(x))``: the float32 tensor the model will effectively use."""
        return self.decode(self.encode(x))

    def storage_bytes(
        self, numel: int, *, level_bytes: int = 4, tables: bool = False
    ) -> dict[str, float]:
        """Bytes to store a tensor of ``numel`` elements with this codebook.

        Returns ``codes`` (packed, :mod:`tvmq.packing`), ``codebook``, ``total`` and
        ``bits_per_weight`` (total bits over ``numel``, codebooks included). A codebook
        whose scheme derives its levels from a few parameters (``meta
        ["param_bytes_per_group"]``: a uniform scale, TFX's IS/SC) costs those bytes per
        group; otherwise, or with ``tables=True``, each level costs ``level_bytes`` (4 for
        the float32 tables the kernels read, 2 for fp16). A ``shared`` codebook (one level
        shape scaled per group) costs one table plus its per-group scales.
        """
        codes = math.ceil(numel * self.bits / 8)
        per_group = self.meta.get("param_bytes_per_group")
        if self.meta.get("shared"):  # one table and a scale per group
            book = self.n_groups * int(per_group) + self.levels.shape[-1] * level_bytes
        elif per_group is not None and not tables:
            book = self.n_groups * int(per_group)
        else:
            book = self.levels.size * level_bytes
        total = codes + book
        return {
            "codes": codes,
            "codebook": book,
            "total": total,
            "bits_per_weight": 8.0 * total / numel,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form; round-trips exactly through :meth:`from_dict`."""
        custom = not np.array_equal(self.thresholds, midpoint_thresholds(self.levels))
        return {
            "format": CODEBOOK_FORMAT,
            "version": CODEBOOK_VERSION,
            "bits": self.bits,
            "levels": [[float(v) for v in row] for row in self.levels],
            "thresholds": (
                [[None if math.isinf(v) else float(v) for v in row] for row in self.thresholds]
                if custom
                else None
            ),
            "axis": self.axis,
            "group_size": self.group_size,
            "tie": self.tie,
            "scheme": self.scheme,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Codebook:
        """Rebuild a codebook from :meth:`to_dict` output; rejects other formats and versions."""
        if not isinstance(d, dict) or d.get("format") != CODEBOOK_FORMAT:
            raise FormatError(f"not a {CODEBOOK_FORMAT} dict")
        version = d.get("version")
        if not isinstance(version, int) or version > CODEBOOK_VERSION:
            raise FormatError(
                f"codebook format version {version!r} is newer than this tvmq supports "
                f"({CODEBOOK_VERSION}); upgrade tvmq"
            )
        try:
            thr = d.get("thresholds")
            if thr is not None:
                thr = [[np.inf if v is None else v for v in row] for row in thr]
            return cls(
                bits=d["bits"],
                levels=np.asarray(d["levels"], dtype=np.float32),
                thresholds=None if thr is None else np.asarray(thr, dtype=np.float64),
                axis=d.get("axis"),
                group_size=d.get("group_size"),
                tie=d.get("tie", "low"),
                scheme=d.get("scheme", "custom"),
                meta=dict(d.get("meta") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise FormatError(f"invalid codebook: {exc}") from exc
            raise FormatError(f"invalid codebook dict: {exc!r}") from exc
