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

import dataclasses
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax import PyExprMutator, PyExprVisitor, expr_functor

from tvmq.config import QuantConfig, get_config
from tvmq.errors import ConfigError
from tvmq.kernels import lut_decode_reference, snap_levels
from tvmq.metrics import sqnr_db
from tvmq.ops import dequantize, lut_decode, lut_decode_constants, quantize

from ._graph import bindings_and_uses, op_name, replace_constants
from .residual import residual_operands

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
    def __init__(self, mod, replacements: dict, act_bits: dict, residuals: dict, bits: int):
        super().__init__(mod)
        self.replacements = replacements
        self.act_bits = act_bits  # original conv/matmul call -> activation bits
        self.residuals = residuals  # residual add -> operand indices to quantize
        self.residual_bits = bits
        self.shared: dict = {}  # input var -> its dequantize(quantize(var)) var

    def visit_generic_const_(self, const):
        new = self.replacements.get(const)
        return new if new is not None else const

    def _codes_of(self, x, bits: int):
        """``dequantize(quantize(x))`` bound once per input: layers reading one tensor
        share one quantizer (one int8 tensor, one calibrated range)."""
        if not isinstance(x, relax.Var):
            return dequantize(quantize(x, 1.0, 0, bits), 1.0, 0)
        hit = self.shared.get(x)
        if hit is None or hit[1] != bits:
            q = self.builder_.emit(quantize(x, 1.0, 0, bits))
            hit = self.shared[x] = (self.builder_.emit(dequantize(q, 1.0, 0)), bits)
        return hit[0]

    def visit_call_(self, call):
        bits = self.act_bits.get(call)
        quantized = self.residuals.get(call)
        new = super().visit_call_(call)
        if quantized is not None:
            args = list(new.args)
            for i in quantized:
                known = self.shared.get(args[i])
                args[i] = known[0] if known else self._codes_of(args[i], self.residual_bits)
            return relax.Call(new.op, args, new.attrs)
        if bits is None:
            return new
        x = self._codes_of(new.args[0], bits)
        return relax.Call(new.op, [x, *new.args[1:]], new.attrs)


def _refinable(scheme: str, group_size: int | None, how) -> bool:
    """Whether layer-wise fitting applies: a free-form codebook (not per group) on a layer
    whose inputs :mod:`tvmq.ptq.inputs` can read as rows."""
    return scheme in ("kmeans", "quantile") and group_size is None and how is not None


def _site_how(site, axis: int):
    """:func:`tvmq.ptq.inputs.supported` for the weight as stored (dense weights are
    stored output-channel-major)."""
    from tvmq.ptq.inputs import supported

    how = supported(site)
    if how is not None and how["kind"] == "dense":
        how = {**how, "axis": axis}
    return how


@dataclass
class _Weight:
    """A constant weight as it will be stored: ``scheme`` None when it stays in float
    (``note`` says why); dense weights are stored transposed, output-channel-major."""

    scheme: object
    w: np.ndarray
    how: dict | None
    transpose: bool
    note: str = ""


@dataclass
class _Encoded:
    """One layer's weight as it will be stored (and what it decodes to)."""

    cb: object
    packed: relax.Constant
    levels: relax.Constant
    spec: object
    w_hat: np.ndarray
    nbytes: int
    note: str = ""


def _weights(sites, config) -> dict[int, _Weight]:
    """The constant weights of ``sites`` as they will be stored, with their schemes."""
    stores: dict[int, _Weight] = {}
    for i, site in enumerate(sites):
        if site.const is None:
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
            stores[i] = _Weight(None, w, None, False, note)
        else:
            stores[i] = _Weight(scheme, w_store, _site_how(site, axis_store), transpose)
    return stores


