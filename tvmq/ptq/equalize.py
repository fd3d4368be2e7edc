"""Cross-layer equalization (Nagel et al., "Data-Free Quantization", ICCV 2019).

For two layers ``y = W2 f(W1 x + b1)`` with a positively homogeneous ``f`` between them
(ReLU, max pooling: ``f(x / s) = f(x) / s`` for ``s > 0``), scaling output channel ``i`` of
layer 1 by ``1 / s_i`` and input channel ``i`` of layer 2 by ``s_i`` leaves the network's
function unchanged. With ``s_i = sqrt(r1_i / r2_i)`` (``r1_i``: the range of layer 1's
output channel ``i``, ``r2_i``: that of layer 2's input channel ``i``) both become
``sqrt(r1_i r2_i)``: the channels of each layer get similar ranges, which is what a
per-tensor quantizer (the activations between the two layers, or a per-tensor weight
codebook) needs. Pure numpy; :mod:`relay_passes.equalize` finds the pairs in a graph.
"""

from __future__ import annotations

import numpy as np


def channel_ranges(w: np.ndarray, axis: int) -> np.ndarray:
    """``max |w|`` over every axis but ``axis``."""
    return np.abs(np.moveaxis(np.asarray(w, np.float64), axis, 0)).reshape(w.shape[axis], -1).max(1)


def equalization_scales(
    w1: np.ndarray, out_axis: int, w2: np.ndarray, in_axis: int, max_scale: float = 1e3
) -> np.ndarray:
    """Per-channel ``s`` (float64) with ``r1 / s == r2 * s``; 1 where a channel is all zero,
    clipped to ``[1 / max_scale, max_scale]``."""
    r1, r2 = channel_ranges(w1, out_axis), channel_ranges(w2, in_axis)
    if r1.shape != r2.shape:
        from ..errors import DataError

        raise DataError(f"{r1.size} output channels of layer 1 but {r2.size} inputs of layer 2")
    s = np.ones_like(r1)
    ok = (r1 > 0) & (r2 > 0)
    s[ok] = np.sqrt(r1[ok] / r2[ok])
    return np.clip(s, 1.0 / max_scale, max_scale)


def scale_along(a: np.ndarray, axis: int, s: np.ndarray) -> np.ndarray:
    """``a`` with slice ``i`` along ``axis`` multiplied by ``s[i]`` (float32)."""
    shape = [1] * a.ndim
    shape[axis] = -1
    return (np.asarray(a, np.float64) * s.reshape(shape)).astype(np.float32)
