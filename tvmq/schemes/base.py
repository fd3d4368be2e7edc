"""Scheme configs, their registry, and :func:`fit`.

A scheme is a frozen dataclass config (subclass of :class:`SchemeConfig`) registered under a
name with :func:`register_scheme`. Its only job is :meth:`SchemeConfig.fit_group`: given the
values of one group (1-D float64) and optional per-element importance, return the group's
sorted levels, optionally its own decision thresholds, and JSON metadata. Grouping,
validation, padding and the :class:`~tvmq.codebook.Codebook` are handled here once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..codebook import Codebook, check_finite, group_rows
from ..errors import ConfigError, DataError, UnknownNameError
from ..packing import check_bits

_REGISTRY: dict[str, type[SchemeConfig]] = {}


@dataclass(frozen=True)
class GroupFit:
    """What a scheme returns for one group."""

    levels: np.ndarray
    thresholds: np.ndarray | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SchemeConfig:
    """Options every scheme shares.

    Parameters
    ----------
    bits : int
        Code width, 2 to 8.
    axis : int or None
        Channel axis for per-channel codebooks (0 for dense ``(out, in)`` and conv ``OIHW``
        weights); None for one codebook per tensor.
    group_size : int or None
        Split each channel's reduction dimension into groups of this many elements.
    shared : bool
        One level *shape* for all groups, fitted to the pooled values of every group
        divided by its RMS; group ``g``'s levels are ``scale[g] * shape`` (the shape
        normalized to a largest magnitude of 1, so ``scale[g]`` is the group's largest
        level). (Normalizing by the largest weight instead lost 4.35 points on DS-CNN
        W4A8 where RMS lost 1.90.)
        The integer kernels then store one int8 table per tensor (the scales fold into
        the requantize) instead of one per channel: on small layers (a 3x3 depthwise
        channel has 9 weights and 16 levels at 4 bits) the tables cost more than the codes.
    """

    name: ClassVar[str] = ""
    tie: ClassVar[str] = "low"
    bits: int = 4
    axis: int | None = None
    group_size: int | None = None
    shared: bool = False

    def __post_init__(self) -> None:
        check_bits(self.bits)
        if not isinstance(self.shared, bool):
            raise ConfigError(f"shared must be True or False, got {self.shared!r}")
        if self.axis is not None and (
            isinstance(self.axis, bool) or not isinstance(self.axis, int)
        ):
            raise ConfigError(f"axis must be an int or None, got {self.axis!r}")
        if self.group_size is not None and (
            isinstance(self.group_size, bool)
            or not isinstance(self.group_size, int)
            or self.group_size < 1
        ):
            raise ConfigError(f"group_size must be a positive int or None, got {self.group_size!r}")

    def fit_group(self, x: np.ndarray, w: np.ndarray | None) -> GroupFit:
        """Levels for one group; ``x`` is 1-D float64, ``w`` its importance or None."""
        raise NotImplementedError

    def param_bytes(self) -> int | None:
        """Bytes per group when the levels follow from a few parameters (a scale, TFX's
        IS/SC), or None when the level table itself must be stored (k-means, quantile)."""
        return None

    def fit(self, values: Any, *, importance: Any = None) -> Codebook:
        """Fit a codebook to ``values`` (see :func:`fit`)."""
        x = check_finite(values, "values")
        rows = group_rows(x, self.axis, self.group_size)
        wrows = None
        if importance is not None:
            w = check_finite(importance, "importance")
            if w.shape != x.shape:
                raise DataError(f"importance shape {w.shape} differs from values shape {x.shape}")
            if np.any(w < 0):
                raise DataError("importance must be non-negative")
            wrows = group_rows(w, self.axis, self.group_size)
        shared = bool(self.shared and len(rows) > 1)
        if shared:
            fits = self._fit_shared(rows, wrows)
        else:
            fits = [
                self.fit_group(rows[g], None if wrows is None else wrows[g])
                for g in range(len(rows))
            ]
        levels, thresholds = _stack(fits)
        return Codebook(
            bits=self.bits,
            levels=levels,
            thresholds=thresholds,
            axis=self.axis,
            group_size=self.group_size,
            tie=self.tie,
            scheme=self.name,
            meta={
                "config": self.to_dict(),
                "param_bytes_per_group": 4 if shared else self.param_bytes(),
                "shared": shared,
                "groups": [f.meta for f in fits] if any(f.meta for f in fits) else [],
            },
        )

    def _fit_shared(self, rows, wrows) -> list[GroupFit]:
        """Per-group fits sharing one level shape (see ``shared``): groups normalized by
        their RMS and pooled, the fitted shape rescaled to a largest magnitude of 1, so
        each group's largest level is its scale, which is what
        :func:`tvmq.kernels.int_level_table` divides by (identical int8 rows)."""
        scale = np.array([np.sqrt(np.mean(r**2)) if r.size else 0.0 for r in rows], np.float64)
        scale = np.where(scale > 0, scale, 1.0)
        pooled = np.concatenate([r / s for r, s in zip(rows, scale)])
        weights = None if wrows is None else np.concatenate(list(wrows))
        fit = self.fit_group(pooled, weights)
        top = float(np.abs(fit.levels).max()) or 1.0
        shape = np.asarray(fit.levels, np.float64) / top
        scale = scale * top
        out = []
        for s in scale:
            t = None if fit.thresholds is None else np.asarray(fit.thresholds) * s / top
            out.append(GroupFit(shape * s, t, {"scale": float(s)}))
        return out

    def to_dict(self) -> dict[str, Any]:
        """``{"scheme": name, **fields}``, JSON-serializable."""
        return {"scheme": self.name, **dataclasses.asdict(self)}


def _stack(fits: list[GroupFit]) -> tuple[np.ndarray, np.ndarray | None]:
    """Pad groups to a common level count by repeating the last level (threshold +inf)."""
    width = max(f.levels.size for f in fits)
    custom = any(f.thresholds is not None for f in fits)
    levels = np.empty((len(fits), width), dtype=np.float32)
    thresholds = np.full((len(fits), width - 1), np.inf) if custom else None
    for g, f in enumerate(fits):
        lv = np.asarray(f.levels, dtype=np.float32)
        levels[g, : lv.size] = lv
        levels[g, lv.size :] = lv[-1]
        if custom:
            t = f.thresholds
            if t is None:
                lv64 = lv.astype(np.float64)
                t = (lv64[:-1] + lv64[1:]) / 2.0
            thresholds[g, : lv.size - 1] = t
    return levels, thresholds


def finalize_levels(levels: np.ndarray) -> np.ndarray:
    """Sorted, de-duplicated float32-representable levels (what every scheme returns)."""
    return np.unique(np.asarray(levels, dtype=np.float32)).astype(np.float64)


def register_scheme(name: str):
    """Class decorator: register a :class:`SchemeConfig` subclass under ``name``."""

    def wrap(cls: type[SchemeConfig]) -> type[SchemeConfig]:
        if name in _REGISTRY:
            raise ConfigError(f"scheme {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def list_schemes() -> list[str]:
    """Names of all registered schemes."""
    return sorted(_REGISTRY)


def get_scheme(name: str) -> type[SchemeConfig]:
    """The config class registered as ``name``; unknown names list the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown quantization scheme {name!r}; known schemes: {', '.join(list_schemes())}"
        ) from None


