"""AnnotateQuant: replace constant conv / dense weights by ``quant.lut_decode`` of packed codes.

Weights found (in graph order, named ``layer<i>_<kind>``):

* ``R.nn.conv2d(x, W)`` (any data / kernel layout; ``depthwise`` when ``groups`` equals the
  output channels) and ``R.nn.conv1d(x, W)``: channel axis is ``kernel_layout.index("O")``;
* ``R.matmul(x, W)`` with a 2-D ``W`` of shape ``(K, N)``: channel axis 1;
* ``R.matmul(x, R.permute_dims(W, [1, 0]))`` (how ONNX Gemm and TFLite dense import):
  the constant ``(N, K)`` is annotated, channel axis 0, and the transpose stays.

A weight that is not a constant (a graph input, a computed tensor) is left in float and
reported as such; nothing is rewritten silently. Each annotated weight is encoded once
with the scheme :meth:`tvmq.config.QuantConfig.for_layer` gives; the per-layer results
(scheme, bits, SQNR, bytes) are in ``AnnotateQuant(...).report`` after the pass runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax import PyExprMutator, PyExprVisitor, expr_functor

from tvmq.config import QuantConfig, get_config
from tvmq.metrics import sqnr_db
from tvmq.ops import lut_decode, lut_decode_constants

_CONV = {"relax.nn.conv2d": "conv2d", "relax.nn.conv1d": "conv1d"}


@dataclass(frozen=True)
class WeightSite:
    """A constant weight consumed by a conv or matmul."""

    name: str
    kind: str
    const: relax.Expr
    axis: int


@dataclass(frozen=True)
class LayerReport:
    """What AnnotateQuant did to one layer."""

    name: str
    kind: str
    shape: tuple[int, ...]
    scheme: str | None
    bits: int | None
    sqnr_db: float | None
    float_bytes: int
    quant_bytes: int

    def to_dict(self) -> dict:
        return dict(self.__dict__, shape=list(self.shape))


def _is_const(expr) -> bool:
    return isinstance(expr, tvm.ir.GenericConst)


def find_weight_sites(func: relax.Function) -> list[WeightSite]:
    """The constant weights of conv / matmul calls in ``func``, in graph order."""
    sites: list[WeightSite] = []
    bound: dict = {}

    @expr_functor.visitor
    class _Finder(PyExprVisitor):
        def visit_var_binding_(self, binding):
            bound[binding.var] = binding.value
            super().visit_var_binding_(binding)

        def visit_call_(self, call):
            op = call.op.name if isinstance(call.op, tvm.ir.Op) else ""
            if op in _CONV and _is_const(call.args[1]):
                w = call.args[1]
                axis = str(call.attrs.kernel_layout).index("O")
                kind = _CONV[op]
                groups = int(call.attrs.groups)
                if groups > 1 and groups == int(w.ty.shape[axis]):
                    kind = "depthwise"
                sites.append(WeightSite(f"layer{len(sites)}_{kind}", kind, w, axis))
            elif op == "relax.matmul":
                w = call.args[1]
                src = bound.get(w)
                if _is_const(w) and len(w.ty.shape) == 2:
                    sites.append(WeightSite(f"layer{len(sites)}_dense", "dense", w, 1))
                elif (
                    isinstance(src, relax.Call)
                    and isinstance(src.op, tvm.ir.Op)
                    and src.op.name == "relax.permute_dims"
                    and _is_const(src.args[0])
                    and len(src.args[0].ty.shape) == 2
                ):
                    sites.append(WeightSite(f"layer{len(sites)}_dense", "dense", src.args[0], 0))
            super().visit_call_(call)

    _Finder().visit_expr(func)
    return sites


@expr_functor.mutator
class _Annotator(PyExprMutator):
    def __init__(self, mod, replacements: dict):
        super().__init__(mod)
        self.replacements = replacements

    def visit_generic_const_(self, const):
        new = self.replacements.get(const)
        return new if new is not None else const


@tvm.transform.module_pass(opt_level=0, name="AnnotateQuant")
class AnnotateQuant:
    """Annotate constant conv / dense weights with ``quant.lut_decode`` (see module doc).

    Parameters
    ----------
    config : QuantConfig, str or dict
        A config or preset name (``"w4-kmeans"``...).
    """

    def __init__(self, config: QuantConfig | str | dict = "w4-kmeans"):
        self.config = get_config(config)
        self.report: list[LayerReport] = []

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        self.report = []
        out = mod
        for gv, func in mod.functions_items():
            if not isinstance(func, relax.Function):
                continue
            replacements = {}
            sites = find_weight_sites(func)
            for i, site in enumerate(sites):
                w = site.const.value.numpy()
                scheme = self.config.for_layer(site.name, i, len(sites), site.axis)
                entry = dict(
                    name=site.name, kind=site.kind, shape=tuple(w.shape), float_bytes=w.nbytes
                )
                if scheme is None or w.dtype != np.float32:
                    self.report.append(
                        LayerReport(
                            **entry, scheme=None, bits=None, sqnr_db=None, quant_bytes=w.nbytes
                        )
                    )
                    continue
                cb = scheme.fit(w)
                packed, levels, spec = lut_decode_constants(cb, w)
                replacements[site.const] = lut_decode(packed, levels, spec)
                self.report.append(
                    LayerReport(
                        **entry,
                        scheme=scheme.name,
                        bits=scheme.bits,
                        sqnr_db=sqnr_db(w, cb.quantize(w)),
                        quant_bytes=int(packed.value.numpy().nbytes + levels.value.numpy().nbytes),
                    )
                )
            if replacements:
                annotator = _Annotator(out, replacements)
                new_func = annotator.visit_expr(func)
                annotator.builder_.update_func(gv, new_func)
                out = annotator.builder_.get()
        return out
