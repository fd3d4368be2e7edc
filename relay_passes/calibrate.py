"""Calibrate: set the ranges of ``quant.quantize`` / ``quant.dequantize`` from real data.

1. A statistics module is derived from the annotated one: every
   ``quant.dequantize(quant.quantize(x))`` pair becomes ``x`` (activations in float, weights
   already quantized), and ``main`` also returns each ``x``.
2. It is built for the host and run on the calibration batches; per site the min, max and
   a bounded random sample of values are kept.
3. Each site gets a uniform asymmetric range (zero exactly representable, codes in
   ``[-2**(b-1), 2**(b-1) - 1]``): ``minmax`` covers the observed range, ``percentile``
   clips to the ``100 - p`` / ``p`` percentiles, ``mse`` searches the clipping that
   minimizes the squared error on the sample (:class:`tvmq.schemes.UniformConfig`).

Use calibration data, never test data. The chosen ranges are in ``Calibrate(...).ranges``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import tvm
from tvm import relax
from tvm.relax import PyExprMutator, PyExprVisitor, expr_functor

from tvmq.config import ActivationConfig
from tvmq.errors import DataError
from tvmq.kernels import fit_levels, qrange, quantize_reference, snap_table
from tvmq.ops import DEQUANTIZE_OP, QUANTIZE_OP, act_params, dequantize, is_op, quantize
from tvmq.schemes.uniform import UniformConfig, uniform_grid
from tvmq.targets import host_llvm

MAX_SAMPLES = 200_000


def _quantize_sites(func: relax.Function) -> tuple[list[relax.Call], dict]:
    """``quant.quantize`` calls in binding order, and the var -> value map of ``func``."""
    sites, bound = [], {}

    @expr_functor.visitor
    class _Find(PyExprVisitor):
        def visit_var_binding_(self, binding):
            bound[binding.var] = binding.value
            if is_op(binding.value, QUANTIZE_OP):
                sites.append(binding.value)
            super().visit_var_binding_(binding)

    _Find().visit_expr(func)
    return sites, bound


@expr_functor.mutator
class _Unquantize(PyExprMutator):
    """``dequantize(quantize(x))`` -> ``x``; remembers each ``x`` in order."""

    def __init__(self, mod):
        super().__init__(mod)
        self.taps: list[relax.Expr] = []

    def visit_call_(self, call):
        new = super().visit_call_(call)
        if is_op(new, DEQUANTIZE_OP) and isinstance(new.args[0], relax.Var):
            src = self.lookup_binding(new.args[0])
            if is_op(src, QUANTIZE_OP):
                self.taps.append(src.args[0])
                return src.args[0]
        return new


def stats_module(mod: tvm.IRModule) -> tuple[tvm.IRModule, int]:
    """The statistics module of step 1 and the number of tapped sites."""
    mod = relax.transform.ToNonDataflow()(mod)
    m = _Unquantize(mod)
    func = m.visit_expr(mod["main"])
    out = with_extra_outputs(mod, func, m.taps)
    return relax.transform.DeadCodeElimination()(out), len(m.taps)


def with_extra_outputs(mod: tvm.IRModule, func: relax.Function, extra: list) -> tvm.IRModule:
    """``mod`` whose ``main`` is ``func`` (non-dataflow) returning ``(its output, *extra)``;
    ``extra`` are values bound in ``func`` (to read intermediate tensors on real data)."""
    body = func.body
    outputs = [body.body, *extra]
    ret_ty = relax.TupleType([o.ty for o in outputs])
    new_body = relax.SeqExpr(body.blocks, relax.Tuple(outputs))
    out = tvm.IRModule({"main": relax.Function(func.params, new_body, ret_ty, func.is_pure,
                                               func.attrs)})  # fmt: skip
    for gv, f in mod.functions_items():
        if gv.name_hint != "main":
            out[gv] = f
    return relax.transform.Normalize()(out)


def run_samples(mod: tvm.IRModule, data, params) -> Iterable:
    """Build ``mod`` for the host (once, on the first sample) and yield ``main``'s outputs
    for each calibration item of ``data``, checked against ``params`` (the model's inputs:
    count, shape, finite values). An empty ``data`` is an error."""
    vm = None
    count = 0
    for inputs in _batches(data):
        if len(inputs) != len(params):
            raise DataError(f"calibration item has {len(inputs)} arrays, model takes {len(params)}")
        args = []
        for p, x in zip(params, inputs):
            x = np.asarray(x, dtype=str(p.ty.dtype))
            want = tuple(int(s) for s in p.ty.shape)
            if x.shape != want:
                raise DataError(
                    f"calibration input for {p.name!r} has shape {x.shape}, expected {want}"
                )
            if not np.all(np.isfinite(x)):
                raise DataError("calibration data holds NaN/inf")
            args.append(tvm.runtime.tensor(np.ascontiguousarray(x)))
        if vm is None:
            target = host_llvm(1)
            vm = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())
        yield vm["main"](*args)
        count += 1
    if count == 0:
        raise DataError("calibration data is empty")


class _Stats:
    def __init__(self, rng: np.random.Generator):
        self.lo, self.hi, self.samples, self.rng = np.inf, -np.inf, [], rng

    def add(self, x: np.ndarray) -> None:
        x = x.reshape(-1).astype(np.float64)
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        if x.size > 20_000:
            x = self.rng.choice(x, 20_000, replace=False)
        self.samples.append(x)

    def params(self, bits: int, cfg: ActivationConfig) -> tuple[float, int, np.ndarray | None]:
        sample = np.concatenate(self.samples)
        if sample.size > MAX_SAMPLES:
            sample = self.rng.choice(sample, MAX_SAMPLES, replace=False)
        qmin, _ = qrange(bits)
        if cfg.method == "mse":
            meta = UniformConfig(bits=bits, symmetric=False, init="mse").fit_group(sample, None)
            scale, zero = meta.meta["scale"], meta.meta["zero_point"]
        else:
            lo, hi = self.lo, self.hi
            if cfg.method == "percentile":
                lo = float(np.percentile(sample, 100.0 - cfg.percentile))
                hi = float(np.percentile(sample, cfg.percentile))
            _, scale, zero = uniform_grid(min(lo, 0.0), max(hi, 0.0), bits, symmetric=False)
        if scale <= 0:  # an all-zero tensor: any scale represents it exactly
            return 1.0, 0, None
        scale, zero = float(np.float32(scale)), int(zero) + qmin
        if cfg.scheme != "kmeans" or bits >= 8:
            return scale, zero, None
        return self._levels(sample, bits, scale, zero)

    def _levels(self, sample, bits: int, scale: float, zero: int):
        """The 8-bit grid over the min-max range and the snap table of ``2**bits`` Lloyd-Max
        levels on it, started from the uniform ``(scale, zero)`` quantizer's levels."""
        _, s8, z8 = uniform_grid(min(self.lo, 0.0), max(self.hi, 0.0), 8, symmetric=False)
        s8, z8 = float(np.float32(s8)), int(z8) - 128
        qmin, qmax = qrange(bits)
        init = (np.arange(qmin, qmax + 1) - zero) * scale / s8 + z8
        codes = quantize_reference(sample.astype(np.float32), s8, z8, 8)
        return s8, z8, snap_table(fit_levels(codes, z8, 1 << bits, init))


