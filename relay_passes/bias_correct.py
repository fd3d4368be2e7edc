"""CorrectBias: empirical bias correction of a calibrated module (after Calibrate).

:func:`tvmq.ptq.bias.bias_shift` corrects the mean shift that *weight* quantization causes,
from the float inputs of each layer. What the quantized network really sees is worse: its
layers read quantized activations (clipped, rounded) computed by quantized layers before
them. Here both the float module and the annotated, calibrated one (fake-quant
simulation, what the integer kernels compute) run on the calibration data; for every
layer the per-channel mean of its output (before bias) is compared, and the difference is
added to the bias constant that follows the layer (``R.add(layer, constant)``, one value
per channel), layer after layer, so each sees the corrected layers before it.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .annotate_quant import _bias_adds, _corrected_bias, find_weight_sites
from .calibrate import run_samples, with_extra_outputs
from .equalize import _graph, _Replace


def _channel_axis(site) -> int:
    if site.kind == "dense":
        return -1
    return str(site.call.attrs.out_layout).index("C")


def _layer_means(mod: tvm.IRModule, calib) -> list[np.ndarray | None]:
    """Per-channel mean of every weight site's output over ``calib``, site order."""
    mod = relax.transform.ToNonDataflow()(mod)
    func = mod["main"]
    sites = find_weight_sites(func)
    bound, _ = _graph(func)
    var_of = {value: var for var, value in bound.items()}
    taps = [(i, var_of[s.call]) for i, s in enumerate(sites) if s.call in var_of]
    tap_mod = with_extra_outputs(mod, func, [v for _, v in taps])
    sums: dict[int, np.ndarray] = {}
    count = 0
    for outs in run_samples(tap_mod, calib, func.params):
        count += 1
        for k, (i, _) in enumerate(taps):
            y = outs[k + 1].numpy()
            axis = _channel_axis(sites[i]) % y.ndim
            m = y.mean(axis=tuple(a for a in range(y.ndim) if a != axis), dtype=np.float64)
            sums[i] = sums.get(i, 0.0) + m
    return [sums[i] / count if i in sums else None for i in range(len(sites))]


def correct_bias(
    float_mod: tvm.IRModule, annotated: tvm.IRModule, calib
) -> tuple[tvm.IRModule, list[str]]:
    """The annotated module with corrected biases, and a note per weight site.

    Layers are corrected in graph order, each from a run of the module with the layers
    before it already corrected (a layer's pre-bias output depends only on them), so the
    module is rebuilt once per corrected layer."""
    calib = list(calib)
    target = _layer_means(float_mod, calib)
    sites = find_weight_sites(annotated["main"])
    if len(sites) != len(target):
        raise tvm.TVMError("float and annotated modules have different layers")
    notes: list[str] = []
    for i in range(len(sites)):
        func = annotated["main"]
        site = find_weight_sites(func)[i]
        bias = _bias_adds(func).get(site.call)
        if bias is None or target[i] is None:
            notes.append("no bias constant to correct")
            continue
        have = _layer_means(annotated, calib)[i]
        fixed = _corrected_bias(bias, (target[i] - have).astype(np.float32))
        if fixed is None:
            notes.append("bias is not one value per channel: not corrected")
            continue
        notes.append("bias corrected on quantized outputs")
        gv = annotated.get_global_var("main")
        mutator = _Replace(annotated, {bias: fixed})
        mutator.builder_.update_func(gv, mutator.visit_expr(func))
        annotated = mutator.builder_.get()
    return annotated, notes
