"""Calibration inputs of each weight layer, as the rows the layer multiplies its weight by.

The float model is rebuilt to also return the data input of every dense / convolution
site (:func:`relay_passes.annotate_quant.find_weight_sites` order) and run on the
calibration samples. A dense layer's rows are its input vectors; a convolution's rows are
im2col patches in ``(C, kh, kw)`` order, matching :func:`weight_to_2d` (a 1-D convolution
is a 2-D one of height 1). A grouped or depthwise convolution's rows hold all ``C``
input channels; output channel ``o`` of group ``g`` multiplies its ``(C/G) kh kw`` weights
by the ``g``-th slice (:func:`tvmq.ptq.layerwise.layer_output`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

_LAYOUTS_2D = {"NCHW", "NHWC"}
_KERNELS_2D = {"OIHW", "OHWI", "HWIO"}
# 1-D layouts and the 2-D ones they are read as (a height-1 image)
_LAYOUTS_1D = {"NCW": "NCHW", "NWC": "NHWC"}
_KERNELS_1D = {"OIW": "OIHW", "OWI": "OHWI", "WIO": "HWIO"}


@dataclass(frozen=True)
class LayerData:
    """What the PTQ steps know about one layer's input on the calibration samples.

    Attributes
    ----------
    rows : (R, C kh kw) float32
        At most ``max_rows`` input rows, sampled evenly from the calibration samples.
    mean : (C kh kw,) float64
        The mean over *all* rows of all samples (what bias correction needs).
    groups : int
        The layer's convolution groups (1 for dense).
    float_rows : (R, C kh kw) float32, optional
        When ``rows`` were read in the quantized network: the same rows in the float one
        (what the layer-wise fit reproduces, :func:`tvmq.ptq.quantized_input_target`).
    """

    rows: np.ndarray
    mean: np.ndarray
    groups: int = 1
    float_rows: np.ndarray | None = None


def _conv_attrs(call, one_d: bool) -> dict | None:
    a = call.attrs
    data, kernel = str(a.data_layout), str(a.kernel_layout)
    if one_d:
        if data not in _LAYOUTS_1D or kernel not in _KERNELS_1D:
            return None
        (s,), (d,), (p0, p1) = a.strides, a.dilation, a.padding
        return {
            "data_layout": _LAYOUTS_1D[data],
            "kernel_layout": _KERNELS_1D[kernel],
            "strides": [1, int(s)],
            "padding": [0, int(p0), 0, int(p1)],
            "dilation": [1, int(d)],
            "groups": int(a.groups),
            "one_d": True,
        }
    if data not in _LAYOUTS_2D or kernel not in _KERNELS_2D:
        return None
    return {
        "data_layout": data,
        "kernel_layout": kernel,
        "strides": [int(v) for v in a.strides],
        "padding": [int(v) for v in a.padding],
        "dilation": [int(v) for v in a.dilation],
        "groups": int(a.groups),
        "one_d": False,
    }


def supported(site) -> dict | None:
    """How to turn ``site``'s input into rows: ``{"kind": "dense"}``, conv attributes, or
    None when the layer is not supported."""
    if site.kind == "dense":
        return {"kind": "dense", "axis": site.axis, "groups": 1}
    if site.call is None:
        return None
    if site.kind in ("conv2d", "depthwise", "conv1d"):
        one_d = str(site.call.op.name) == "relax.nn.conv1d"
        attrs = _conv_attrs(site.call, one_d)
        return None if attrs is None else {"kind": "conv", **attrs}
    return None


def _as_4d(w: np.ndarray, how: dict) -> np.ndarray:
    if how.get("one_d"):  # insert the height-1 axis where the kernel layout has H
        return np.expand_dims(w, how["kernel_layout"].index("H"))
    return w


def weight_to_2d(w: np.ndarray, how: dict) -> tuple[np.ndarray, callable]:
    """``(w2d (O, K), back)``: the weight as rows per output channel in the column order of
    :func:`input_rows` (``K = C/G kh kw``), and the inverse (for codes of the same shape)."""
    if how["kind"] == "dense":
        if how["axis"] == 0:  # (N, K) transposed weight
            return w, lambda a: a
        return w.T, lambda a: a.T
    layout = how["kernel_layout"]
    perm = [layout.index(c) for c in "OIHW"]
    inv = np.argsort(perm)
    w4 = _as_4d(w, how)
    oihw = np.transpose(w4, perm)
    shape = oihw.shape

    def back(a):
        out = np.transpose(a.reshape(shape), inv)
        return out.reshape(w.shape)

    return oihw.reshape(shape[0], -1), back


def input_rows(x: np.ndarray, how: dict, kernel_hw: tuple[int, int]) -> np.ndarray:
    """Rows ``(N, K)`` of one layer input ``x`` (batch included)."""
    if how["kind"] == "dense":
        return x.reshape(-1, x.shape[-1])
    if how.get("one_d"):
        x = x[:, :, None, :] if how["data_layout"] == "NCHW" else x[:, None, :, :]
    if how["data_layout"] == "NHWC":
        x = np.transpose(x, (0, 3, 1, 2))
    n, c, h, w = x.shape
    kh, kw = kernel_hw
    (sh, sw), (dh, dw) = how["strides"], how["dilation"]
    pt, pl, pb, pr = how["padding"]
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[
                :, :, i * dh : i * dh + sh * oh : sh, j * dw : j * dw + sw * ow : sw
            ]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, c * kh * kw)


def collect(
    mod: tvm.IRModule, calib, max_rows: int = 4096, seed: int = 0, sites=None
) -> dict[int, LayerData]:
    """``{site index: LayerData}`` for the supported weight sites of ``mod``: at most
    ``max_rows`` rows per layer (an even share of each sample's rows, drawn at random) and
    the exact mean row over all of them.

    ``sites`` (site indices) taps those layers whether or not their weight is a constant
    (an annotated module's are decoded): two modules with the same layers, tapped at the
    same sites with the same ``seed``, give the same rows (the draws depend on shapes
    only), which is how float and quantized inputs are paired."""
    from relay_passes.annotate_quant import find_weight_sites
    from relay_passes.calibrate import run_samples, with_extra_outputs

    mod = relax.transform.ToNonDataflow()(mod)
    func = mod["main"]
    taps = {}
    wanted = None if sites is None else set(sites)
    sites = find_weight_sites(func)
    for i, site in enumerate(sites):
        tapped = site.const is not None if wanted is None else i in wanted
        how = supported(site) if tapped else None
        if how is not None:
            taps[i] = (site, how)
    if not taps:
        return {}
    calib = list(calib)
    per_sample = max(1, -(-max_rows // max(len(calib), 1)))
    tap_mod = with_extra_outputs(mod, func, [site.call.args[0] for site, _ in taps.values()])
    rng = np.random.default_rng(seed)
    rows: dict[int, list] = {i: [] for i in taps}
    sums: dict[int, np.ndarray] = {}
    counts = dict.fromkeys(taps, 0)
    for outs in run_samples(tap_mod, calib, func.params):
        for k, (i, (site, how)) in enumerate(taps.items()):
            r = input_rows(outs[k + 1].numpy(), how, _kernel_hw(site, how))
            sums[i] = sums.get(i, 0.0) + r.sum(axis=0, dtype=np.float64)
            counts[i] += r.shape[0]
            if r.shape[0] > per_sample:
                r = r[rng.choice(r.shape[0], per_sample, replace=False)]
            rows[i].append(r)
    out = {}
    for i, parts in rows.items():
        r = np.concatenate(parts)
        if r.shape[0] > max_rows:
            r = r[rng.choice(r.shape[0], max_rows, replace=False)]
        out[i] = LayerData(r.astype(np.float32), sums[i] / counts[i], taps[i][1]["groups"])
    return out


def _kernel_hw(site, how) -> tuple[int, int]:
    if how["kind"] != "conv":
        return (1, 1)
    layout = how["kernel_layout"]
    if how.get("one_d"):
        return 1, site.shape[layout.replace("H", "").index("W")]
    return site.shape[layout.index("H")], site.shape[layout.index("W")]
