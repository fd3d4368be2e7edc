"""Calibration inputs of each weight layer, as the rows the layer multiplies its weight by.

The float model is rebuilt to also return the data input of every dense / convolution
site (:func:`relay_passes.annotate_quant.find_weight_sites` order) and run on the
calibration samples. A dense layer's rows are its input vectors; a ``groups=1``
convolution's rows are im2col patches in ``(C, kh, kw)`` order, matching
:func:`weight_to_2d`. Other layers (depthwise, 1-D) are not collected.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax


def _conv_attrs(call) -> dict | None:
    a = call.attrs
    if int(a.groups) != 1 or str(a.data_layout) not in ("NCHW", "NHWC"):
        return None
    if str(a.kernel_layout) not in ("OIHW", "OHWI", "HWIO"):
        return None
    return {
        "data_layout": str(a.data_layout),
        "kernel_layout": str(a.kernel_layout),
        "strides": [int(v) for v in a.strides],
        "padding": [int(v) for v in a.padding],
        "dilation": [int(v) for v in a.dilation],
    }


def supported(site) -> dict | None:
    """How to turn ``site``'s input into rows: ``{"kind": "dense"}``, conv attributes, or
    None when the layer is not supported."""
    if site.kind == "dense":
        return {"kind": "dense", "axis": site.axis}
    if site.kind == "conv2d" and site.call is not None:
        attrs = _conv_attrs(site.call)
        return None if attrs is None else {"kind": "conv2d", **attrs}
    return None


def weight_to_2d(w: np.ndarray, how: dict) -> tuple[np.ndarray, callable]:
    """``(w2d (O, K), back)``: the weight as rows per output channel in the column order of
    :func:`input_rows`, and the inverse (for codes of the same shape)."""
    if how["kind"] == "dense":
        if how["axis"] == 0:  # (N, K) transposed weight
            return w, lambda a: a
        return w.T, lambda a: a.T
    layout = how["kernel_layout"]
    perm = [layout.index(c) for c in "OIHW"]
    inv = np.argsort(perm)
    oihw = np.transpose(w, perm)
    shape = oihw.shape
    return oihw.reshape(shape[0], -1), lambda a: np.transpose(a.reshape(shape), inv)


def input_rows(x: np.ndarray, how: dict, kernel_hw: tuple[int, int]) -> np.ndarray:
    """Rows ``(N, K)`` of one layer input ``x`` (batch included)."""
    if how["kind"] == "dense":
        return x.reshape(-1, x.shape[-1])
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


def collect(mod: tvm.IRModule, calib, max_rows: int = 4096, seed: int = 0) -> dict[int, np.ndarray]:
    """``{site index: rows (<= max_rows, K)}`` for the supported weight sites of ``mod``."""
    from relay_passes.annotate_quant import find_weight_sites
    from relay_passes.calibrate import run_samples, with_extra_outputs

    mod = relax.transform.ToNonDataflow()(mod)
    func = mod["main"]
    sites = find_weight_sites(func)
    taps = {}
    for i, site in enumerate(sites):
        how = supported(site) if site.const is not None else None
        if how is not None:
            taps[i] = (site, how)
    if not taps:
        return {}
    tap_mod = with_extra_outputs(mod, func, [site.call.args[0] for site, _ in taps.values()])
    rows: dict[int, list] = {i: [] for i in taps}
    for outs in run_samples(tap_mod, calib, func.params):
        for k, (i, (site, how)) in enumerate(taps.items()):
            rows[i].append(input_rows(outs[k + 1].numpy(), how, _kernel_hw(site, how)))
    rng = np.random.default_rng(seed)
    out = {}
    for i, parts in rows.items():
        r = np.concatenate(parts)
        if r.shape[0] > max_rows:
            r = r[rng.choice(r.shape[0], max_rows, replace=False)]
        out[i] = r.astype(np.float32)
    return out


def _kernel_hw(site, how) -> tuple[int, int]:
    if how["kind"] != "conv2d":
        return (1, 1)
    layout = how["kernel_layout"]
    return site.shape[layout.index("H")], site.shape[layout.index("W")]
