"""Bias correction: give back the mean output shift that weight quantization causes.

Quantizing ``W`` to ``W_hat`` moves each output channel's mean by
``(W - W_hat)[o] . E[x]`` (Nagel et al., "Data-Free Quantization", 2019), since the
layer's output is ``W x + b``. With ``E[x]`` the mean input row on calibration data (im2col
patches for convolutions, so padding is accounted for), adding that shift to the bias makes
the quantized layer's mean output equal the float one's. Pure numpy;
:mod:`tvmq.ptq.inputs` provides the mean row.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .layerwise import layer_output


def bias_shift(w2d: np.ndarray, what2d: np.ndarray, mean_row: np.ndarray, groups: int = 1):
    """``(O,)`` float32: what to add to the bias so ``E[W_hat x + b'] = E[W x + b]``.

    Parameters
    ----------
    w2d, what2d : (O, K) float
        Float and quantized weight, one row per output channel (:func:`weight_to_2d`).
    mean_row : (G K,) float
        Mean input row of the layer on calibration data.
    groups : int
        Convolution groups.
    """
    w2d, what2d = np.asarray(w2d, np.float64), np.asarray(what2d, np.float64)
    mean_row = np.asarray(mean_row, np.float64).reshape(1, -1)
    if w2d.shape != what2d.shape or mean_row.shape[1] != groups * w2d.shape[1]:
        raise DataError(
            f"shapes disagree: w {w2d.shape}, w_hat {what2d.shape}, mean row "
            f"{mean_row.shape[1]} for {groups} group(s)"
        )
    return layer_output(mean_row, w2d - what2d, groups)[0].astype(np.float32)
