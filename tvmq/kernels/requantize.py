"""Fixed-point requantize: int32 accumulator to int8 codes with integer arithmetic only.

``y_q = clamp(round_shift(acc + bias_q[o], mult[o], shift[o]) + out_zero, lo, hi)`` where
the real rescale ``r[o] = x_scale * w_scale[o] / out_scale`` is ``mult[o] * 2**-shift[o]``
with a 31-bit ``mult`` (gemmlowp / CMSIS-NN style) and ``round_shift(v, m, s) = (v * m +
2**(s-1)) >> s`` in int64 (round half up). ``bias_q = round(bias / (x_scale * w_scale))``.
``lo``/``hi`` fold the activation (ReLU: the code of 0.0; ReLU6: the code of 6.0) into the
output clamp. No float is touched at run time: what a Cortex-M without FPU runs.
"""

from __future__ import annotations

import numpy as np


def quantize_multiplier(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mult, shift)`` with ``real ~ mult * 2**-shift`` and ``mult`` in [2**30, 2**31)."""
    real = np.asarray(real, dtype=np.float64)
    if np.any(real <= 0):
        raise ValueError("rescale factors must be positive")
    mant, exp = np.frexp(real)  # real = mant * 2**exp, mant in [0.5, 1)
    mult = np.round(mant * (1 << 31)).astype(np.int64)
    carry = mult == (1 << 31)
    mult = np.where(carry, 1 << 30, mult)
    exp = np.where(carry, exp + 1, exp)
    shift = (31 - exp).astype(np.int64)
    if np.any(shift < 1) or np.any(shift > 62):
        raise ValueError(f"rescale factor out of the supported range: {real}")
    return mult.astype(np.int64), shift


def requantize_reference(acc, bias_q, mult, shift, out_zero, lo, hi, channel_axis=-1):
    """numpy: int8 codes of int64 accumulators ``acc`` (channel along ``channel_axis``)."""
    shape = [1] * np.ndim(acc)
    shape[channel_axis] = -1
    v = np.asarray(acc, np.int64) + np.asarray(bias_q, np.int64).reshape(shape)
    m = np.asarray(mult, np.int64).reshape(shape)
    s = np.asarray(shift, np.int64).reshape(shape)
    # v * m can exceed int64 only if |v| >= 2**32; accumulators here stay below 2**31.
    r = (v * m + (np.int64(1) << (s - 1))) >> s
    return np.clip(r + out_zero, lo, hi).astype(np.int8)


def requantize_expr(acc, o, bias_q, mult, shift, out_zero: int, lo: int, hi: int):
    """TE expression of the same arithmetic for output channel index ``o``."""
    import tvm

    v = (acc + bias_q[o]).astype("int64")
    s = shift[o].astype("int64")
    r = (v * mult[o].astype("int64") + (tvm.tirx.const(1, "int64") << (s - 1))) >> s
    r = r.astype("int32") + out_zero
    return tvm.tirx.max(tvm.tirx.min(r, hi), lo).astype("int8")
