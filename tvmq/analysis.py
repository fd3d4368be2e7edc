"""Weight-quantization tables: SQNR and size by scheme x bits on a model's real weights."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .frontend.tflite_weights import LayerWeight
from .schemes import fit


@dataclass(frozen=True)
class WeightQuantResult:
    """One (scheme, bits, granularity) row over all layers of a model."""

    scheme: str
    bits: int
    granularity: str
    sqnr_db: float
    bytes_total: int
    bits_per_weight: float
    layer_sqnr_db: tuple[float, ...]

    def to_dict(self) -> dict:
        return {
            "scheme": self.scheme,
            "bits": self.bits,
            "granularity": self.granularity,
            "sqnr_db": self.sqnr_db,
            "bytes_total": self.bytes_total,
            "bits_per_weight": self.bits_per_weight,
            "layer_sqnr_db": list(self.layer_sqnr_db),
        }


def _db(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def quantize_layers(
    layers: Sequence[LayerWeight],
    scheme: str,
    bits: int,
    *,
    granularity: str = "channel",
    level_bytes: int = 4,
    label: str | None = None,
    **options,
) -> WeightQuantResult:
    """Quantize every layer's weight; model SQNR is total signal over total noise.

    ``granularity`` is ``"channel"`` (per output channel) or ``"tensor"``. Sizes count
    packed codes plus codebooks at ``level_bytes`` per level. ``label`` names the row
    (default: the scheme); ``options`` go to the scheme config.
    """
    signal = noise = 0.0
    total = 0
    per_layer = []
    for layer in layers:
        w = layer.weight
        axis = layer.channel_axis if granularity == "channel" else None
        cb = fit(w, scheme, bits=bits, axis=axis, **options)
        err = w.astype(np.float64) - cb.quantize(w)
        s, n = float(np.sum(w.astype(np.float64) ** 2)), float(np.sum(err**2))
        signal, noise = signal + s, noise + n
        per_layer.append(_db(s, n))
        total += cb.storage_bytes(w.size, level_bytes=level_bytes)["total"]
    numel = sum(layer.weight.size for layer in layers)
    return WeightQuantResult(
        scheme=label or scheme,
        bits=bits,
        granularity=granularity,
        sqnr_db=_db(signal, noise),
        bytes_total=total,
        bits_per_weight=8.0 * total / numel,
        layer_sqnr_db=tuple(per_layer),
    )


def sqnr_table(
    layers: Sequence[LayerWeight],
    schemes: Iterable[str | tuple[str, str, dict]],
    bits: Iterable[int],
    *,
    granularity: str = "channel",
    progress=None,
) -> list[WeightQuantResult]:
    """:func:`quantize_layers` for every scheme x bits; ``progress(done, total)`` if given.

    A scheme is a registered name or a ``(label, name, options)`` variant such as
    ``("tfx-mse", "tfx", {"select": "mse"})``.
    """
    variants = [(s, s, {}) if isinstance(s, str) else s for s in schemes]
    grid = [(v, b) for v in variants for b in bits]
    rows = []
    for i, ((label, name, options), b) in enumerate(grid):
        rows.append(
            quantize_layers(layers, name, b, granularity=granularity, label=label, **options)
        )
        if progress is not None:
            progress(i + 1, len(grid))
    return rows
