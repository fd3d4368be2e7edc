"""Relax operators tvmq adds, registered from Python.

``quant.lut_decode(packed, levels, shape, bits, axis, group_size)``
    The float32 weight of ``shape`` encoded by uint8 ``packed`` codes (the
    :mod:`tvmq.packing` layout plus one padding byte) and float32 ``levels[groups, K]``.
    ``axis`` is -1 for a per-tensor codebook, ``group_size`` 0 for none. Type inference
    gives ``R.Tensor(shape, "float32")``; the fallback legalization materializes the weight
    with :func:`tvmq.kernels.lut_decode_compute`, so any annotated module runs.
    :class:`relay_passes.LegalizeLUT` instead fuses it into LUT kernels that never do.

``quant.quantize(x, scale, zero_point, bits[, snap])``
    Uniform activation quantization to int8 storage:
    ``clamp(floor(x * (1 / scale) + 0.5) + zero_point, -2**(bits-1), 2**(bits-1) - 1)``,
    rounding half up with the reciprocal computed in float32, so the TE kernels and the
    numpy reference (:func:`tvmq.kernels.quantize_reference`) agree bit for bit. With the
    optional ``snap`` (an int8 constant of 256 entries) the quantizer is non-uniform: the
    clamp is to the 8-bit range and the code is then ``snap[code + 128]``, one of
    ``2**bits`` levels of the 8-bit grid (:mod:`tvmq.kernels.activation`); ``dequantize``
    is unchanged.

``quant.dequantize(q, scale, zero_point)``
    ``(q - zero_point) * scale`` in float32.

``scale``, ``zero_point`` and ``bits`` are ``relax.PrimValue`` s; :class:`relay_passes.
Calibrate` sets them.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .codebook import Codebook
from .kernels import LutWeight, dequantize_compute, lut_decode_compute, quantize_compute
from .packing import pack

LUT_DECODE = "quant.lut_decode"
QUANTIZE = "quant.quantize"
DEQUANTIZE = "quant.dequantize"


def _infer_type(call: relax.Call, ctx) -> relax.TensorType:
    return relax.TensorType(call.args[2].values, "float32")


def _legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    spec = spec_of(call)
    return bb.call_te(
        lambda packed, levels: lut_decode_compute(packed, levels, spec),
        call.args[0],
        call.args[1],
        primfunc_name_hint="lut_decode",
    )


def _infer_quantize(call: relax.Call, ctx) -> relax.TensorType:
    return relax.TensorType(call.args[0].ty.shape, "int8")


def _infer_dequantize(call: relax.Call, ctx) -> relax.TensorType:
    return relax.TensorType(call.args[0].ty.shape, "float32")


def _legalize_quantize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    scale, zero, bits = act_params(call)
    snap = snap_arg(call)
    return bb.call_te(
        lambda x, *table: quantize_compute(x, scale, zero, bits, *table),
        call.args[0],
        *([] if snap is None else [snap]),
        primfunc_name_hint="quantize",
    )


def _legalize_dequantize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    scale, zero = prim_float(call.args[1]), prim_int(call.args[2])
    return bb.call_te(
        lambda q: dequantize_compute(q, scale, zero), call.args[0], primfunc_name_hint="dequantize"
    )


_OPS = {
    LUT_DECODE: (_infer_type, _legalize),
    QUANTIZE: (_infer_quantize, _legalize_quantize),
    DEQUANTIZE: (_infer_dequantize, _legalize_dequantize),
}


def _register() -> None:
    for name, (infer, legalize) in _OPS.items():
        if name in tvm.ir.Op.list_op_names() and tvm.ir.Op.get(name).get_attr("FInferType"):
            continue  # registered already (a module reload)
        tvm.ir.register_op_attr(name, "FInferType", infer)
        tvm.ir.register_op_attr(name, "FLegalize", legalize)
        tvm.ir.register_op_attr(name, "FPurity", True)


_register()
LUT_DECODE_OP = tvm.ir.Op.get(LUT_DECODE)
QUANTIZE_OP = tvm.ir.Op.get(QUANTIZE)
DEQUANTIZE_OP = tvm.ir.Op.get(DEQUANTIZE)


def quantize(
    x: relax.Expr, scale: float, zero_point: int, bits: int, snap: np.ndarray | None = None
) -> relax.Call:
    """A ``quant.quantize`` call (see module doc; ``snap``: the int8 table of a
    non-uniform quantizer)."""
    args = [x, _fprim(scale), relax.prim_value(int(zero_point)), relax.prim_value(int(bits))]
    if snap is not None:
        args.append(relax.const(np.asarray(snap, np.int8), "int8"))
    return relax.Call(QUANTIZE_OP, args)


def dequantize(q: relax.Expr, scale: float, zero_point: int) -> relax.Call:
    """A ``quant.dequantize`` call (see module doc)."""
    return relax.Call(DEQUANTIZE_OP, [q, _fprim(scale), relax.prim_value(int(zero_point))])


def _fprim(value: float) -> relax.Expr:
    return relax.prim_value(tvm.tirx.FloatImm("float32", float(np.float32(value))))


def act_params(call: relax.Call) -> tuple[float, int, int]:
    """``(scale, zero_point, bits)`` of a ``quant.quantize`` call."""
    return prim_float(call.args[1]), prim_int(call.args[2]), prim_int(call.args[3])


def snap_arg(call: relax.Call) -> relax.Expr | None:
    """The snap-table argument of a non-uniform ``quant.quantize`` call (None: uniform)."""
    return call.args[4] if len(call.args) > 4 else None


def act_snap(call: relax.Call) -> np.ndarray | None:
    """The snap table of a non-uniform ``quant.quantize`` call, as numpy (None: uniform)."""
    snap = snap_arg(call)
    return None if snap is None else snap.value.numpy()


def is_op(expr: relax.Expr, op) -> bool:
    return isinstance(expr, relax.Call) and expr.op.same_as(op)


def lut_decode(packed: relax.Expr, levels: relax.Expr, spec: LutWeight) -> relax.Call:
    """A ``quant.lut_decode`` call for a weight described by ``spec``."""
    return relax.Call(
        LUT_DECODE_OP,
        [
            packed,
            levels,
            relax.ShapeExpr(list(spec.shape)),
            relax.prim_value(spec.bits),
            relax.prim_value(-1 if spec.axis is None else spec.axis),
            relax.prim_value(spec.group_size or 0),
        ],
    )


def lut_decode_constants(
    cb: Codebook, weight: np.ndarray, codes: np.ndarray | None = None
) -> tuple[relax.Constant, relax.Constant, LutWeight]:
    """Encode ``weight`` with ``cb`` (or take ``codes`` as given): packed-codes and levels
    constants, and their spec."""
    spec = LutWeight.from_codebook(cb, weight.shape)
    codes = cb.encode(weight) if codes is None else codes
    packed = np.concatenate([pack(codes, cb.bits), np.zeros(1, np.uint8)])
    return (
        relax.const(packed.astype(np.uint8), "uint8"),
        relax.const(np.ascontiguousarray(cb.levels, dtype=np.float32), "float32"),
        spec,
    )


def is_lut_decode(expr: relax.Expr) -> bool:
    return is_op(expr, LUT_DECODE_OP)


def spec_of(call: relax.Call) -> LutWeight:
    """The :class:`LutWeight` of a ``quant.lut_decode`` call."""
    shape = tuple(int(s) for s in call.args[2].values)
    axis = prim_int(call.args[4])
    group = prim_int(call.args[5])
    n_groups, n_levels = (int(s) for s in call.args[1].ty.shape)
    return LutWeight(
        shape=shape,
        bits=prim_int(call.args[3]),
        axis=None if axis < 0 else axis,
        group_size=group or None,
        n_groups=n_groups,
        n_levels=n_levels,
    )


def prim_int(prim_value: relax.Expr) -> int:
    value = prim_value.value
    return int(getattr(value, "value", value))


def prim_float(prim_value: relax.Expr) -> float:
    value = prim_value.value
    return float(np.float32(getattr(value, "value", value)))
