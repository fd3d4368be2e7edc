"""Relax operators tvmq adds, registered from Python.

``quant.lut_decode(packed, levels, shape, bits, axis, group_size)``
    The float32 weight of ``shape`` encoded by uint8 ``packed`` codes (the
    :mod:`tvmq.packing` layout plus one padding byte) and float32 ``levels[groups, K]``.
    ``axis`` is -1 for a per-tensor codebook, ``group_size`` 0 for none. Type inference
    gives ``R.Tensor(shape, "float32")``; the fallback legalization materializes the weight
    with :func:`tvmq.kernels.lut_decode_compute`, so any annotated module runs.
    :class:`relay_passes.LegalizeLUT` instead fuses it into LUT kernels that never do.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .codebook import Codebook
from .kernels import LutWeight, lut_decode_compute
from .packing import pack

LUT_DECODE = "quant.lut_decode"


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


def _register() -> None:
    if LUT_DECODE in tvm.ir.Op.list_op_names() and tvm.ir.Op.get(LUT_DECODE).get_attr("FInferType"):
        return  # registered already (a module reload)
    tvm.ir.register_op_attr(LUT_DECODE, "FInferType", _infer_type)
    tvm.ir.register_op_attr(LUT_DECODE, "FLegalize", _legalize)
    tvm.ir.register_op_attr(LUT_DECODE, "FPurity", True)


_register()
LUT_DECODE_OP = tvm.ir.Op.get(LUT_DECODE)


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
    cb: Codebook, weight: np.ndarray
) -> tuple[relax.Constant, relax.Constant, LutWeight]:
    """Encode ``weight`` with ``cb``: packed-codes and levels constants, and their spec."""
    spec = LutWeight.from_codebook(cb, weight.shape)
    packed = np.concatenate([pack(cb.encode(weight), cb.bits), np.zeros(1, np.uint8)])
    return (
        relax.const(packed.astype(np.uint8), "uint8"),
        relax.const(np.ascontiguousarray(cb.levels, dtype=np.float32), "float32"),
        spec,
    )


def is_lut_decode(expr: relax.Expr) -> bool:
    return isinstance(expr, relax.Call) and expr.op.same_as(LUT_DECODE_OP)


def spec_of(call: relax.Call) -> LutWeight:
    """The :class:`LutWeight` of a ``quant.lut_decode`` call."""
    shape = tuple(int(s) for s in call.args[2].values)
    axis = _int(call.args[4])
    group = _int(call.args[5])
    n_groups, n_levels = (int(s) for s in call.args[1].ty.shape)
    return LutWeight(
        shape=shape,
        bits=_int(call.args[3]),
        axis=None if axis < 0 else axis,
        group_size=group or None,
        n_groups=n_groups,
        n_levels=n_levels,
    )


def _int(prim_value: relax.Expr) -> int:
    value = prim_value.value
    return int(getattr(value, "value", value))
