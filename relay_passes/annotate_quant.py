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

With ``config.activation`` set, the data input of every quantized layer is wrapped in
``quant.dequantize(quant.quantize(x, 1.0, 0, bits), 1.0, 0)`` (placeholder ranges that
:class:`Calibrate` replaces) and the layer's level table is snapped to its int8 grid
(:func:`tvmq.kernels.snap_levels`; not for per-group codebooks, which stay on the float
LUT kernels), so fake-quant simulation and the integer kernels compute the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax import PyExprMutator, PyExprVisitor, expr_functor

from tvmq.config import QuantConfig, get_config
from tvmq.kernels import lut_decode_reference, snap_levels
from tvmq.metrics import sqnr_db
from tvmq.ops import dequantize, lut_decode, lut_decode_constants, quantize

_CONV = {"relax.nn.conv2d": "conv2d", "relax.nn.conv1d": "conv1d"}


@dataclass(frozen=True)
class WeightSite:
    """A weight consumed by a conv or matmul; ``const`` is None when it is not a constant."""

    name: str
    kind: str
    const: relax.Expr | None
    axis: int
    shape: tuple[int, ...]
    call: relax.Call | None = None


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
    note: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__, shape=list(self.shape))


def _is_const(expr) -> bool:
    return isinstance(expr, tvm.ir.GenericConst)


def _shape(expr) -> tuple[int, ...]:
    return tuple(int(s) for s in expr.ty.shape)


def find_weight_sites(func: relax.Function) -> list[WeightSite]:
    """The weights of conv / matmul calls in ``func``, in graph order (see module doc)."""
    sites: list[WeightSite] = []
    bound: dict = {}

    def add(kind, const, axis, shape, call):
        sites.append(WeightSite(f"layer{len(sites)}_{kind}", kind, const, axis, shape, call))

    @expr_functor.visitor
    class _Finder(PyExprVisitor):
        def visit_var_binding_(self, binding):
            bound[binding.var] = binding.value
            super().visit_var_binding_(binding)

        def visit_call_(self, call):
            op = call.op.name if isinstance(call.op, tvm.ir.Op) else ""
            if op in _CONV:
                w = call.args[1]
                axis = str(call.attrs.kernel_layout).index("O")
                kind = _CONV[op]
                groups = int(call.attrs.groups)
                if groups > 1 and groups == _shape(w)[axis]:
                    kind = "depthwise"
                add(kind, w if _is_const(w) else None, axis, _shape(w), call)
            elif op == "relax.matmul" and len(call.args[1].ty.shape) == 2:
                w = call.args[1]
                src = bound.get(w)
                if (
                    isinstance(src, relax.Call)
                    and isinstance(src.op, tvm.ir.Op)
                    and src.op.name == "relax.permute_dims"
                    and len(src.args[0].ty.shape) == 2
                ):
                    inner = src.args[0]
                    add("dense", inner if _is_const(inner) else None, 0, _shape(inner), call)
                else:
                    add("dense", w if _is_const(w) else None, 1, _shape(w), call)
            super().visit_call_(call)

    _Finder().visit_expr(func)
    return sites


@expr_functor.mutator
class _Annotator(PyExprMutator):
    def __init__(self, mod, replacements: dict, act_bits: dict):
        super().__init__(mod)
        self.replacements = replacements
        self.act_bits = act_bits  # original conv/matmul call -> activation bits

    def visit_generic_const_(self, const):
        new = self.replacements.get(const)
        return new if new is not None else const

    def visit_call_(self, call):
        bits = self.act_bits.get(call)
        new = super().visit_call_(call)
        if bits is None:
            return new
        x = dequantize(quantize(new.args[0], 1.0, 0, bits), 1.0, 0)
        return relax.Call(new.op, [x, *new.args[1:]], new.attrs)


def _refinable(cb) -> bool:
    return cb.scheme in ("kmeans", "quantile") and cb.group_size is None


def _refine(cb, w: np.ndarray, site, axis: int, rows: np.ndarray, ridge: float):
    """``(codebook with refined levels, codes in w's layout)`` (:mod:`tvmq.ptq`); ``axis``
    is the output-channel axis of ``w`` as stored."""
    import dataclasses

    from tvmq.ptq import refine_levels
    from tvmq.ptq.inputs import supported, weight_to_2d

    how = supported(site)
    if how["kind"] == "dense":
        how = {**how, "axis": axis}
    w2d, back = weight_to_2d(w, how)
    codes2d, _ = weight_to_2d(cb.encode(w), how)
    groups = np.zeros(w2d.shape[0], np.int64) if cb.axis is None else np.arange(w2d.shape[0])
    levels, codes2d = refine_levels(w2d, codes2d, cb.levels, groups, rows, ridge)
    refined = dataclasses.replace(cb, levels=levels, thresholds=None)
    return refined, back(codes2d)


