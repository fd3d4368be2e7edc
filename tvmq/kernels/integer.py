"""Integer LUT kernels for int8 activations: int8 level tables, int32 accumulation.

With activations quantized (``x = s_x * (q - z_x)``), each weight group's levels are snapped
to an int8 grid ``level = w_scale[g] * T[g, k]`` (:func:`int_level_table`), so

    y[o] = s_x * w_scale[g(o)] * sum (q - z_x) * T[g(o), code]

is an integer multiply-accumulate (int32, exact) followed by one float multiply per output
(``out_scale[o] = s_x * w_scale[g(o)]`` precomputed in float32), the epilogue a Cortex-M4F
runs; a fixed-point requantize replaces it for FPU-less cores (deployment issue). Only
per-tensor and per-channel codebooks qualify: a group scale that varies along the
reduction cannot be factored out of the sum.

int8 tables keep the sum in int32 for any reduction below 66,000 (``255 * 127 * K``).
"""

from __future__ import annotations

import numpy as np

from .conv import conv_loops, lut_conv_reference
from .decode import LutWeight
from .requantize import requantize_expr

TABLE_MAX = 127


def int_level_table(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(T, w_scale)``: int8 ``T[G, K]`` and float32 ``w_scale[G]`` with levels ~ T * scale."""
    lv = np.asarray(levels, dtype=np.float32)
    amax = np.abs(lv).max(axis=1)
    scale = np.where(amax > 0, amax / TABLE_MAX, 1.0).astype(np.float32)
    table = np.clip(np.round(lv / scale[:, None]), -TABLE_MAX, TABLE_MAX).astype(np.int8)
    return table, scale


def snap_levels(levels: np.ndarray) -> np.ndarray:
    """Levels rounded to their int8 grid (what an integer kernel effectively multiplies by)."""
    table, scale = int_level_table(levels)
    return table.astype(np.float32) * scale[:, None]


def out_scales(spec: LutWeight, w_scale: np.ndarray, x_scale: float, out_channels: int):
    """float32 ``out_scale[o] = x_scale * w_scale[g(o)]`` for per-tensor/per-channel specs."""
    ws = np.asarray(w_scale, np.float32)
    per_o = ws if spec.axis is not None else np.full(out_channels, ws[0], np.float32)
    return (np.float32(x_scale) * per_o).astype(np.float32)


def supports_integer(spec: LutWeight) -> bool:
    """Whether the integer kernels can run this weight (no per-group codebooks)."""
    return spec.group_size is None


def _int_value(spec: LutWeight, packed, table, idx):
    return table[spec.group_of(idx), spec.code_expr(packed, idx)].astype("int32")


def _epilogue(a, oscale, requant, c_pos: int, name: str):
    """float32 ``acc * oscale[o]``, or int8 fixed-point requantize when ``requant`` =
    ``(bias_q, mult, shift, out_zero, lo, hi)`` (see :mod:`tvmq.kernels.requantize`)."""
    from tvm import te

    if requant is None:
        return te.compute(a.shape, lambda *i: a(*i).astype("float32") * oscale[i[c_pos]], name=name)
    bias_q, mult, shift, out_zero, lo, hi = requant
    return te.compute(
        a.shape,
        lambda *i: requantize_expr(a(*i), i[c_pos], bias_q, mult, shift, out_zero, lo, hi),
        name=name + "_requant",
    )


def lut_matmul_int_compute(
    q, packed, table, oscale, spec: LutWeight, *, x_zero: int, transposed, requant=None
):
    """TE: ``y[..., n] = oscale[n] * sum_k (q[..., k] - x_zero) * T[g, code(k, n)]``, or
    with ``requant`` the int8 codes of the requantized sum (``oscale`` unused)."""
    from tvm import te

    n_out = spec.shape[0] if transposed else spec.shape[1]
    k_dim = spec.shape[1] if transposed else spec.shape[0]
    k = te.reduce_axis((0, k_dim), name="k")

    def acc(*idx):
        *lead, n = idx
        widx = (n, k) if transposed else (k, n)
        return te.sum(
            (q[(*lead, k)].astype("int32") - x_zero) * _int_value(spec, packed, table, widx),
            axis=k,
        )

    a = te.compute((*q.shape[:-1], n_out), acc, name="lut_matmul_acc")
    return _epilogue(a, oscale, requant, len(a.shape) - 1, "lut_matmul_int")


def lut_conv_int_compute(
    q, packed, table, oscale, spec: LutWeight, *, x_zero: int, strides, padding, dilation,
    groups: int, data_layout: str, kernel_layout: str, requant=None,
):  # fmt: skip
    """TE: integer convolution; padding uses ``x_zero`` so padded terms vanish. With
    ``requant`` the output is int8 codes (see :func:`lut_matmul_int_compute`)."""
    from tvm import te

    qp, out_shape, indices, axes = conv_loops(
        q, spec, strides=strides, padding=padding, dilation=dilation, groups=groups,
        data_layout=data_layout, kernel_layout=kernel_layout, pad_value=x_zero,
    )  # fmt: skip

    def acc(*o):
        xi, wi = indices(o)
        xv = qp[xi].astype("int32") - x_zero
        return te.sum(xv * _int_value(spec, packed, table, wi), axis=axes)

    a = te.compute(out_shape, acc, name="lut_conv_acc")
    return _epilogue(a, oscale, requant, data_layout.index("C"), "lut_conv_int")


def lut_int_reference(
    q: np.ndarray, weight_table: np.ndarray, oscale: np.ndarray, *, x_zero: int, conv=None,
    transposed: bool = False, channel_axis: int = -1,
) -> np.ndarray:  # fmt: skip
    """numpy: exact int64 accumulation of ``(q - x_zero) * weight_table`` then the float32
    epilogue (with ``oscale=None`` the int64 accumulators). ``weight_table`` is the decoded
    integer weight (``T[g, code]`` per element); ``conv`` holds the convolution keywords of
    :func:`lut_conv_reference`, else matmul."""
    xq = q.astype(np.float64) - x_zero
    wt = weight_table.astype(np.float64)
    if conv is None:
        acc = xq @ (wt.T if transposed else wt)
    else:
        acc = lut_conv_reference(xq, wt, **conv, dtype=np.float64)
    acc = np.rint(acc).astype(np.int64)
    assert np.abs(acc).max(initial=0) < 2**31, "int32 accumulator overflow"
    if oscale is None:
        return acc
    shape = [1] * acc.ndim
    shape[channel_axis] = -1
    return acc.astype(np.float32) * np.asarray(oscale, np.float32).reshape(shape)
