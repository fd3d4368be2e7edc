"""Integer LUT kernels for int8 activations: int8 level tables, int32 accumulation.

With activations quantized (``x = s_x * (q - z_x)``), each weight group's levels are snapped
to an int8 grid ``level = w_scale[g] * T[g, k]`` (:func:`int_level_table`), so

    y[o] = s_x * w_scale[g(o)] * sum (q - z_x) * T[g(o), code]

is an integer multiply-accumulate (int32, exact) followed by one float multiply per output
(``out_scale[o] = s_x * w_scale[g(o)]`` precomputed in float32), the epilogue a Cortex-M4F
runs; a fixed-point requantize replaces it for FPU-less cores (deployment issue). Only
per-tensor and per-channel codebooks qualify: a group scale that varies along the
reduction cannot be factored out of the sum.

int8 tables keep the sum in int32 for any reduction below 65,000 (``255 * 128 * K``).
"""

from __future__ import annotations

import dataclasses
import types

import numpy as np

from .conv import conv_loops, lut_conv_reference
from .decode import LutWeight, lut_decode_reference
from .requantize import requantize_expr, residual_expr

TABLE_MAX = 127
INPLACE_ATTR = "tvmq.inplace_input"
"""PrimFunc attribute: the index of the ``call_tir`` argument (= PrimFunc parameter) whose
buffer the output may share, because each output element reads only the same element of
it (a fused residual). The C printer drops ``restrict`` on that pair and the executor's
memory planner lets the output overwrite the input when the input dies there."""
ZP_FOLDED = "folded"
"""``zp_sums`` value saying the caller folded the zero-point term into the requantize bias."""

UNSIGNED_OFFSET = 128
"""What ``unsigned_inputs`` kernels add to the int8 activation codes (int8 -> uint8)."""


