"""Fixed-point requantize: int32 accumulator to int8 codes with integer arithmetic only.

``y_q = clamp(round_shift(acc + bias_q[o], mult[o], shift[o]) + out_zero, lo, hi)`` where
the real rescale ``r[o] = x_scale * w_scale[o] / out_scale`` is ``mult[o] * 2**-shift[o]``
with a 31-bit ``mult`` (gemmlowp / CMSIS-NN style) and ``round_shift(v, m, s) = (v * m +
2**(s-1)) >> s`` in int64 (round half up). ``bias_q = round(bias / (x_scale * w_scale))``.
``lo``/``hi`` fold the activation (ReLU: the code of 0.0; ReLU6: the code of 6.0) into the
output clamp. No float is touched at run time: what a Cortex-M without FPU runs.

Kernels compute the same integers in a form that suits a 32-bit core
(:func:`kernel_requant`): the bias and the rounding term fold into one int64 offset per
channel, ``off = bias_q * mult + 2**(shift-1)``, so ``r = (acc * mult + off) >> shift``;
when ``shift >= 32`` (rescales below 1/2, the usual case) that is ``((acc * mult + off) >>
32) >> (shift - 32)``, exactly (floor shifts compose). On a Cortex-M the whole requantize
is then one ``SMLAL`` into the offset, an arithmetic shift of its high word, the output
zero point and a clamp, where the plain form needs a 64-bit variable shift per output.
"""

from __future__ import annotations

import numpy as np

from .activation import snap_expr


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


def kernel_requant(bias_q, mult, shift) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """``(offset, mult, shift, high_word)``: the per-channel arrays a kernel reads (int64,
    int32, int32) and whether it uses the high-word form, whose ``shift`` array holds
    ``shift - 32`` (see the module docstring). The kernel's shift amount is always a plain
    load: TVM 0.27's bound analysis gets ``x >> (t - c)`` wrong (it bounds it to [-1, 0]
    for an unknown ``t``) and would then drop the output clamp as redundant."""
    mult = np.asarray(mult, np.int64)
    shift = np.asarray(shift, np.int64)
    offset = np.asarray(bias_q, np.int64) * mult + (np.int64(1) << (shift - 1))
    high_word = bool(shift.size and shift.min() >= 32)
    k_shift = shift - 32 if high_word else shift
    return offset, mult.astype(np.int32), k_shift.astype(np.int32), high_word


def requantize_expr(
    acc, o, offset, mult, shift, out_zero: int, lo: int, hi: int, high_word: bool = False,
    extra=None, snap=None,
):  # fmt: skip
    """TE expression of the same arithmetic for output channel index ``o``, reading the
    arrays of :func:`kernel_requant`. ``extra`` (int32) is added to ``acc`` (a fused
    residual), written as a second multiply-accumulate: ``(acc + e) * m`` would reach the
    C compiler as an int64 sum times an int64 (TVM's simplifier distributes the casts),
    a full 64-bit multiply on a 32-bit core instead of one ``SMLAL`` each. ``snap``: the
    table of a non-uniform output quantizer, read after the clamp
    (:mod:`tvmq.kernels.activation`)."""
    import tvm

    m = mult[o].astype("int64")
    p = acc.astype("int64") * m + offset[o]
    if extra is not None:
        p = p + extra.astype("int64") * m
    if high_word:
        r = (p >> tvm.tirx.const(32, "int64")).astype("int32") >> shift[o]
    else:
        r = (p >> shift[o].astype("int64")).astype("int32")
    r = tvm.tirx.max(tvm.tirx.min(r + out_zero, hi), lo)
    return (r if snap is None else snap_expr(snap, r)).astype("int8")


def residual_multiplier(res_scale: float, acc_scale: np.ndarray) -> tuple[np.ndarray, int] | None:
    """``(rmult, rshift)`` turning residual codes into accumulator units:
    ``(r - z_r) * res_scale / acc_scale[o] ~ (r - z_r) * rmult[o] * 2**-rshift``.

    One ``rshift`` for all channels (a constant shift in the kernel), the largest for which
    ``|r - z_r| * rmult + 2**(rshift-1)`` (``|r - z_r| <= 255``) stays in int32; the
    rounding error is then at most ``0.5 + 128 * 2**-rshift`` accumulator units, far below
    one output code. None when even ``rshift = 1`` would overflow (a ratio of about
    ``2**22``): keep the float epilogue. The sum with the accumulator is taken in int64
    (:func:`requantize_expr`), so only the residual term itself has to fit."""
    ratio = float(res_scale) / np.asarray(acc_scale, np.float64)
    if not np.all(np.isfinite(ratio) & (ratio > 0)):
        return None
    for rshift in range(30, 0, -1):
        rmult = np.round(ratio * 2.0**rshift)
        if 255 * rmult.max() + 2.0 ** (rshift - 1) < 2**31:
            return rmult.astype(np.int32), rshift
    return None


def residual_reference(r, res_zero: int, rmult, rshift: int, channel_axis: int = -1):
    """numpy int32: the residual codes ``r`` in accumulator units (what kernels add to the
    int32 sum before requantizing), ``((r - z_r) * rmult[o] + 2**(rshift-1)) >> rshift``."""
    shape = [1] * np.ndim(r)
    shape[channel_axis] = -1
    m = np.asarray(rmult, np.int64).reshape(shape)
    v = (np.asarray(r, np.int64) - res_zero) * m + (1 << (rshift - 1))
    return (v >> rshift).astype(np.int32)


def residual_expr(r, idx, o, res_zero: int, rmult, rshift: int):
    """TE expression of :func:`residual_reference` at index ``idx`` (channel ``o``)."""
    import tvm

    v = (r[idx].astype("int32") - res_zero) * rmult[o] + tvm.tirx.const(1 << (rshift - 1), "int32")
    return v >> tvm.tirx.const(rshift, "int32")