def _encode(scheme, w_store, how, data, config, snap: bool, refine: bool) -> _Encoded:
    """Fit ``scheme`` to ``w_store``, optionally refine the levels on ``data``
    (:func:`tvmq.ptq.refine_levels`) and snap them to the int8 grid (quantized
    activations); the decoded weight is what the kernels will compute with."""
    from tvmq.ptq import gptq_codes, quantized_input_target, refine_levels
    from tvmq.ptq.inputs import weight_to_2d

    cb = scheme.fit(w_store)
    codes, note = None, ""
    if refine and data is not None and _refinable(cb.scheme, cb.group_size, how):
        w2d, back = weight_to_2d(w_store, how)
        conv_groups = how["groups"]
        if data.float_rows is not None:  # rows read in the quantized network
            w2d = quantized_input_target(w2d, data.float_rows, data.rows, conv_groups)
            cb = scheme.fit(back(w2d).astype(np.float32))  # the codebook of the target
        codes2d, _ = weight_to_2d(cb.encode(back(w2d).astype(np.float32)), how)
        groups = np.zeros(w2d.shape[0], np.int64) if cb.axis is None else np.arange(len(w2d))
        levels = cb.levels
        shared = None
        if cb.meta.get("shared"):  # refit the one shape, keep the per-channel scales
            shared = np.array([m["scale"] for m in cb.meta["groups"]], np.float64)
        for _ in range(config.ptq.iterations):
            if config.ptq.gptq:
                codes2d = gptq_codes(
                    w2d, levels[groups], data.rows, config.ptq.damp, groups=conv_groups
                )
            levels, codes2d = refine_levels(
                w2d, codes2d, levels, groups, data.rows, config.ptq.ridge, shared, conv_groups
            )
            if shared is not None:
                shared = np.abs(levels.astype(np.float64)).max(axis=1)
        cb = dataclasses.replace(cb, levels=levels, thresholds=None)
        what = "codes (error feedback) and levels" if config.ptq.gptq else "levels"
        where = "quantized inputs" if data.float_rows is not None else "calibration data"
        codes, note = back(codes2d), f"{what} fitted on {where}"
    packed, levels, spec = lut_decode_constants(cb, w_store, codes)
    if snap and spec.group_size is None:
        levels = relax.const(snap_levels(levels.value.numpy()), "float32")
    w_hat = lut_decode_reference(packed.value.numpy(), levels.value.numpy(), spec)
    nbytes = int(packed.value.numpy().nbytes + levels.value.numpy().nbytes)
    return _Encoded(cb, packed, levels, spec, w_hat, nbytes, note)


def _layer_error(w_store, w_hat, how, data) -> float:
    """Relative output error on the calibration rows (relative weight error without)."""
    from tvmq.ptq import output_error
    from tvmq.ptq.inputs import weight_to_2d

    if data is None or how is None:
        return float(((w_store - w_hat) ** 2).sum() / max((w_store**2).sum(), 1e-30))
    w2d, _ = weight_to_2d(w_store, how)
    what2d, _ = weight_to_2d(w_hat, how)
    return output_error(w2d, what2d, data.rows, data.groups)


def _bias_adds(func: relax.Function) -> dict:
    """``{conv/matmul call: bias constant}`` for calls whose result is only consumed by
    ``R.add(result, constant)``."""
    bound, uses = bindings_and_uses(func)
    out = {}
    for value in bound.values():
        if op_name(value) != "relax.add" or not _is_const(value.args[1]):
            continue
        src = value.args[0]
        call = bound.get(src) if isinstance(src, relax.Var) else None
        if isinstance(call, relax.Call) and uses.get(src, 0) == 1:
            out[call] = value.args[1]
    return out


def _corrected_bias(bias: relax.Expr, shift: np.ndarray) -> relax.Expr | None:
    """``bias + shift`` along its channel axis, or None when the constant is not one
    value per output channel."""
    b = bias.value.numpy()
    if b.dtype != np.float32 or b.size != shift.size or max(b.shape, default=1) != b.size:
        return None
    return relax.const((b + shift.reshape(b.shape)).astype(np.float32), "float32")


def _mixed_bits(stores, config, layer_inputs, snap) -> tuple[dict[int, int], dict]:
    """``({site index: bits}, {(index, bits): _Encoded})`` under ``config.ptq``'s
    weight budget (:func:`tvmq.ptq.mixed.choose_bits`). Every layer is fitted at its
    fewest bits first, so an impossible budget fails before the other widths are fitted."""
    from tvmq.ptq.mixed import Option, choose_bits

    budget = config.ptq.weight_budget
    fixed = sum(st.w.nbytes for st in stores.values() if st.scheme is None)
    if budget < fixed:
        raise ConfigError(
            f"weight budget {budget} bytes is below the {fixed} bytes of the layers kept in float"
        )
    widths: dict[int, list] = {}
    for i, st in stores.items():
        if st.scheme is None:  # kept in float (or not a float32 constant)
            continue
        widths[i] = []
        for bits in config.ptq.bit_choices:
            try:
                widths[i].append(dataclasses.replace(st.scheme, bits=bits))
            except ConfigError:  # a width this scheme does not have
                continue
        if not widths[i]:
            raise ConfigError(
                f"scheme {st.scheme.name!r} offers none of bit_choices {config.ptq.bit_choices}"
            )
    options: dict[int, list] = {i: [] for i in widths}
    cache = {}

    def add(i, candidate):
        st, data = stores[i], (layer_inputs or {}).get(i)
        enc = _encode(candidate, st.w, st.how, data, config, snap, refine=False)
        cache[i, candidate.bits] = enc
        error = _layer_error(st.w, enc.w_hat, st.how, data)
        options[i].append(Option(candidate.bits, enc.nbytes, error))

    for i, cands in widths.items():
        add(i, cands[0])
    smallest = fixed + sum(o[0].nbytes for o in options.values())
    if smallest > budget:
        raise ConfigError(
            f"weight budget {budget} bytes is below the smallest possible size, {smallest} "
            "bytes (every layer at its fewest bits)"
        )
    for i, cands in widths.items():
        for candidate in cands[1:]:
            add(i, candidate)
    order = list(options)
    chosen = choose_bits([options[i] for i in order], budget - fixed)
    return {i: o.bits for i, o in zip(order, chosen, strict=True)}, cache