def annotate_quant(
    mod: tvm.IRModule,
    config: QuantConfig | str | dict = "w4-kmeans",
    layer_inputs: dict[int, np.ndarray] | None = None,
) -> tuple[tvm.IRModule, list[LayerReport]]:
    """Annotate weights (and activations) as the module doc says; the work of
    :class:`AnnotateQuant`. Returns the module and the per-layer report.

    ``layer_inputs`` (``{site index: calibration rows}``, :func:`tvmq.ptq.inputs.collect`)
    turns on the layer-wise refinement of free-form codebooks
    (:func:`tvmq.ptq.refine_levels`, ``config.ptq``)."""
    config = get_config(config)
    report: list[LayerReport] = []
    out = mod
    for gv, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        replacements, act_bits = {}, {}
        act = config.activation
        sites = find_weight_sites(func)
        for i, site in enumerate(sites):
            entry = dict(name=site.name, kind=site.kind, shape=site.shape)
            if site.const is None:
                report.append(
                    LayerReport(
                        **entry, scheme=None, bits=None, sqnr_db=None, float_bytes=0,
                        quant_bytes=0, note="weight is not a constant: left in float",
                    )
                )  # fmt: skip
                continue
            w = site.const.value.numpy()
            # dense weights are stored output-channel-major (N, K): each channel's codes
            # are contiguous, so a kernel decodes a channel from consecutive bytes
            transpose = site.kind == "dense" and site.axis == 1 and w.ndim == 2
            w_store = np.ascontiguousarray(w.T) if transpose else w
            axis_store = 0 if transpose else site.axis
            scheme = config.for_layer(site.name, i, len(sites), axis_store)
            if scheme is None or w.dtype != np.float32:
                note = "skipped by config" if scheme is None else f"{w.dtype} weight"
                report.append(
                    LayerReport(
                        **entry, scheme=None, bits=None, sqnr_db=None,
                        float_bytes=w.nbytes, quant_bytes=w.nbytes, note=note,
                    )
                )  # fmt: skip
                continue
            cb = scheme.fit(w_store)
            codes, note = None, ""
            if layer_inputs and i in layer_inputs and _refinable(cb):
                rows = layer_inputs[i]
                cb, codes = _refine(cb, w_store, site, axis_store, rows, config.ptq.ridge)
                note = "levels refined on calibration data"
            packed, levels, spec = lut_decode_constants(cb, w_store, codes)
            if act is not None:
                reads_input = any(a.same_as(site.call.args[0]) for a in func.params)
                bits = act.input_bits if reads_input and act.input_bits else act.bits
                act_bits[site.call] = bits
                if spec.group_size is None:
                    levels = relax.const(snap_levels(levels.value.numpy()), "float32")
            decoded = lut_decode(packed, levels, spec)
            replacements[site.const] = relax.op.permute_dims(decoded) if transpose else decoded
            w_hat = lut_decode_reference(packed.value.numpy(), levels.value.numpy(), spec)
            report.append(
                LayerReport(
                    **entry,
                    scheme=scheme.name,
                    bits=scheme.bits,
                    sqnr_db=sqnr_db(w_store, w_hat),
                    float_bytes=w.nbytes,
                    quant_bytes=int(packed.value.numpy().nbytes + levels.value.numpy().nbytes),
                    note=note,
                )
            )
        if replacements:
            annotator = _Annotator(out, replacements, act_bits)
            new_func = annotator.visit_expr(func)
            annotator.builder_.update_func(gv, new_func)
            out = annotator.builder_.get()
    return out, report


@tvm.transform.module_pass(opt_level=0, name="AnnotateQuant")
class AnnotateQuant:
    """The pass form of :func:`annotate_quant`; the per-layer report ends up in ``.report``.

    Parameters
    ----------
    config : QuantConfig, str or dict
        A config or preset name (``"w4-kmeans"``...).
    """

    def __init__(self, config: QuantConfig | str | dict = "w4-kmeans"):
        self.config = get_config(config)
        self.report: list[LayerReport] = []

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        out, self.report = annotate_quant(mod, self.config)
        return out
