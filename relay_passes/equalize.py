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

from tvmq.ptq.equalize import equalization_scales, scale_along

from ._graph import bindings_and_uses, op_name, replace_constants
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
    bound, uses = bindings_and_uses(func)
    sites = [s for s in find_weight_sites(func) if s.const is not None]
    by_call = {s.call: s for s in sites}
    pairs = []
    for b in sites:
        if _in_axis(b) is None:
            continue
        v, bias = b.call.args[0], None
        while isinstance(v, relax.Var) and uses.get(v, 0) == 1 and v in bound:
            value = bound[v]
            if op_name(value) in _HOMOGENEOUS:
                v = value.args[0]
                continue
            if (
                bias is None
                and op_name(value) == "relax.add"
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


def _current(values: dict, const) -> np.ndarray:
    """The array a constant holds now: rescaled in ``values``, or as in the graph."""
    return values[const] if const in values else const.value.numpy()


def _scale_pair(values: dict, a, b, bias, s: np.ndarray) -> None:
    """Record in ``values`` (constant -> current array) the pair scaled by ``s``: ``A``'s
    output channels and bias by ``1 / s``, ``B``'s input channels by ``s``."""
    values[a.const] = scale_along(_current(values, a.const), a.axis, 1.0 / s)
    values[b.const] = scale_along(_current(values, b.const), _in_axis(b), s)
    if bias is not None:
        bv = _current(values, bias)
        values[bias] = (bv.reshape(-1) / s).astype(np.float32).reshape(bv.shape)


def cross_layer_equalize(mod: tvm.IRModule, iterations: int = 4) -> tuple[tvm.IRModule, list[Pair]]:
    """Equalize every pair of ``main`` (see the module doc); returns the module and pairs."""
    func = mod["main"]
    pairs = find_pairs(func)
    if not pairs:
        return mod, []
    values: dict = {}
    for _ in range(iterations):
        for a, b, bias in pairs:
            wa, wb = _current(values, a.const), _current(values, b.const)
            _scale_pair(values, a, b, bias, equalization_scales(wa, a.axis, wb, _in_axis(b)))
    report = [Pair(a.name, b.name, a.axis, _in_axis(b), bias) for a, b, bias in pairs]
    return replace_constants(mod, values), report


ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _channel_cols(k: int, channels: int) -> np.ndarray:
    """Channel of each of the ``k`` columns of a layer's input rows (``(C, kh, kw)``)."""
    return np.repeat(np.arange(channels), k // channels)


def _local_error(x, w2d, groups, s_cols, s_rows, weight_cfg, act_bits) -> float:
    """Relative output error of layer ``B`` with its input scaled by ``1 / s_cols`` and
    its weight by ``s_rows`` (per column, or per row for a depthwise layer), both
    quantized: the input per tensor (uniform, MSE range), the weight per row."""
    from tvmq.ptq.layerwise import layer_output
    from tvmq.schemes import UniformConfig, make_config

    xs = x / s_cols
    ws = w2d * (s_rows[:, None] if s_rows is not None else s_cols[None, : w2d.shape[1]])
    fit = UniformConfig(bits=act_bits, symmetric=False, init="mse").fit_group(
        xs.reshape(-1)[:: max(1, xs.size // 50_000)].astype(np.float64), None
    )
    scale, zero = fit.meta["scale"], fit.meta["zero_point"]
    if scale > 0:
        xq = (np.clip(np.round(xs / scale) + zero, 0, (1 << act_bits) - 1) - zero) * scale
    else:
        xq = xs
    cb = make_config({**weight_cfg, "axis": 0}).fit(ws)
    wq = cb.decode(cb.encode(ws))
    ref = layer_output(x, w2d, groups)
    err = ref - layer_output(xq, wq, groups)
    return float((err**2).sum() / max((ref**2).sum(), 1e-30))


def channel_ranges(x: np.ndarray, cols: np.ndarray, channels: int, bits: int) -> list:
    """The ranges per channel of the rows ``x`` that :func:`equalize_activations` evens:
    ``max |x|``, and below 8 bits also the clipped range a ``bits`` uniform quantizer of
    that channel alone would choose by MSE (robust to a channel's rare outliers). At 8
    bits the peak alone: the grid is fine enough, and the clipped candidate there cost the
    ConvNet at W2A8 0.23 points (0.28 -> 0.51 lost, full test set)."""
    from tvmq.schemes import UniformConfig

    peak = np.zeros(channels)
    np.maximum.at(peak, cols, np.abs(x).max(axis=0))
    ranges = [peak]
    if bits < 8:
        fit = UniformConfig(bits=bits, symmetric=False, init="mse")
        clipped = peak.copy()
        for c in np.flatnonzero(peak > 0):
            v = x[:, cols == c].reshape(-1)
            clipped[c] *= fit.fit_group(v[:: max(1, v.size // 20_000)], None).meta["clip"]
        ranges.append(clipped)
    return [np.maximum(r, 1e-3 * max(r.max(), 1e-30)) for r in ranges]


def equalize_activations(
    mod: tvm.IRModule, layer_inputs: dict, weight_cfg: dict, act_bits: int, alphas=ALPHAS
) -> tuple[tvm.IRModule, dict[str, float]]:
    """Activation-aware equalization, after :func:`cross_layer_equalize`.

    Weight equalization evens the *weights'* channel ranges; a per-tensor activation
    quantizer between two layers suffers from uneven *activation* channel ranges ``r``.
    For each pair the scale ``s = (r / geomean(r)) ** a`` is tried for each ``a`` of
    ``alphas`` (0: keep the weight equalization, 1: equal activation ranges, at the cost
    of uneven columns in the second layer's weight) and each range ``r`` of
    :func:`channel_ranges` (the peak, and below 8 bits each channel's own MSE-clipped
    range: with ``a = 1`` the per-tensor quantizer then acts as a per-channel one, which a
    depthwise second layer, per-channel weights, gets for free), and the ``s`` whose second
    layer has the least output error with both its input and its weight quantized (``act_bits``,
    ``weight_cfg``; measured on its calibration rows ``layer_inputs``,
    :func:`tvmq.ptq.inputs.collect` of ``mod``) is applied. Returns the module and
    ``{second layer: chosen a}``.
    """
    from tvmq.ptq.inputs import supported, weight_to_2d

    func = mod["main"]
    sites = find_weight_sites(func)
    index = {s.call: i for i, s in enumerate(sites)}
    values: dict = {}
    chosen = {}
    for a, b, bias in find_pairs(func):
        data, how = layer_inputs.get(index[b.call]), supported(b)
        if data is None or how is None:
            continue
        in_axis = _in_axis(b)
        channels = b.shape[in_axis]
        w2d, _ = weight_to_2d(_current(values, b.const), how)
        x = data.rows.astype(np.float64)
        cols = _channel_cols(x.shape[1], channels)
        best = None
        for r in channel_ranges(x, cols, channels, act_bits):
            geo = np.exp(np.log(r).mean())
            for alpha in alphas:
                s = np.clip((r / geo) ** alpha, 1e-2, 1e2)
                s_rows = s if data.groups > 1 else None
                e = _local_error(x, w2d, data.groups, s[cols], s_rows, weight_cfg, act_bits)
                if best is None or e < best[0] - 1e-12:
                    best = (e, alpha, s)
        _, alpha, s = best
        chosen[b.name] = alpha
        if alpha != 0.0:
            _scale_pair(values, a, b, bias, s)
    return replace_constants(mod, values), chosen
