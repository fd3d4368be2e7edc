"""What a float model holds: its weight layers, shapes, parameter bytes, MACs, and the
largest activation footprint of one operator (input(s) + output), which bounds the arena
an ahead-of-time executor needs from below."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import tvm
from tvm import relax


@dataclass
class LayerInfo:
    name: str
    kind: str
    weight_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    macs: int


def _shape(ty) -> tuple[int, ...]:
    return tuple(int(s) for s in ty.shape)


def _bytes(ty) -> int:
    return math.prod(_shape(ty)) * tvm.DataType(str(ty.dtype)).bits // 8


def inspect_model(model: Any) -> dict:
    """Layers (conv / depthwise / dense with their MACs), totals, and the peak bytes of one
    operator's tensors. ``model`` is anything :func:`tvmq.load_model` accepts."""
    from relay_passes.annotate_quant import find_weight_sites

    from .frontend.load import load_model

    mod = model if isinstance(model, tvm.IRModule) else load_model(model)
    func = relax.transform.ToNonDataflow()(mod)["main"]
    layers = []
    for site in find_weight_sites(func):
        out = _shape(site.call.ty)
        numel_w = math.prod(site.shape)
        if site.kind == "dense":
            k = site.shape[1 - site.axis]
            macs = math.prod(out) * k
        else:  # conv: each output element takes (weights per output channel) MACs
            macs = math.prod(out) * numel_w // site.shape[site.axis]
        layers.append(LayerInfo(site.name, site.kind, site.shape, out, numel_w, macs))
    peak, peak_op = 0, ""

    @relax.expr_functor.visitor
    class _Peak(relax.PyExprVisitor):
        def visit_call_(self, call):
            nonlocal peak, peak_op
            tensors = [a for a in call.args if isinstance(a, relax.Var)]
            try:
                total = _bytes(call.ty) + sum(_bytes(a.ty) for a in tensors)
            except (AttributeError, TypeError, ValueError):
                total = 0  # tuples, shapes: not activation tensors
            if total > peak:
                name = call.op.name if isinstance(call.op, tvm.ir.Op) else str(call.op)
                peak, peak_op = total, name
            super().visit_call_(call)

    _Peak().visit_expr(func)
    return {
        "inputs": [
            {"name": p.name, "shape": list(_shape(p.ty)), "dtype": str(p.ty.dtype)}
            for p in func.params
        ],
        "layers": [asdict(x) for x in layers],
        "params": sum(x.params for x in layers),
        "param_bytes_float32": 4 * sum(x.params for x in layers),
        "macs": sum(x.macs for x in layers),
        "peak_op_bytes": peak,
        "peak_op": peak_op,
    }