def annotate_quant(
    mod: tvm.IRModule,
    config: QuantConfig | str | dict = "w4-kmeans",
    layer_inputs: dict | None = None,
) -> tuple[tvm.IRModule, list[LayerReport]]:
    """Annotate weights (and activations) as the module doc says; the work of
    :class:`AnnotateQuant`. Returns the module and the per-layer report.

    ``layer_inputs`` (``{site index: LayerData}``, :func:`tvmq.ptq.inputs.collect`) feeds
    the calibration-data steps of ``config.ptq``: layer-wise refinement of free-form
    codebooks (:func:`tvmq.ptq.refine_levels`), bias correction
    (:func:`tvmq.ptq.bias.bias_shift`, written into the constant added after the layer)
    and the per-layer bit widths under a weight budget (:mod:`tvmq.ptq.mixed`)."""
    config = get_config(config)
    ptq = config.ptq
    report: list[LayerReport] = []
    out = mod
    for gv, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        replacements, act_bits = {}, {}
        act = config.activation
        sites = find_weight_sites(func)
        biases = _bias_adds(func) if ptq.bias_correction == "weights" else {}
        stores = _weights(sites, config)
        snap = act is not None
        bits_of, cache = {}, {}
        if ptq.weight_budget is not None:
            bits_of, cache = _mixed_bits(stores, config, layer_inputs, snap)
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
            st = stores[i]
            scheme, w_store, how = st.scheme, st.w, st.how
            if scheme is None:
                report.append(
                    LayerReport(
                        **entry, scheme=None, bits=None, sqnr_db=None,
                        float_bytes=w_store.nbytes, quant_bytes=w_store.nbytes, note=st.note,
                    )
                )  # fmt: skip
                continue
            if i in bits_of:
                scheme = dataclasses.replace(scheme, bits=bits_of[i])
            data = (layer_inputs or {}).get(i)
            enc = cache.get((i, scheme.bits)) if not ptq.layerwise else None
            if enc is None:
                enc = _encode(scheme, w_store, how, data, config, snap, refine=ptq.layerwise)
            notes = [enc.note] if enc.note else []
            if i in bits_of:
                notes.append(f"{scheme.bits} bits chosen for the weight budget")
            if ptq.bias_correction == "weights":
                notes.append(_bias_correct(site, w_store, enc, how, data, biases, replacements))
            if act is not None:
                reads_input = any(a.same_as(site.call.args[0]) for a in func.params)
                bits = act.input_bits if reads_input and act.input_bits else act.bits
                act_bits[site.call] = bits
            decoded = lut_decode(enc.packed, enc.levels, enc.spec)
            replacements[site.const] = relax.op.permute_dims(decoded) if st.transpose else decoded
            report.append(
                LayerReport(
                    **entry,
                    scheme=scheme.name,
                    bits=scheme.bits,
                    sqnr_db=sqnr_db(w_store, enc.w_hat),
                    float_bytes=w_store.nbytes,
                    quant_bytes=enc.nbytes,
                    note="; ".join(n for n in notes if n),
                )
            )
        if replacements:
            residuals = {}
            if act is not None and act.requantize == "fixed":
                residuals = residual_operands(func)
            bits = act.bits if act is not None else 8
            annotator = _Annotator(out, replacements, act_bits, residuals, bits)
            new_func = annotator.visit_expr(func)
            annotator.builder_.update_func(gv, new_func)
            out = annotator.builder_.get()
    return out, report