def int_level_table(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(T, w_scale)``: int8 ``T[G, K]`` and float32 ``w_scale[G]`` with levels ~ T * scale.

    A row whose levels are integer multiples of their smallest gap (uniform levels, up to
    float32 noise) is stored exactly: ``T = level / gap`` in [-128, 127] and ``scale =
    gap``, so a uniform grid loses nothing to the int8 table and every channel of a
    per-channel uniform layer gets the same row (one shared table, :func:`shared_table`).
    Other rows are scaled to +-127 and rounded."""
    lv = np.asarray(levels, dtype=np.float32)
    amax = np.abs(lv).max(axis=1)
    scale = np.where(amax > 0, amax / TABLE_MAX, 1.0).astype(np.float32)
    table = np.clip(np.round(lv / scale[:, None]), -TABLE_MAX, TABLE_MAX).astype(np.int8)
    for g, row in enumerate(lv):
        gap = _integer_grid_gap(row)
        if gap is not None:
            scale[g] = gap
            table[g] = np.rint(row.astype(np.float64) / float(gap)).astype(np.int8)
    return table, scale


def _integer_grid_gap(row: np.ndarray) -> np.float32 | None:
    """The gap ``d`` when every level of ``row`` is ``j * d`` with integer ``j`` in
    [-128, 127] (to 1e-3 of a gap), else None."""
    u = np.unique(row.astype(np.float64))
    if u.size < 2:
        return None
    first = np.diff(u).min()
    if not first > 0:
        return None
    x = row.astype(np.float64)
    j = np.rint(x / first)
    gap = float(np.dot(x, j) / np.dot(j, j))  # least squares: float32 levels carry noise
    if np.abs(x - j * gap).max() > 1e-3 * gap or j.min() < -128 or j.max() > 127:
        return None
    return np.float32(gap)


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


def shared_table(table: np.ndarray) -> np.ndarray:
    """``table[:1]`` when every row of the int8 level table is the same (a ``shared``
    codebook, or uniform levels symmetric per channel): the kernels then read one row for
    all channels, their per-channel scales being in the epilogue. Else ``table``."""
    t = np.asarray(table)
    return t[:1] if t.shape[0] > 1 and bool(np.all(t == t[:1])) else t


def _for_table(spec: LutWeight, rows: int) -> LutWeight:
    """``spec`` as the decode of a ``rows``-row table sees it (one row: one group)."""
    if rows == 1 and spec.n_groups > 1:
        return dataclasses.replace(spec, axis=None, group_size=None, n_groups=1)
    return spec


def decode_int_compute(packed, table, spec: LutWeight, out_axis: int, pad=None):
    """TE stage ``lut_decode_int``: the int8 weight ``T[g, code]`` in the kernel's layout.

    A separate stage rather than an expression inside the reduction, so a schedule can
    decode each output channel's weights once into scratch (:mod:`tvmq.backend.schedule`)
    instead of once per multiply-accumulate. ``out_axis`` (the weight's output-channel
    axis) is annotated for the schedule, which may store the scratch channel-major.
    ``pad = (axis, size)`` extends one axis to ``size`` with zero weights.
    """
    import tvm
    from tvm import te

    per_byte = 8 // spec.bits if 8 % spec.bits == 0 else 1
    spec = _for_table(spec, int(table.shape[0]))
    shape = list(spec.shape)

    def weight(*i):
        return table[spec.group_of(i), spec.code_expr(packed, i)]

    if pad is not None:
        axis, shape[axis] = pad
        n = spec.shape[axis]
        plain = weight

        def weight(*i):
            return tvm.tirx.if_then_else(i[axis] < n, plain(*i), tvm.tirx.const(0, "int8"))

    return te.compute(
        shape,
        weight,
        name="lut_decode_int",
        attrs={"tvmq.codes_per_byte": per_byte, "tvmq.out_axis": out_axis},
    )


def zero_point_sums(packed, table, spec: LutWeight, out_axis: int, x_zero: int) -> np.ndarray:
    """numpy int32 ``-x_zero * sum(w[o])`` per output channel (``w = T[g, code]``).

    The integer kernels multiply raw int8 activation codes; adding this term per output
    channel gives ``sum((x - x_zero) * w)`` exactly (padding with ``x_zero`` makes padded
    terms cancel too). Callers that know the weights (the legalizer) pass it as a constant
    so the kernel has no extra stage; see :func:`lut_matmul_int_compute`.
    """
    table = np.asarray(table, np.float32)
    w = lut_decode_reference(packed, table, _for_table(spec, table.shape[0])).astype(np.int64)
    axes = tuple(d for d in range(w.ndim) if d != out_axis)
    return (-int(x_zero) * w.sum(axis=axes)).astype(np.int32)


def _zero_point_term(packed, table, spec: LutWeight, out_axis: int, x_zero: int, sums):
    """The per-channel zero-point term as a function of ``o``: a read of ``sums`` (a TE
    tensor from the caller), None for :data:`ZP_FOLDED` or ``x_zero == 0``, else a TE
    stage ``lut_wsum`` computing it from the codes. (TE's reduction ``init`` would be the
    natural place, but ``te.create_prim_func`` drops it in TVM 0.27.)"""
    from tvm import te

    if isinstance(sums, str) and sums == ZP_FOLDED:
        return None
    if sums is not None:
        return lambda o: sums[o]
    if x_zero == 0:
        return None
    red = [te.reduce_axis((0, int(n)), name=f"s{d}") for d, n in enumerate(spec.shape)]
    spec = _for_table(spec, int(table.shape[0]))

    def wsum(o):
        idx = tuple(o if d == out_axis else red[d] for d in range(len(spec.shape)))
        value = table[spec.group_of(idx), spec.code_expr(packed, idx)].astype("int32")
        return te.sum(value * (-x_zero), axis=[r for d, r in enumerate(red) if d != out_axis])

    ws = te.compute((spec.shape[out_axis],), wsum, name="lut_wsum")
    return lambda o: ws[o]


def _epilogue(a, oscale, requant, c_pos: int, name: str, zp=None, residual=None):
    """float32 ``acc * oscale[o]``, or int8 fixed-point requantize when ``requant`` =
    ``(offset, mult, shift, out_zero, lo, hi, high_word[, snap])`` (the arrays and the form
    of :func:`tvmq.kernels.requantize.kernel_requant`; ``snap``: the table of a
    non-uniform output quantizer).
    ``zp(o)`` is the zero-point term added to the raw accumulator first; ``residual`` =
    ``(r, res_zero, rmult, rshift)`` adds int8 codes ``r`` (the output's shape) in
    accumulator units before the requantize (:func:`residual_reference`)."""
    from tvm import te

    if zp is not None:
        raw = a

        def a(*i):
            return zp(i[c_pos]) + raw(*i)  # wsum first: TE orders stages by first use

        a.shape = raw.shape
    if residual is not None and requant is None:
        raise ValueError("a fused residual needs the fixed-point epilogue (requant=)")

    def extra(i):
        if residual is None:
            return None
        r, res_zero, rmult, rshift = residual
        return residual_expr(r, i, i[c_pos], res_zero, rmult, rshift)

    if requant is None:
        return te.compute(a.shape, lambda *i: a(*i).astype("float32") * oscale[i[c_pos]], name=name)
    offset, mult, shift, out_zero, lo, hi, high_word, *snap = requant
    snap = snap[0] if snap else None
    return te.compute(
        a.shape,
        lambda *i: requantize_expr(
            a(*i), i[c_pos], offset, mult, shift, out_zero, lo, hi, high_word, extra(i), snap
        ),
        name=name + "_requant",
    )


def _acc_attrs(c_pos: int, reduce_order, depthwise: bool) -> dict:
    """Block annotations the MCU schedule reads (:mod:`tvmq.backend.schedule`)."""
    return {
        "tvmq.channel_axis": c_pos,
        "tvmq.reduce_order": list(reduce_order),
        "tvmq.depthwise": int(depthwise),
    }


def lut_matmul_int_compute(
    q, packed, table, oscale, spec: LutWeight, *, x_zero: int, transposed, requant=None,
    zp_sums=None, residual=None,
):  # fmt: skip
    """TE: ``y[..., n] = oscale[n] * sum_k (q[..., k] - x_zero) * T[g, code(k, n)]``, or
    with ``requant`` the int8 codes of the requantized sum (``oscale`` unused).

    The sum runs over raw codes ``q * T``; the zero-point term comes from ``zp_sums`` (an
    int32 tensor of :func:`zero_point_sums`) when given, else from a TE stage. The decode
    is a stage of its own (``lut_decode_int``); the accumulator block carries the
    annotations :mod:`tvmq.backend.schedule` reads."""
    from tvm import te

    n_out = spec.shape[0] if transposed else spec.shape[1]
    k_dim = spec.shape[1] if transposed else spec.shape[0]
    k = te.reduce_axis((0, k_dim), name="k")
    wdec = decode_int_compute(packed, table, spec, 0 if transposed else 1)

    zp = _zero_point_term(packed, table, spec, 0 if transposed else 1, x_zero, zp_sums)

    def acc(*idx):
        *lead, n = idx
        widx = (n, k) if transposed else (k, n)
        prod = q[(*lead, k)].astype("int32") * wdec[widx].astype("int32")
        return te.sum(prod, axis=k)

    c_pos = len(q.shape) - 1
    a = te.compute(
        (*q.shape[:-1], n_out), acc, name="lut_matmul_acc", attrs=_acc_attrs(c_pos, [0], False)
    )
    return _epilogue(a, oscale, requant, c_pos, "lut_matmul_int", zp, residual)


def lut_conv_int_compute(
    q, packed, table, oscale, spec: LutWeight, *, x_zero: int, strides, padding, dilation,
    groups: int, data_layout: str, kernel_layout: str, requant=None, zp_sums=None,
    residual=None, unsigned_inputs: bool = False,
):  # fmt: skip
    """TE: integer convolution; padding uses ``x_zero`` so padded terms vanish. With
    ``requant`` the output is int8 codes (see :func:`lut_matmul_int_compute`, also for
    ``zp_sums``), optionally with a residual added (``residual``, see ``_epilogue``).

    ``unsigned_inputs``: the int8 codes ``q`` are offset to uint8 ``q + 128`` first (a
    stage ``lut_to_uint8``) and the products are uint8 x int8, what x86's VNNI
    ``vpdpbusd`` multiplies (:data:`UNSIGNED_OFFSET`); ``x_zero`` (and ``zp_sums``) are
    then in the uint8 domain, ``x_zero + 128``, so the result is the same integer."""
    from tvm import te

    c_pos = data_layout.index("C")
    loops_spec, pad = spec, None
    if unsigned_inputs:
        if not 0 <= x_zero <= 255:
            raise ValueError(f"unsigned_inputs needs a uint8 zero point, got {x_zero}")
        q, pad = _to_uint8(q, spec, x_zero, c_pos, groups, kernel_layout)
        if pad is not None:  # the loops run over the padded input channels
            padded = [pad[1] if d == pad[0] else n for d, n in enumerate(spec.shape)]
            loops_spec = types.SimpleNamespace(shape=tuple(padded))
    qp, out_shape, indices, axes = conv_loops(
        q, loops_spec, strides=strides, padding=padding, dilation=dilation, groups=groups,
        data_layout=data_layout, kernel_layout=kernel_layout, pad_value=x_zero,
    )  # fmt: skip
    wdec = decode_int_compute(packed, table, spec, kernel_layout.index("O"), pad)
    zp = _zero_point_term(packed, table, spec, kernel_layout.index("O"), x_zero, zp_sums)

    def acc(*o):
        xi, wi = indices(o)
        prod = qp[xi].astype("int32") * wdec[wi].astype("int32")
        return te.sum(prod, axis=axes)

    # reduce axes are [C, *spatial]; walk them in data-layout order (contiguous last)
    letters = ["C", *[c for c in data_layout if c not in "NC"]]
    order = sorted(range(len(letters)), key=lambda i: data_layout.index(letters[i]))
    in_per_group = spec.shape[kernel_layout.index("I")]
    attrs = _acc_attrs(c_pos, order, depthwise=in_per_group == 1 and groups > 1)
    a = te.compute(out_shape, acc, name="lut_conv_acc", attrs=attrs)
    return _epilogue(a, oscale, requant, c_pos, "lut_conv_int", zp, residual)


VNNI_INPUTS = 4
"""Inputs per ``vpdpbusd`` lane: ``unsigned_inputs`` kernels pad the input channels to a
multiple of it (zero weights; one channel with a kernel width that divides is left)."""


def _to_uint8(q, spec: LutWeight, x_zero: int, c_pos: int, groups: int, kernel_layout: str):
    """``(stage lut_to_uint8, weight padding or None)``: the int8 codes ``q`` + 128 as
    uint8, the channel axis padded with ``x_zero`` (uint8 domain) to a multiple of
    :data:`VNNI_INPUTS` when the input channels are not (so a 3-channel first layer gets
    the VNNI kernel too; its padded weights are zero, ``pad`` for
    :func:`decode_int_compute`)."""
    import tvm
    from tvm import te

    i_axis = kernel_layout.index("I")
    n_in = int(spec.shape[i_axis])
    width = int(spec.shape[kernel_layout.index("W")]) if "W" in kernel_layout else 0
    extra = (-n_in) % VNNI_INPUTS
    if groups != 1 or (n_in == 1 and width % VNNI_INPUTS == 0):
        extra = 0
    shape = list(q.shape)  # (the input's channels: n_in per group)
    shape[c_pos] = shape[c_pos] + extra

    def code(*i):
        value = (q(*i).astype("int32") + UNSIGNED_OFFSET).astype("uint8")
        if not extra:
            return value
        return tvm.tirx.if_then_else(i[c_pos] < n_in, value, tvm.tirx.const(x_zero, "uint8"))

    stage = te.compute(shape, code, name="lut_to_uint8")
    return stage, ((i_axis, n_in + extra) if extra else None)


def lut_conv_int_avgpool_compute(
    q, packed, table, oscale, bias, spec: LutWeight, *, x_zero: int, zp_sums, act,
    out_scale: float, out_zero: int, bits: int, residual=None, snap=None, **conv,
):  # fmt: skip
    """TE: ``quantize(global_avg_pool(act(conv(q) * oscale + bias)))``, one kernel.

    The float stages are the ones the unfused graph runs (same operations, same order:
    the pool sums pixels row-major and divides by their count, as TVM's ``avg_pool2d``
    does), so the int8 codes equal it bit for bit; but the fp32 feature map is never
    stored: the MCU schedule sums each channel block's pixels as they are computed.
    ``act`` is None, ``"relu"`` or ``"relu6"``; ``bias`` is a float32 TE tensor (one value
    per output channel). ``residual = (r, scale, zero)`` adds ``dequantize(r)`` (int8
    codes of the output's shape) after the bias, as a residual ``add`` does. ``snap``: the
    table of a non-uniform output quantizer (:func:`quantize_compute`)."""
    import tvm
    from tvm import te

    from .activation import quantize_compute

    y = lut_conv_int_compute(q, packed, table, oscale, spec, x_zero=x_zero, zp_sums=zp_sums, **conv)
    layout = conv["data_layout"]
    c_pos = layout.index("C")
    v = te.compute(y.shape, lambda *i: y(*i) + bias[i[c_pos]], name="bias_add")
    if residual is not None:
        r, r_scale, r_zero = residual
        s = tvm.tirx.const(float(np.float32(r_scale)), "float32")
        biased = v
        v = te.compute(
            y.shape,
            lambda *i: biased(*i) + (r(*i).astype("int32") - r_zero).astype("float32") * s,
            name="residual_add",
        )
    if act is not None:
        zero = tvm.tirx.const(0.0, "float32")
        six = tvm.tirx.const(6.0, "float32")
        pre = v
        if act == "relu":
            v = te.compute(pre.shape, lambda *i: tvm.tirx.max(pre(*i), zero), name="relu")
        else:
            v = te.compute(
                pre.shape, lambda *i: tvm.tirx.max(tvm.tirx.min(pre(*i), six), zero), name="clip"
            )
    spatial = [d for d, letter in enumerate(layout) if letter not in "NC"]
    red = {d: te.reduce_axis((0, int(y.shape[d])), name=f"rp{d}") for d in spatial}
    pshape = [1 if d in red else int(n) for d, n in enumerate(y.shape)]
    count = tvm.tirx.const(float(np.prod([int(y.shape[d]) for d in spatial])), "float32")

    def pool(*i):
        idx = tuple(red[d] if d in red else i[d] for d in range(len(pshape)))
        return te.sum(v[idx], axis=list(red.values()))

    total = te.compute(pshape, pool, name="pool_sum")
    avg = te.compute(pshape, lambda *i: total(*i) / count, name="pool_avg")
    return quantize_compute(avg, out_scale, out_zero, bits, snap)


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
