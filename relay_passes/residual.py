"""Which operands of a residual ``add`` get int8 codes, so the add runs in integers.

A residual block ends in ``add(branch, skip)`` of two computed tensors. With integer-only
epilogues (``requantize="fixed"``) tvmq keeps one operand in the accumulator of the
layer that produces it and brings the other in as int8 codes:

    relu(conv(x) + bias + dequantize(r))  ->  one kernel: acc + rescale(r - z_r), requantize

so no fp32 tensor is stored between blocks (on the MLPerf Tiny ResNet-8 those fp32
intermediates were most of the arena). The operand that stays in the accumulator (the
*main* one) is a layer chain (``conv / matmul -> [add(., const)]`` with single uses); of
two such chains the later one is chosen (the earlier one has to be stored anyway). Every
other operand gets codes: the ones an existing activation quantizer already makes (an
identity skip is the next block's quantized input), else a new ``quantize`` /
``dequantize`` pair that :class:`relay_passes.Calibrate` calibrates like any other. That
is one extra 8-bit rounding of the skip path (what TFLite's int8 models do on every add);
the simulation module sees the same pair, so simulated and deployed numbers agree.
"""

from __future__ import annotations

import tvm
from tvm import relax

from ._graph import LAYER_OPS, bindings_and_uses, op_name, static_shape


def _is_tensor_var(expr) -> bool:
    return isinstance(expr, relax.Var) and isinstance(expr.ty, relax.TensorType)


def layer_chain(var, bound: dict, uses: dict) -> bool:
    """Whether ``var`` is ``layer(...)`` or ``add(layer(...), const)``, each value used once
    (the shape of chain :class:`relay_passes.LegalizeLUT` folds into one kernel)."""
    if uses.get(var, 0) != 1:
        return False
    src = bound.get(var)
    if op_name(src) == "relax.add":
        inner = [a for a in src.args if not isinstance(a, tvm.ir.GenericConst)]
        if len(inner) != 1 or len(src.args) != 2 or not isinstance(inner[0], relax.Var):
            return False
        var, src = inner[0], bound.get(inner[0])
        if uses.get(var, 0) != 1:
            return False
    return op_name(src) in LAYER_OPS


def residual_operands(func: relax.Function) -> dict:
    """``{add call: [indices of the operands to quantize]}`` for the residual adds of
    ``func`` (both operands computed float32 tensors of one shape, one a layer chain)."""
    bound, uses = bindings_and_uses(func)
    order = {var: i for i, var in enumerate(bound)}
    out = {}
    for value in bound.values():
        if op_name(value) != "relax.add" or len(value.args) != 2:
            continue
        a, b = value.args
        if not (_is_tensor_var(a) and _is_tensor_var(b)) or a.same_as(b):
            continue
        shape = static_shape(a)
        if shape is None or shape != static_shape(b) or str(a.ty.dtype) != "float32":
            continue
        chains = [i for i, v in enumerate((a, b)) if layer_chain(v, bound, uses)]
        if not chains:
            continue
        main = max(chains, key=lambda i: order.get(value.args[i], -1))
        out[value] = [1 - main]
    return out