def make_config(config: str | SchemeConfig | dict, **options: Any) -> SchemeConfig:
    """A config from a scheme name plus options, a config (options replace fields), or a dict."""
    if isinstance(config, dict):
        d = dict(config)
        name = d.pop("scheme", None)
        if name is None:
            raise ConfigError("config dict needs a 'scheme' key")
        return make_config(name, **d, **options)
    if isinstance(config, str):
        cls = get_scheme(config)
        try:
            return cls(**options)
        except TypeError as exc:
            known = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ConfigError(
                f"bad option for scheme {config!r} ({exc}); options: {known}"
            ) from None
    if isinstance(config, SchemeConfig):
        try:
            return dataclasses.replace(config, **options) if options else config
        except TypeError as exc:
            raise ConfigError(f"bad option for scheme {config.name!r}: {exc}") from None
    raise ConfigError(f"config must be a scheme name, a SchemeConfig or a dict, got {config!r}")


def fit(
    values: Any, config: str | SchemeConfig | dict, /, *, importance: Any = None, **options: Any
) -> Codebook:
    """Fit a :class:`~tvmq.codebook.Codebook` to ``values``.

    Parameters
    ----------
    values : array_like
        Float tensor of any shape (e.g. a weight ``(out, in)`` or ``(O, I, H, W)``).
    config : str, SchemeConfig or dict
        A registered scheme name (options as keywords are its config fields), a config
        instance (keywords replace fields), or a ``to_dict()`` dict.
    importance : array_like, optional
        Non-negative per-element weights of the squared error (same shape as ``values``), e.g.
        a diagonal Hessian or input-activation energy. Used by schemes that minimize error.
    **options
        Config fields, e.g. ``bits=4, axis=0``.

    Returns
    -------
    Codebook

    Examples
    --------
    >>> import numpy as np, tvmq
    >>> w = np.random.default_rng(0).laplace(size=(16, 64))
    >>> cb = tvmq.fit(w, "kmeans", bits=4, axis=0)
    >>> cb.levels.shape
    (16, 16)
    """
    return make_config(config, **options).fit(values, importance=importance)