@expr_functor.mutator
class _SetRanges(PyExprMutator):
    def __init__(self, mod, ranges: dict, bound: dict):
        super().__init__(mod)
        self.ranges, self.bound = ranges, bound

    def visit_call_(self, call):
        new = super().visit_call_(call)
        if is_op(call, QUANTIZE_OP) and call in self.ranges:
            scale, zero, snap = self.ranges[call]
            return quantize(new.args[0], scale, zero, act_params(call)[2], snap)
        if is_op(call, DEQUANTIZE_OP):
            src = self.bound.get(call.args[0])
            if src is not None and src in self.ranges:
                scale, zero, _ = self.ranges[src]
                return dequantize(new.args[0], scale, zero)
        return new


def set_ranges(mod: tvm.IRModule, ranges: list) -> tvm.IRModule:
    """``mod`` with activation site ``i`` (``quant.quantize`` in binding order) and its
    ``quant.dequantize`` given ``ranges[i] = (scale, zero_point, snap table or None)``."""
    sites, bound = _quantize_sites(mod["main"])
    rewriter = _SetRanges(mod, dict(zip(sites, ranges, strict=True)), bound)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    return rewriter.builder_.get()


def _batches(data) -> Iterable[tuple[np.ndarray, ...]]:
    for item in data:
        yield tuple(item) if isinstance(item, list | tuple) else (item,)


def calibrate(
    mod: tvm.IRModule, data, config: ActivationConfig | None = None, *, seed: int = 0
) -> tuple[tvm.IRModule, list[tuple[float, int]]]:
    """Set activation ranges from calibration batches (the work of :class:`Calibrate`).

    Parameters
    ----------
    mod : tvm.IRModule
        Annotated by :class:`AnnotateQuant` with activation quantization.
    data : iterable
        Calibration inputs: each item is one input array (single-input models) or a tuple
        of arrays, shaped exactly as ``main``'s parameters.
    config : ActivationConfig, optional
        Method and percentile (``bits`` come from each ``quant.quantize``).
    seed : int
        Seed of the value sampling (results are deterministic for a seed).

    Returns
    -------
    (tvm.IRModule, list of (scale, zero_point))
        The module with ranges set, and the ranges in site order.

    Raises
    ------
    DataError
        Empty data, wrong shapes, NaN/inf.
    """
    config = config or ActivationConfig()
    sites, _ = _quantize_sites(mod["main"])
    if not sites:
        return mod, []
    smod, n_taps = stats_module(mod)
    if n_taps != len(sites):
        raise DataError(
            f"{len(sites) - n_taps} quant.quantize site(s) are not followed by their "
            "quant.dequantize; Calibrate handles the pairs AnnotateQuant writes"
        )
    rng = np.random.default_rng(seed)
    stats = [_Stats(rng) for _ in sites]
    for outs in run_samples(smod, data, mod["main"].params):
        for i, s in enumerate(stats):
            s.add(outs[i + 1].numpy())
    fitted = [s.params(act_params(c)[2], config) for s, c in zip(stats, sites)]
    return set_ranges(mod, fitted), [(scale, zero) for scale, zero, _ in fitted]


@tvm.transform.module_pass(opt_level=0, name="Calibrate")
class Calibrate:
    """The pass form of :func:`calibrate`; the chosen ranges end up in ``.ranges``.

    Errors raised inside a TVM pass reach the caller as ``RuntimeError`` (TVM's FFI does
    not keep Python exception types); call :func:`calibrate` to get :class:`DataError`.
    """

    def __init__(self, data, config: ActivationConfig | None = None, *, seed: int = 0):
        self.data, self.config, self.seed = data, config, seed
        self.ranges: list[tuple[float, int]] = []

    def transform_module(self, mod: tvm.IRModule, ctx) -> tvm.IRModule:
        out, self.ranges = calibrate(mod, self.data, self.config, seed=self.seed)
        return out
