"""CrossLayerEqualize: rescale channels between consecutive layers (before annotation).

Pairs are found in ``main``: a convolution or dense layer ``A`` with a constant weight,
optionally its bias ``R.add(A, constant)``, then only ReLU and max-pool ops (each result
used once), then the data input of a layer ``B`` with a constant weight: a ``groups=1``
convolution (input channel axis ``I``), a depthwise convolution (its channel axis ``O``:
channel ``i`` in is channel ``i`` out) or a dense layer fed by a dense layer. Residual
branches (a result used twice), reshapes and other ops end a chain. The scales are those
of :func:`tvmq.ptq.equalize.equalization_scales`, applied to the pairs in graph order for
``iterations`` sweeps (a layer is ``B`` of one pair and ``A`` of the next); the new
weights and biases replace the constants, so the float model computes the same function
(up to float32 rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax import PyExprMutator, PyExprVisitor, expr_functor

from tvmq.ptq.equalize import equalization_scales, scale_along

from .annotate_quant import find_weight_sites

_HOMOGENEOUS = {"relax.nn.relu", "relax.nn.max_pool2d", "relax.nn.max_pool1d"}


@dataclass(frozen=True)
class Pair:
    """Two layers whose shared channels are equalized (site names and axes)."""

    first: str
    second: str
    out_axis: int
    in_axis: int
    bias: object  # the bias constant of the first layer, or None


def _graph(func):
    bound, uses = {}, {}

    @expr_functor.visitor
    class _Info(PyExprVisitor):
        def visit_var_binding_(self, binding):
            bound[binding.var] = binding.value
            super().visit_var_binding_(binding)

        def visit_var_(self, var):
            uses[var] = uses.get(var, 0) + 1

        def visit_dataflow_var_(self, var):
            uses[var] = uses.get(var, 0) + 1

    _Info().visit_expr(func)
    return bound, uses


def _op(value) -> str:
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
        return value.op.name
    return ""


def _in_axis(site) -> int | None:
    if site.kind == "dense":
        return 1 - site.axis
    layout = str(site.call.attrs.kernel_layout)
    if int(site.call.attrs.groups) == 1:
        return layout.index("I")
    if site.kind == "depthwise":
        return layout.index("O")
    return None


def find_pairs(func: relax.Function) -> list[tuple]:
    """``[(site A, site B, bias constant of A or None)]`` as the module doc describes."""
    bound, uses = _graph(func)
    sites = [s for s in find_weight_sites(func) if s.const is not None]
    by_call = {s.call: s for s in sites}
    pairs = []
    for b in sites:
        if _in_axis(b) is None:
            continue
        v, bias = b.call.args[0], None
        while isinstance(v, relax.Var) and uses.get(v, 0) == 1 and v in bound:
            value = bound[v]
            if _op(value) in _HOMOGENEOUS:
                v = value.args[0]
                continue
            if (
                bias is None
                and _op(value) == "relax.add"
                and isinstance(value.args[1], tvm.ir.GenericConst)
            ):
                bias, v = value.args[1], value.args[0]
                continue
            a = by_call.get(value)
            if a is None or (a.kind == "dense") != (b.kind == "dense"):
                break
            channels = a.shape[a.axis]
            if b.shape[_in_axis(b)] != channels:
                break
            if bias is not None and bias.value.numpy().size != channels:
                break  # not one bias per channel: scaling it would change the function
            pairs.append((a, b, bias))
            break
    return pairs


@expr_functor.mutator
class _Replace(PyExprMutator):
    def __init__(self, mod, new: dict):
        super().__init__(mod)
        self.new = new

    def visit_generic_const_(self, const):
        return self.new.get(const, const)


def cross_layer_equalize(mod: tvm.IRModule, iterations: int = 4) -> tuple[tvm.IRModule, list[Pair]]:
    """Equalize every pair of ``main`` (see the module doc); returns the module and pairs."""
    func = mod["main"]
    pairs = find_pairs(func)
    if not pairs:
        return mod, []
    values = {}

    def get(const):
        if const not in values:
            values[const] = const.value.numpy()
        return values[const]

    for _ in range(iterations):
        for a, b, bias in pairs:
            in_axis = _in_axis(b)
            s = equalization_scales(get(a.const), a.axis, get(b.const), in_axis)
            values[a.const] = scale_along(get(a.const), a.axis, 1.0 / s)
            values[b.const] = scale_along(get(b.const), in_axis, s)
            if bias is not None:
                bv = get(bias)
                values[bias] = (bv.reshape(-1) / s).astype(np.float32).reshape(bv.shape)
    new = {c: relax.const(v.astype(np.float32), "float32") for c, v in values.items()}
    gv = mod.get_global_var("main")
    mutator = _Replace(mod, new)
    mutator.builder_.update_func(gv, mutator.visit_expr(func))
    report = [Pair(a.name, b.name, a.axis, _in_axis(b), bias) for a, b, bias in pairs]
    return mutator.builder_.get(), report