MIN_ROWS_PER_INPUT = 4
""":func:`refit_on_quantized_inputs` refits a layer only with at least this many
calibration rows per weight of a channel: a dense layer gets one row per sample, and
with fewer the fitted weight follows the calibration set (the IMU CNN's 3,968-input
dense layer on 256 samples lost 2 points at W2A2 when refitted)."""


def _decode_call(func: relax.Function, site: WeightSite) -> relax.Call:
    """The ``quant.lut_decode`` call that gives ``site`` its weight (through a transpose)."""
    bound, _ = bindings_and_uses(func)
    expr = site.call.args[1]
    while True:
        expr = bound.get(expr, expr)
        if op_name(expr) == "relax.permute_dims":
            expr = expr.args[0]
        elif op_name(expr) == "quant.lut_decode":
            return expr
        else:
            raise ConfigError(f"{site.name}: its weight is not a quant.lut_decode")


def refit_on_quantized_inputs(
    float_mod: tvm.IRModule,
    annotated: tvm.IRModule,
    calib,
    config: QuantConfig | str | dict,
    report: list[LayerReport],
) -> tuple[tvm.IRModule, list[LayerReport]]:
    """Layer-wise fitting again, layer after layer, on the inputs the *quantized* network
    gives each layer (activation ranges calibrated, the layers before it refitted).

    :func:`annotate_quant` fits each layer's codes and levels to the float network's
    inputs ``X``; the quantized network feeds it ``X_hat`` (quantized activations computed
    by quantized layers). Here each refinable layer (the ``layerwise`` ones) is refitted
    to reproduce the float output ``X W^T`` from ``X_hat``
    (:func:`tvmq.ptq.quantized_input_target`), so it compensates the error that reaches
    it; the module is run once per layer to read ``X_hat`` (as bias correction does).
    Float and quantized rows are the same calibration positions (:func:`tvmq.ptq.inputs.
    collect` with ``sites=``); a layer with fewer than :data:`MIN_ROWS_PER_INPUT` rows
    per weight keeps its fit on float inputs. Returns the module with new codes and
    levels constants and the report with their SQNR and notes.
    """
    from tvmq.ptq.inputs import LayerData, collect

    config = get_config(config)
    calib = list(calib)
    sites = find_weight_sites(float_mod["main"])
    stores = _weights(sites, config)
    todo = [
        i
        for i, st in sorted(stores.items())
        if st.scheme is not None
        and report[i].bits is not None
        and _refinable(st.scheme.name, st.scheme.group_size, st.how)
    ]
    if not todo:
        return annotated, report
    float_rows = collect(float_mod, calib, config.ptq.max_rows, sites=todo)
    report = list(report)
    for i in todo:
        if i not in float_rows:
            continue
        n_rows, n_cols = float_rows[i].rows.shape
        if n_rows < MIN_ROWS_PER_INPUT * n_cols / stores[i].how["groups"]:
            continue  # too few rows to fit a new weight: keep the float-input fit
        quant_rows = collect(annotated, calib, config.ptq.max_rows, sites=todo)[i]
        data = LayerData(quant_rows.rows, quant_rows.mean, 1, float_rows[i].rows)
        st = stores[i]
        scheme = dataclasses.replace(st.scheme, bits=report[i].bits)
        enc = _encode(scheme, st.w, st.how, data, config, config.activation is not None, True)
        call = _decode_call(annotated["main"], find_weight_sites(annotated["main"])[i])
        annotated = replace_constants(
            annotated, {call.args[0]: enc.packed, call.args[1]: enc.levels}
        )
        report[i] = dataclasses.replace(
            report[i],
            sqnr_db=sqnr_db(st.w, enc.w_hat),
            note="; ".join(n for n in (report[i].note, enc.note) if n),
        )
    return annotated, report


def _bias_correct(site, w_store, enc, how, data, biases, replacements) -> str:
    """Fold the bias shift of ``enc`` into the bias constant after ``site`` (through
    ``replacements``); returns the report note."""
    from tvmq.ptq.bias import bias_shift
    from tvmq.ptq.inputs import weight_to_2d

    bias = biases.get(site.call)
    if data is None or how is None:
        return "no calibration rows for bias correction"
    if bias is None:
        return "no bias constant to correct"
    w2d, _ = weight_to_2d(w_store, how)
    what2d, _ = weight_to_2d(enc.w_hat, how)
    new = _corrected_bias(bias, bias_shift(w2d, what2d, data.mean, data.groups))
    if new is None:
        return "bias is not one value per channel: not corrected"
    replacements[bias] = new
    return "bias corrected"


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
