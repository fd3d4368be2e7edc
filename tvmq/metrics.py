"""Error metrics for quantized tensors."""

from __future__ import annotations

import numpy as np

from .errors import DataError


def _pair(x, xq) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    xq = np.asarray(xq, dtype=np.float64)
    if x.shape != xq.shape:
        raise DataError(f"shapes differ: {x.shape} vs {xq.shape}")
    if x.size == 0:
        raise DataError("empty tensors")
    return x, xq


def mse(x, xq) -> float:
    """Mean squared error between a tensor and its quantized version."""
    x, xq = _pair(x, xq)
    return float(np.mean((x - xq) ** 2))


def sqnr_db(x, xq) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(sum x^2 / sum (x - xq)^2)`` in dB.

    ``inf`` when the quantization is exact; ``-inf`` when the signal is all zeros but the
    quantized tensor is not.
    """
    x, xq = _pair(x, xq)
    noise = float(np.sum((x - xq) ** 2))
    signal = float(np.sum(x**2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(signal / noise))
